"""`columba inbound` as a process: its SMTP port and its Prometheus metrics port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from tests.fakes.mx import free_port
from tests.test_processes import production_env, running


async def metrics_of(url: str) -> str:
    """The metrics page, once the process serves it."""
    async with asyncio.timeout(30), httpx.AsyncClient() as http:
        while True:
            try:
                return (await http.get(url)).raise_for_status().text
            except httpx.TransportError:
                await asyncio.sleep(0.1)


async def test_inbound_serves_smtp_and_counts_outcomes_on_its_metrics_port(
    tmp_path: Path,
) -> None:
    env = await production_env(tmp_path / "var")
    env["COLUMBA_METRICS_ALLOW_IPS"] = "127.0.0.1"  # scraped without a key
    port, metrics_port = free_port(), free_port()
    args = ("--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port))
    async with running("inbound", *args, env=env, cwd=tmp_path):
        page = await metrics_of(f"http://127.0.0.1:{metrics_port}/metrics")
        for outcome in ("bounce", "delay", "complaint", "auto_reply", "unclassified"):
            series = f'columba_inbound_messages_total{{bounce_type="",outcome="{outcome}"}}'
            assert f"{series} 0.0" in page
        assert "columba_inbound_store_failures_total 0.0" in page
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{metrics_port}/healthz")
            ready = await http.get(f"http://127.0.0.1:{metrics_port}/readyz")
        assert health.json() == {"status": "ok"}
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            assert (await smtp.mail("")).code == 250
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await smtp.rcpt("someone@gmail.test")
    assert refused.value.code == 550
    assert "Relaying denied" in refused.value.message
