"""What synchronous=FULL costs the accept path on SQLite (the embedded default).

In one run, the real API (a `columba api` process, no workers, on SQLite and the embedded
Redis) is driven with `POST /v1/send` (one recipient, 1 KB) by wrk, alternately with
COLUMBA_SQLITE_SYNCHRONOUS=normal (the WAL is synced only at checkpoints: a power failure
may lose the last commits) and =full (the WAL is synced at every commit, the default), and
the sends per second of each are compared.

    python -m bench.durability [--seconds 10] [--rounds 2] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

from bench.send import v1_body
from bench.stack import running_stack
from bench.wrk import Result, constant_script, run_wrk

MODES = ("normal", "full")


async def measure(mode: str, args: argparse.Namespace, scratch: Path) -> Result:
    """Sends per second through a fresh API on a fresh SQLite database in `mode`."""
    extra = {
        "COLUMBA_SQLITE_SYNCHRONOUS": mode,
        "COLUMBA_RATE_LIMIT": "100000000/1m",  # the limiter runs; it never refuses here
        "COLUMBA_DB_POOL_SIZE": str(args.connections),
    }
    async with running_stack(
        postgres_url=None, redis_url=args.redis, workers=0, extra_env=extra
    ) as stack:
        script = constant_script(v1_body(stack.sender), stack.headers(), scratch, f"send-{mode}")
        url = stack.api_url + "/v1/send"
        await asyncio.to_thread(
            run_wrk, "warm-up", url, script, connections=args.connections, seconds=2
        )
        return await asyncio.to_thread(
            run_wrk,
            f"synchronous={mode.upper()}",
            url,
            script,
            connections=args.connections,
            seconds=args.seconds,
        )


async def main() -> None:
    """Alternate NORMAL and FULL for the rounds asked, then print each run and the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--redis", help="Redis URL (default: the embedded one)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="columba-bench-durability-"))
    results: dict[str, list[Result]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            results[mode].append(await measure(mode, args, scratch))
    report(results, args)


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    """Every run, the median of each mode and FULL's share of NORMAL."""
    print(
        f"\nPOST /v1/send on SQLite, 1 API process, wrk {args.seconds}s x {args.rounds} rounds, "
        f"{args.connections} connections, {os.cpu_count()} CPUs"
    )
    print(f"{'mode':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for mode in MODES:
        for result in results[mode]:
            print(
                f"{result.name:<22}{result.requests_per_second:>9.1f}{result.p50_ms:>9.1f}"
                f"{result.p99_ms:>9.1f}{result.errors:>9}"
            )
    normal, full = (
        statistics.median(r.requests_per_second for r in results[mode]) for mode in MODES
    )
    ratio = full / normal
    print(f"\nmedian: NORMAL {normal:.1f} req/s, FULL {full:.1f} req/s, FULL/NORMAL {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
