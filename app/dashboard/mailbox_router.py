"""The capture mailbox of `columba dev`, browsable like Mailpit (dev mode only)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.dashboard import mailbox, mailview
from app.dashboard.messages_router import mail_html
from app.dashboard.web import PageError, SignedDep, render
from app.deps import SettingsDep

router = APIRouter()


def _directory(settings: SettingsDep) -> Path:
    """var/mailbox/ in `columba dev`; anywhere else there is no mailbox (404)."""
    if not settings.dev_mode:
        raise PageError(404, "The mailbox exists in `columba dev` only.")
    return settings.var_dir / "mailbox"


def _read(settings: SettingsDep, name: str) -> bytes:
    """A captured mail's bytes, or a 404 page."""
    try:
        return mailbox.read(_directory(settings), name)
    except PageError:
        raise
    except Exception:
        raise PageError(404, "No such captured mail.") from None


@router.get("/mailbox")
async def mailbox_page(request: Request, signed: SignedDep, settings: SettingsDep) -> Response:
    """Every captured mail, newest first."""
    mails = mailbox.captured(_directory(settings))
    return render(request, "mailbox.html", signed=signed, page="mailbox", mails=mails)


@router.get("/mailbox/{name}")
async def mail_page(
    request: Request, name: str, signed: SignedDep, settings: SettingsDep
) -> Response:
    """One captured mail: rendered HTML (sandboxed), text, headers, raw source, attachments."""
    data = _read(settings, name)
    return render(
        request, "mail.html", signed=signed, page="mailbox", name=name,
        mail=mailview.view(data), raw=data.decode("utf-8", errors="replace"),
    )  # fmt: skip


@router.get("/mailbox/{name}/html")
async def mail_html_part(name: str, signed: SignedDep, settings: SettingsDep) -> Response:
    """The mail's HTML for the sandboxed frame."""
    return mail_html(mailview.view(_read(settings, name)).html)


@router.get("/mailbox/{name}/attachments/{index}")
async def attachment(name: str, index: int, signed: SignedDep, settings: SettingsDep) -> Response:
    """An attachment as a download, never rendered in the dashboard's origin."""
    found = mailview.attachment(_read(settings, name), index)
    if found is None:
        raise PageError(404, "No such attachment.")
    filename, data = found
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_")
    headers = {
        "Content-Disposition": f'attachment; filename="{ascii_name}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "no-store",
    }
    return Response(data, media_type="application/octet-stream", headers=headers)
