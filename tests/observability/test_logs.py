"""Structured logs (COLUMBA_LOG_FORMAT=json) and the request id that follows a send from its
HTTP request into its events and the log lines of its delivery."""

from __future__ import annotations

import importlib
import json
import logging
import re
import ssl
import sys
from typing import Any

import aiosmtplib
import httpx
import pytest
import trustme

from app.core.config import Settings
from app.core.db import Database
from app.observability.logs import JsonFormatter, request_id_from, uvicorn_config
from app.submission.server import SubmissionServer
from tests.fakes.mx import ScriptedMX, make_tls_context
from tests.support import ApiServer, Sender, make_key, run_worker
from tests.test_end_to_end import Deliver, message_view

HEX_ID = re.compile(r"[0-9a-f]{32}")


def json_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The records of `logger`, formatted as COLUMBA_LOG_FORMAT=json writes them, parsed."""
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == logger]
    assert all("\n" not in line for line in lines), "one object per line"
    return [json.loads(line) for line in lines]


async def post_send(client: httpx.AsyncClient, sender: Sender, **headers: str) -> httpx.Response:
    """POST /v1/send to two recipients with extra headers."""
    body = {
        "from": sender.address(),
        "to": ["ann@example.test", "ben@example.test"],
        "subject": "Order 42",
        "text": "Confirmed.",
    }
    return await client.post("/v1/send", json=body, headers={**sender.headers, **headers})


async def test_a_request_id_travels_into_events_and_delivery_logs(
    caplog: pytest.LogCaptureFixture,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    settings: Settings,
    redis_url: str,
) -> None:
    caplog.set_level(logging.INFO)
    response = await post_send(client, sender, **{"X-Request-Id": "order-42.confirm"})
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "order-42.confirm"
    message_id = response.json()["id"]
    await run_worker(settings.model_copy(update={"log_format": "json"}), redis_url)

    view = await message_view(client, sender, message_id)
    for recipient in view["recipients"]:
        assert [e["type"] for e in recipient["events"]] == ["processed", "delivered"]
        assert {e["data"]["request_id"] for e in recipient["events"]} == {"order-42.confirm"}
    attempts = [
        line for line in json_lines(caplog, "columba.delivery") if line["message_id"] == message_id
    ]
    assert len(attempts) == 2
    for line in attempts:
        assert line["event"] == "delivery_attempt"
        assert line["request_id"] == "order-42.confirm"
        assert line["recipient"] in {"ann@example.test", "ben@example.test"}
        assert line["destination"] == "example.test"
        assert line["mx"] == "mx1.example.test"
        assert line["status"] == "delivered"
        assert line["reply_code"] == 250
        assert line["duration_ms"] >= 0
        assert "tls" in line


@pytest.mark.parametrize(
    "given",
    ["has spaces", "x" * 65, "<script>", "id\u00e9".encode()],
    ids=["spaces", "too long", "markup", "non-ascii"],
)
async def test_an_odd_request_id_is_replaced(client: httpx.AsyncClient, given: str | bytes) -> None:
    value = given if isinstance(given, bytes) else given.encode()
    response = await client.get("/healthz", headers=[(b"X-Request-Id", value)])
    assert HEX_ID.fullmatch(response.headers["x-request-id"])


async def test_every_response_has_a_fresh_request_id(client: httpx.AsyncClient) -> None:
    first, second = await client.get("/healthz"), await client.get("/nowhere")
    assert HEX_ID.fullmatch(first.headers["x-request-id"])
    assert HEX_ID.fullmatch(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert request_id_from("abc-123") == "abc-123"


async def test_json_logs_have_a_line_per_request(
    caplog: pytest.LogCaptureFixture, settings: Settings, sender: Sender
) -> None:
    caplog.set_level(logging.INFO)
    json_settings = settings.model_copy(update={"log_format": "json"})
    async with ApiServer.running(json_settings) as api, httpx.AsyncClient(base_url=api.url) as http:
        sent = await post_send(http, sender, **{"X-Request-Id": "req-1"})
        missing = await http.get("/v1/messages/01HXNOSUCHMESSAGE000000000", headers=sender.headers)
    assert sent.status_code == 202
    assert missing.status_code == 404
    lines = json_lines(caplog, "columba.http")
    by_route = {line["route"]: line for line in lines}
    send_line = by_route["/v1/send"]
    assert send_line["event"] == "http_request"
    assert send_line["method"] == "POST"
    assert send_line["status"] == 202
    assert send_line["request_id"] == "req-1"
    assert send_line["account_id"] == sender.account_id
    assert 0 < send_line["duration_ms"] < 10_000
    assert send_line["level"] == "info"
    assert send_line["ts"].endswith("+00:00")
    view_line = by_route["/v1/messages/{message_id}"]
    assert view_line["status"] == 404
    assert HEX_ID.fullmatch(view_line["request_id"])
    assert not any("01HXNOSUCH" in json.dumps(line) for line in lines)  # no raw paths


async def test_text_logs_leave_requests_out(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient
) -> None:
    caplog.set_level(logging.INFO)
    await client.get("/healthz")
    assert json_lines(caplog, "columba.http") == []  # the session's API logs text


def test_json_formatter_carries_fields_and_tracebacks() -> None:
    logger = logging.getLogger("columba.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "columba.test",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            sys.exc_info(),
            extra={"webhook_id": "wh_1"},
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "failed x"
    assert line["level"] == "error"
    assert line["webhook_id"] == "wh_1"
    assert "ValueError: boom" in line["exc"]


def test_uvicorn_workers_get_the_chosen_format() -> None:
    json_config = uvicorn_config(level="INFO", log_format="json")
    module, _, name = json_config["formatters"]["columba"]["()"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is JsonFormatter
    assert json_config["loggers"]["uvicorn.access"]["propagate"] is False
    text_config = uvicorn_config(level="INFO", log_format="text")
    assert "format" in text_config["formatters"]["columba"]


async def test_an_smtp_session_names_its_messages(
    client: httpx.AsyncClient,
    sender: Sender,
    settings: Settings,
    db: Database,
    tls_ca: trustme.CA,
) -> None:
    key = await make_key(db, account=sender.account_name, scopes=None)
    server = SubmissionServer(settings, make_tls_context(tls_ca, "127.0.0.1"))
    await server.start("127.0.0.1", port=0, tls_port=None)
    tls = ssl.create_default_context()
    tls_ca.configure_trust(tls)
    mail = f"From: {sender.address()}\r\nTo: a@example.test\r\nSubject: s\r\n\r\nHi.\r\n"
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.ports["starttls"], tls_context=tls)
        async with smtp:
            await smtp.login("apikey", key)
            first = await smtp.sendmail(sender.address(), ["a@example.test"], mail)
            second = await smtp.sendmail(sender.address(), ["b@example.test"], mail)
    finally:
        await server.close()
    ids = [reply[1].rsplit(" ", 1)[1] for reply in (first, second)]
    found = set()
    for message_id in ids:
        view = await message_view(client, sender, message_id)
        [event] = view["recipients"][0]["events"]
        found.add(event["data"]["request_id"])
    [session_id] = found  # one session, one id for both messages
    assert re.fullmatch(r"smtp-[0-9a-f]{32}", session_id)


async def test_text_logs_keep_delivery_attempts_at_debug(
    caplog: pytest.LogCaptureFixture,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    caplog.set_level(logging.INFO)
    assert (await post_send(client, sender)).status_code == 202
    await deliver()
    assert len(await mx.wait_for(1)) == 1
    assert json_lines(caplog, "columba.delivery") == []  # a line per recipient: DEBUG in text
