"""`columba dev` shows tracking: the captured mail holds List-Unsubscribe and rewritten links
that point at the dev server itself, and a link taken from it redirects to the original."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.mx import free_port
from tests.test_processes import COLUMBA, clean_env, kill_servers_of, read_until
from tests.tracking.support import Html, body

LINK = "https://shop.example/sale?x=1"


def first_captured(mailbox: Path) -> EmailMessage | None:
    """The first message the capture server saved, parsed."""
    saved = sorted(mailbox.glob("*.eml"))
    if not saved:
        return None
    message = email.message_from_bytes(saved[0].read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def captured(mailbox: Path) -> EmailMessage:
    """Wait for the capture server (another process: nothing to await but its files)."""
    async with asyncio.timeout(60):
        while (found := await asyncio.to_thread(first_captured, mailbox)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    return found


async def recorded_clicks(http: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    """The account's click events, once there are any (they are written in batches)."""
    async with asyncio.timeout(30):
        while True:
            response = await http.get(
                "/v1/events", params={"limit": 1000}, headers={"Authorization": f"Bearer {key}"}
            )
            clicks = [e for e in response.json()["events"] if e["type"] == "clicked"]
            if clicks:
                return clicks
            await asyncio.sleep(0.2)


async def test_a_link_of_a_captured_mail_redirects_through_the_dev_server_and_is_recorded(
    tmp_path: Path,
) -> None:
    port, smtp_port, submission_port, tls_port, inbound_port = (free_port() for _ in range(5))
    process = await asyncio.create_subprocess_exec(
        *COLUMBA, "dev", "--port", str(port), "--smtp-port", str(smtp_port),
        "--submission-port", str(submission_port), "--submission-tls-port", str(tls_port),
        "--inbound-port", str(inbound_port),
        cwd=tmp_path, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    public = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        banner = await read_until(process.stdout, "swaks")
        assert f"point at {public}" in banner
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        send = {
            "from": "deals@columba.test",
            "to": ["you@example.test"],
            "subject": "Sale",
            "html": f'<p><a href="{LINK}">Sale</a></p>',
            "tracking_settings": {"click_tracking": {"enable": True}},
            "list_unsubscribe": True,
        }
        async with httpx.AsyncClient(base_url=public, timeout=30) as http:
            response = await http.post(
                "/v1/send", json=send, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 202, response.text
            message = await captured(tmp_path / "var" / "mailbox")
            assert str(message["List-Unsubscribe"]).startswith(f"<{public}/u/")
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            [link] = Html(body(message, "html")).hrefs
            assert link.startswith(f"{public}/t/c/")
            clicked = await http.get(link, follow_redirects=False)
            assert clicked.status_code == 302
            assert clicked.headers["Location"] == LINK
            [click] = await recorded_clicks(http, key)
        assert click["data"]["url"] == LINK
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        kill_servers_of(tmp_path / "var")
