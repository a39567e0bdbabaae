"""`columba addresses erase EMAIL --account NAME`, run as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import select

from app.addresses.models import Erasure
from app.core.config import Settings
from app.core.db import Database
from tests.addresses.test_erase import ERASED, tables_naming
from tests.support import Sender
from tests.test_end_to_end import message_view, send, status_of

ROOT = str(Path(__file__).resolve().parent.parent.parent)


async def columba(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a columba command against the tests' database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLUMBA_")} | {
        "COLUMBA_DATABASE_URL": settings.database_url,
        "COLUMBA_SECRET_KEY": settings.secret_key_bytes().decode(),
        "COLUMBA_HOSTNAME": settings.hostname,
        "PYTHONPATH": ROOT,
    }
    command = [sys.executable, "-m", "app.cli", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )


async def test_the_command_erases_and_the_tombstone_still_drops(
    client: httpx.AsyncClient, db: Database, sender: Sender, settings: Settings
) -> None:
    await send(client, sender, to=[ERASED, "bob@example.test"])
    added = await client.post(
        "/v1/suppressions",
        json={"suppressions": [{"email": ERASED, "type": "complaint", "reason": "spam"}]},
        headers=sender.headers,
    )
    assert added.status_code == 201, added.text

    result = await columba(settings, "addresses", "erase", ERASED, "--account", "acme")

    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["counts"]
    assert counts["recipients_deleted"] == 1
    assert counts["suppressions_tombstoned"] == 1
    assert await tables_naming(db, ERASED) == {}
    async with db.session() as session:
        erasure = (await session.execute(select(Erasure))).scalar_one()
    assert erasure.actor == "cli"
    # The API hashes with the same key as the command did: she stays suppressed.
    again = await send(client, sender, to=[ERASED])
    assert status_of(await message_view(client, sender, again["id"]), ERASED) == "dropped"


async def test_the_command_refuses_a_bad_address_and_an_unknown_account(
    db: Database, sender: Sender, settings: Settings
) -> None:
    bad = await columba(settings, "addresses", "erase", "not-an-address")
    unknown = await columba(settings, "addresses", "erase", ERASED, "--account", "nobody")
    assert bad.returncode == 2
    assert "invalid email address" in bad.stderr
    assert unknown.returncode == 1
    assert "no account named 'nobody'" in unknown.stderr
