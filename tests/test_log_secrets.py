"""No secret reaches the logs (CHECKLIST 48, issue 10 item 9): a whole flow runs with every
logger at DEBUG, and every captured line is searched for every kind of secret."""

from __future__ import annotations

import base64
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator

import aiosmtplib
import httpx
import pytest
import pytest_asyncio
import trustme

from app.core.config import Settings
from app.core.db import Database
from app.domains import service as domains
from app.observability.logs import JsonFormatter
from app.submission.server import SubmissionServer
from app.webhooks.dispatcher import build_dispatcher
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX, make_tls_context
from tests.fakes.webhooks import running_receiver
from tests.support import ApiServer, Sender, make_key
from tests.test_end_to_end import Deliver, send
from tests.webhooks.conftest import create_webhook, drain_until, quick_settings


def _variants(secret: str) -> Iterator[str]:
    """The secret as it may appear: as is, and base64 (SMTP AUTH LOGIN sends it so)."""
    yield secret
    yield base64.b64encode(secret.encode()).decode()


def _pem_lines(pem: bytes) -> Iterator[str]:
    """The base64 lines of a PEM private key: any one of them in a log is a leak."""
    for line in pem.decode().splitlines():
        if line and not line.startswith("-----"):
            yield line


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every captured record, formatted with its traceback and stack if any: as text, and as
    COLUMBA_LOG_FORMAT=json writes it (with every structured field)."""
    text = logging.Formatter("%(name)s %(levelname)s %(message)s")
    structured = JsonFormatter()
    return [f(record) for record in caplog.records for f in (text.format, structured.format)]


def _client(port: int, tls: ssl.SSLContext) -> aiosmtplib.SMTP:
    """A submission client that starts TLS on connecting."""
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=port, tls_context=tls, start_tls=True)


async def _submit(port: int, ca: trustme.CA, key: str, sender: Sender) -> str:
    """One message over SMTP submission (STARTTLS, AUTH PLAIN), and one AUTH LOGIN that
    fails with a wrong secret for the same key prefix; returns that wrong password."""
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    message = f"From: {sender.address()}\r\nTo: bob@example.test\r\nSubject: s\r\n\r\nHi.\r\n"
    async with _client(port, tls) as smtp:
        await smtp.ehlo()
        await smtp.auth_plain("apikey", key)
        await smtp.sendmail(sender.address(), ["bob@example.test"], message)
    wrong = key.rsplit(".", 1)[0] + "." + secrets.token_urlsafe(32)
    async with _client(port, tls) as smtp:
        await smtp.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await smtp.auth_login("apikey", wrong)
    return wrong


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with COLUMBA_LOG_FORMAT=json (a line per request, with its fields)."""
    json_logs = settings.model_copy(update={"log_format": "json"})
    async with (
        ApiServer.running(json_logs) as api,
        httpx.AsyncClient(base_url=api.url, timeout=30) as http,
    ):
        yield http


async def test_no_secret_appears_in_any_log_line(
    caplog: pytest.LogCaptureFixture,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
    db: Database,
    dns_server: FakeDNS,
    tls_ca: trustme.CA,
) -> None:
    caplog.set_level(logging.DEBUG)
    path_token, query_token = secrets.token_hex(16), secrets.token_hex(16)
    tracking_token = secrets.token_urlsafe(24)
    smtp_key = await make_key(db, account=sender.account_name, scopes=None)
    submission = SubmissionServer(settings, make_tls_context(tls_ca, "127.0.0.1"))
    await submission.start("127.0.0.1", port=0, tls_port=None)
    dns_server.add_a("hooks.test", "127.0.0.7")
    async with running_receiver("127.0.0.7") as receiver:
        url = f"http://hooks.test:{receiver.port}/hooks/{path_token}?token={query_token}"
        hook = await create_webhook(client, sender, url)
        receiver.answer(500)  # one failed delivery too: failures log differently
        unknown = await client.get("/v1/events", headers={"Authorization": "Bearer SG.x.y"})
        assert unknown.status_code == 401
        scraper = await make_key(db, account=sender.account_name, scopes=["metrics.read"])
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert scraped.status_code == 200
        # A tracking link's token is in its path: Columba logs route templates, never paths.
        # (The test's own client logs the URLs it fetches; that is not Columba's log.)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            tracked = await client.get(f"/t/o/{tracking_token}")
        finally:
            logging.getLogger("httpx").setLevel(logging.NOTSET)
        assert tracked.status_code in (200, 404)
        await send(client, sender, to=["alice@example.test"])
        wrong = await _submit(submission.ports["starttls"], tls_ca, smtp_key, sender)
        await deliver()
        assert len(await mx.wait_for(2)) == 2  # one from the API, one over SMTP, DKIM-signed
        dispatcher = build_dispatcher(quick_settings(settings), db)
        await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
        await dispatcher.client.close()
    await submission.close()

    [dkim] = domains.dkim_keys(sender.domain, secret_key=settings.secret_key_bytes())
    found: dict[str, list[str]] = {
        "API key": list(_variants(sender.key)),
        "API key secret part": [sender.key.rsplit(".", 1)[1]],
        "SMTP password": [
            *_variants(smtp_key),
            smtp_key.rsplit(".", 1)[1],
            base64.b64encode(f"\0apikey\0{smtp_key}".encode()).decode(),
            *_variants(wrong),
            wrong.rsplit(".", 1)[1],
        ],
        "webhook secret": [hook["secret"], hook["secret"].removeprefix("whsec_")],
        "webhook URL path": [path_token],
        "webhook URL query": [query_token],
        "DKIM private key": list(_pem_lines(dkim.private_key_pem)),
        "COLUMBA_SECRET_KEY": list(_variants(settings.secret_key_bytes().decode())),
        "metrics key": [*_variants(scraper), scraper.rsplit(".", 1)[1]],
        "tracking token": [tracking_token],
    }
    lines = _logged(caplog)
    assert len(lines) >= 10, "the flow should have logged something to search"
    assert any("hooks.test" in line for line in lines), "our own webhook line is missing"
    assert any('"event": "http_request"' in line for line in lines), "no JSON request line"
    assert any('"event": "delivery_attempt"' in line for line in lines), "no delivery line"
    assert any('"event": "webhook_delivery"' in line for line in lines), "no webhook line"
    leaks = [
        (kind, line)
        for kind, needles in found.items()
        for needle in needles
        for line in lines
        if needle in line
    ]
    assert leaks == [], sorted({(kind, line.split(" ", 1)[0]) for kind, line in leaks})
