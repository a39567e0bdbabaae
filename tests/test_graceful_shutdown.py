"""A worker told to stop (SIGTERM) while an MX is slow: the transaction under way finishes
within COLUMBA_SHUTDOWN_GRACE and is recorded, everything else it held goes back at once
(another worker claims it long before the lease would have run out, and no lease expiry is
counted against it), and it exits 0; a transaction that outlives the grace period is cut
off and its recipient handed back; a second signal ends the process at once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Recipient
from tests.fakes.mx import ScriptedMX, free_port
from tests.support import ApiServer, Sender
from tests.test_crash import Workers, wait_until_delivered
from tests.test_processes import until_healthy

pytestmark = pytest.mark.make_test_only

LEASE = 60.0  # seconds: a hand-back must be claimed again long before this


@pytest_asyncio.fixture
async def workers(settings: Settings, tmp_path: Path) -> AsyncIterator[Workers]:
    """Worker processes with a long lease, a slow idle poll (only a wake-up brings a quick
    claim) and one connection at a time to the destination (the rest wait for its slot)."""
    pool = Workers(settings, tmp_path)
    pool.env |= {
        "COLUMBA_LEASE_DURATION": f"{LEASE:.0f}s",
        "COLUMBA_SWEEP_INTERVAL": "30s",
        "COLUMBA_DESTINATION_MAX_CONNECTIONS": "1",
        "COLUMBA_THROTTLE_WAIT": "30s",
        "COLUMBA_SHUTDOWN_GRACE": "10s",
    }
    yield pool
    await pool.stop_all()


async def send(api: ApiServer, sender: Sender, count: int) -> None:
    """`count` messages of one recipient each."""
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        for index in range(count):
            body = {
                "from": sender.address(),
                "to": [f"r{index}@example.test"],
                "subject": "shutdown",
                "text": "x",
            }
            response = await http.post("/v1/send", json=body, headers=sender.headers)
            assert response.status_code == 202, response.text


async def recipients(db: Database) -> list[Recipient]:
    """Every recipient as stored."""
    async with db.session() as session:
        return list((await session.execute(select(Recipient))).scalars())


async def until_transaction_stalls(mx: ScriptedMX, db: Database, count: int) -> set[str]:
    """Until the worker holds all `count` recipients and one transaction hangs at the MX;
    returns the lease tokens it holds them under."""
    async with asyncio.timeout(60):
        while True:
            rows = await recipients(db)
            if mx.stalled and len(rows) == count and all(r.status == "sending" for r in rows):
                return {r.lease_token for r in rows if r.lease_token}
            await asyncio.sleep(0.05)


async def start_ready(workers: Workers) -> None:
    """Start a worker and wait until it serves its health check (its pump then runs)."""
    port = free_port()
    workers.start(1, "--metrics-port", str(port))
    await until_healthy(f"http://127.0.0.1:{port}")


async def exit_code(process: Workers, index: int, timeout: float = 30) -> int:
    """The worker's exit status (the loop keeps serving the MX and DNS meanwhile)."""
    return await asyncio.wait_for(asyncio.to_thread(process.processes[index].wait), timeout)


async def test_sigterm_finishes_the_transaction_and_hands_back_the_rest(
    api: ApiServer, sender: Sender, mx: ScriptedMX, workers: Workers, db: Database
) -> None:
    mx.stall_at("EOD", 3.0, times=1)
    await start_ready(workers)
    await start_ready(workers)
    # The second is paused while the first takes everything: started, not starting, when
    # the hand-back comes.
    workers.processes[1].send_signal(signal.SIGSTOP)
    await send(api, sender, 6)
    tokens = await until_transaction_stalls(mx, db, 6)
    workers.processes[1].send_signal(signal.SIGCONT)
    began = time.monotonic()
    workers.processes[0].send_signal(signal.SIGTERM)
    reclaimed = await until_reclaimed(db, tokens, 5)
    reclaim_seconds = time.monotonic() - began
    assert await exit_code(workers, 0) == 0
    stop_seconds = time.monotonic() - began
    # Its connection, idle again after the transaction, ended with QUIT (handed to the other
    # worker waiting for the slot, or at close), not dropped.
    assert mx.quits >= 1
    await wait_until_delivered(db, 6, timeout=60)
    copies = Counter(address for message in mx.messages for address in message.rcpt_tos)
    assert copies == {f"r{i}@example.test": 1 for i in range(6)}
    # Handed back, not expired: no lease expiry was counted as the second worker took them.
    assert [r.lease_expiries for r in reclaimed] == [0] * 5
    assert reclaim_seconds < LEASE / 10
    assert stop_seconds < 10  # it waited for the stalled transaction, not the grace period
    print(f"handed-back recipients re-claimed {reclaim_seconds:.2f}s after SIGTERM")
    print(f"the worker exited {stop_seconds:.2f}s after SIGTERM (its MX took 3s)")


async def until_reclaimed(db: Database, tokens: set[str], count: int) -> list[Recipient]:
    """Until `count` recipients are leased under a token other than `tokens` (or final);
    returns them as first seen so."""
    seen: dict[str, Recipient] = {}
    async with asyncio.timeout(LEASE):
        while len(seen) < count:
            for row in await recipients(db):
                moved = row.lease_token is not None and row.lease_token not in tokens
                if moved and row.id not in seen:
                    seen[row.id] = row
            await asyncio.sleep(0.02)
    return list(seen.values())


async def test_a_transaction_past_the_grace_period_is_cut_off_and_handed_back(
    api: ApiServer, sender: Sender, mx: ScriptedMX, workers: Workers, db: Database
) -> None:
    workers.env["COLUMBA_SHUTDOWN_GRACE"] = "1s"
    mx.stall_at("EOD", 60, times=1)
    await send(api, sender, 1)
    await start_ready(workers)
    await until_transaction_stalls(mx, db, 1)
    began = time.monotonic()
    workers.processes[0].send_signal(signal.SIGTERM)
    assert await exit_code(workers, 0) == 0
    assert 1.0 <= time.monotonic() - began < 8
    [handed_back] = await recipients(db)
    assert handed_back.status == "queued"
    assert handed_back.lease_token is None
    assert handed_back.lease_expiries == 0
    assert handed_back.attempt_count == 0
    assert mx.messages == []  # the MX never answered the final dot: nothing arrived
    assert mx.quits == 0  # a cut-off transaction's connection is dropped, not QUIT
    await start_ready(workers)
    await wait_until_delivered(db, 1, timeout=30)
    assert [m.rcpt_tos for m in mx.messages] == [["r0@example.test"]]


async def test_a_second_signal_ends_the_worker_at_once(
    api: ApiServer, sender: Sender, mx: ScriptedMX, workers: Workers, db: Database
) -> None:
    mx.stall_at("EOD", 60, times=1)
    await send(api, sender, 1)
    await start_ready(workers)
    await until_transaction_stalls(mx, db, 1)
    began = time.monotonic()
    workers.processes[0].send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    workers.processes[0].send_signal(signal.SIGTERM)
    assert await exit_code(workers, 0) == 1
    assert time.monotonic() - began < 5  # not the 10 s grace period
