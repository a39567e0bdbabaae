"""`columba dev` runs the inbound listener and prints its port: a developer sends a message,
returns a bounce to its Return-Path and watches it arrive in `GET /v1/inbound`."""

from __future__ import annotations

import asyncio
import email
import re
from pathlib import Path

import aiosmtplib
import httpx

from tests.bounces.test_inbound import render
from tests.fakes.mx import free_port
from tests.test_processes import COLUMBA, clean_env, kill_servers_of, read_until


def first_captured(mailbox: Path) -> tuple[str, str] | None:
    """The Return-Path and Message-ID of the first message the capture server saved."""
    saved = sorted(mailbox.glob("*.eml"))
    if not saved:
        return None
    message = email.message_from_bytes(saved[0].read_bytes())
    return str(message["Return-Path"]).strip("<>"), str(message["Message-ID"])


async def captured_return_path(mailbox: Path) -> tuple[str, str]:
    """Wait for the dev capture server (another process: nothing to await but its files)."""
    async with asyncio.timeout(60):
        while (found := await asyncio.to_thread(first_captured, mailbox)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    return found


async def test_dev_prints_the_inbound_port_and_takes_bounces(tmp_path: Path) -> None:
    port, smtp_port, submission_port, tls_port, inbound_port = (free_port() for _ in range(5))
    process = await asyncio.create_subprocess_exec(
        *COLUMBA, "dev", "--port", str(port), "--smtp-port", str(smtp_port),
        "--submission-port", str(submission_port), "--submission-tls-port", str(tls_port),
        "--inbound-port", str(inbound_port),
        cwd=tmp_path, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = await read_until(process.stdout, "swaks")
        match = re.search(r"columba inbound on 127\.0\.0\.1:(\d+)", banner)
        assert match is not None, banner
        assert int(match.group(1)) == inbound_port
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            body = {"from": "hello@columba.test", "to": ["gone@example.test"], "subject": "Hi",
                    "text": "Hello."}  # fmt: skip
            assert (await http.post("/v1/send", json=body, headers=headers)).status_code == 202
            verp, message_id = await captured_return_path(tmp_path / "var" / "mailbox")
            data = render("gmail_no_such_user.eml", VERP=verp, RCPT="gone@example.test",
                          MESSAGE_ID=message_id)  # fmt: skip
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=inbound_port, start_tls=False
            ) as smtp:
                await smtp.sendmail("", [verp], data)
            listed = (await http.get("/v1/inbound", headers=headers)).json()["messages"]
        assert [(m["outcome"], m["email"]) for m in listed] == [("bounce", "gone@example.test")]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        kill_servers_of(tmp_path / "var")
