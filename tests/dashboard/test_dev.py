"""`columba dev` prints the dashboard URL with a one-time sign-in link that works once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from tests.fakes.mx import free_port
from tests.test_processes import COLUMBA, clean_env, kill_servers_of, read_until

LINK = re.compile(r"one-time sign-in link \(valid \d+ minutes\): (\S+)")


async def test_the_banner_link_opens_the_dashboard_and_its_mailbox(tmp_path: Path) -> None:
    port, smtp, submission, tls, inbound = (free_port() for _ in range(5))
    process = await asyncio.create_subprocess_exec(
        *COLUMBA, "dev", "--port", str(port), "--smtp-port", str(smtp),
        "--submission-port", str(submission), "--submission-tls-port", str(tls),
        "--inbound-port", str(inbound),
        cwd=tmp_path, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = await read_until(process.stdout, "swaks")
        assert f"Dashboard: http://127.0.0.1:{port}/dashboard" in banner
        link = LINK.search(banner)
        assert link, banner
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        assert key not in link.group(1)
        async with httpx.AsyncClient() as http:
            await http.post(
                f"http://127.0.0.1:{port}/v1/send",
                headers={"Authorization": f"Bearer {key}"},
                json={"from": "a@columba.test", "to": ["b@x.test"], "subject": "Hi", "text": "x"},
            )
            signed_in = await http.get(link.group(1), follow_redirects=True)
            assert signed_in.url.path == "/dashboard"
            page = await _mailbox_with(http, f"http://127.0.0.1:{port}", "Hi</a>")
            assert page.status_code == 200
        async with httpx.AsyncClient() as fresh:
            again = await fresh.get(link.group(1))
            assert again.headers["location"] == "/dashboard/signin?failed=true"
    finally:
        process.kill()
        await process.wait()
        kill_servers_of(tmp_path / "var")


async def _mailbox_with(http: httpx.AsyncClient, base: str, text: str) -> httpx.Response:
    """The mailbox page once it shows `text` (the worker relays to the capture server)."""
    async with asyncio.timeout(20):
        while True:
            page = await http.get(f"{base}/dashboard/mailbox")
            if text in page.text:
                return page
            await asyncio.sleep(0.2)
