"""`columba api --workers 2` on SIGTERM: each child stops accepting connections and lets its
requests in flight finish; long polls (`GET /v1/events?wait=`) answer at once instead of
holding the shutdown for as long as they were asked to wait."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest

from app.core.config import Settings
from tests.fakes.mx import free_port
from tests.support import Sender
from tests.test_crash import ROOT, worker_env

pytestmark = pytest.mark.make_test_only

WAIT = 30  # what the long polls ask for (the most the API allows)


async def until_ready(url: str) -> None:
    """Until GET /healthz answers 200 (two children start: it can take a while)."""
    async with asyncio.timeout(90), httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


def start_api(env: dict[str, str], port: int, *, workers: int) -> subprocess.Popen[bytes]:
    """`columba api` on `port`."""
    command = ["api", "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--log-level", "WARNING", *command], env=env, cwd=ROOT
    )


@pytest.mark.timeout(180)
async def test_long_polls_answer_at_once_when_the_api_is_told_to_stop(
    settings: Settings, sender: Sender
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = worker_env(settings) | {"COLUMBA_SHUTDOWN_GRACE": "20s"}
    api = start_api(env, port, workers=2)
    try:
        await until_ready(url)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            polls = [
                asyncio.create_task(
                    http.get("/v1/events", params={"wait": WAIT}, headers=sender.headers)
                )
                for _ in range(4)
            ]
            await asyncio.sleep(2)  # they are waiting now
            assert not any(poll.done() for poll in polls)
            began = time.monotonic()
            api.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*polls)
            answered = time.monotonic() - began
        code = await asyncio.wait_for(asyncio.to_thread(api.wait), 30)
        exited = time.monotonic() - began
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["events"] == [] for a in answers)
    print(f"long polls answered {answered:.2f}s after SIGTERM; the API exited after {exited:.2f}s")
    assert answered < 5  # not WAIT (30 s), nor the grace period (20 s)
    assert exited < 15
    assert code == 0  # uvicorn's supervisor exits 0 once its children have
