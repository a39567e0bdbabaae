"""Delivery benchmark (issue 3), all measured in one run on this machine:

(a) the SMTP ceiling: smtp-source straight into smtp-sink
(b) the peer MTA: smtp-source into a private Postfix relaying to the same smtp-sink
(c) Columba on PostgreSQL and Redis: POST /v1/send → workers → DKIM-signed → smtp-sink,
    status recorded; with one recipient per request and with 1,000 per request
(d) latency from the 202 to the MX's 250 at a fixed offered load (default 200 msg/s)

  python -m bench.delivery [--messages 10000] [--workers 2] [--postgres URL] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select

from app.core.db import Database
from app.messages.models import Recipient
from bench.mta import Sink, postfix, require_postfix_tools, smtp_source
from bench.stack import Stack, running_stack
from tests.fakes.mx import free_port

TEXT = "Hello from the Columba delivery benchmark. " * 22  # ~1 KB
HTML = "<p>" + "Hello from the <b>Columba</b> delivery benchmark. " * 16 + "</p>"  # ~0.8 KB
CONCURRENCY = 20


@dataclass
class Figures:
    """One line of the report."""

    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds


def body(stack: Stack, recipients: list[str], subject: str) -> dict[str, object]:
    """A ~2 KB text+html message, like smtp-source's."""
    return {"from": stack.sender, "to": recipients, "subject": subject, "text": TEXT, "html": HTML}


async def delivered(database: Database) -> int:
    """Recipients whose delivery has been recorded."""
    async with database.session() as session:
        query = select(func.count()).select_from(Recipient).where(Recipient.status == "delivered")
        return int(await session.scalar(query) or 0)


async def post_all(stack: Stack, bodies: list[dict[str, object]]) -> None:
    """POST every body, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers=stack.headers(), limits=limits, timeout=120
    ) as http:

        async def one(payload: dict[str, object]) -> None:
            async with gate:
                response = await http.post("/v1/send", json=payload)
                response.raise_for_status()

        await asyncio.gather(*(one(payload) for payload in bodies))


async def columba_throughput(stack: Stack, messages: int, per_request: int, label: str) -> Figures:
    """Time from the first POST until every recipient's delivery is recorded."""
    database = Database(stack.settings)
    try:
        already = await delivered(database)
        bodies = [
            body(stack, [f"u{i + j}@{stack.recipient_domain}" for j in range(per_request)], label)
            for i in range(0, messages, per_request)
        ]
        started = time.perf_counter()
        poster = asyncio.create_task(post_all(stack, bodies))
        while await delivered(database) < already + messages:
            if poster.done() and poster.exception():
                raise poster.exception()  # type: ignore[misc]
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        await poster
    finally:
        await database.dispose()
    return Figures(label, messages, seconds)


@dataclass(frozen=True)
class Latencies:
    """What (d) measured: per message, 202 → 250 and request sent → 250 (seconds)."""

    after_202: list[float]
    after_request: list[float]
    accepted_per_second: float  # how many of the offered sends per second the API answered


async def latency_at(stack: Stack, rate: float, seconds: float) -> Latencies:
    """Offer `rate` single-recipient messages per second and time each one to the MX's 250.

    The 202 is timestamped when this process reads it: with the API saturated the 250 can
    come first (a negative figure), so the time from sending the request is shown too."""
    sent: dict[str, float] = {}
    accepted: dict[str, float] = {}
    interval = 1 / rate
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers=stack.headers(), timeout=60
    ) as http:

        async def one(index: int) -> None:
            payload = body(stack, [f"lat{index}@{stack.recipient_domain}"], f"latency {index}")
            started = time.perf_counter()
            response = await http.post("/v1/send", json=payload)
            response.raise_for_status()
            message_id = response.json()["id"].lower()
            accepted[message_id], sent[message_id] = time.perf_counter(), started

        tasks = []
        start = time.perf_counter()
        for index in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + index * interval - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        answered_in = time.perf_counter() - start
    await stack.sink.wait_for_recipients(len(accepted), timeout=120)
    arrivals = {key.split("@")[0]: at for key, at in stack.sink.arrivals.items()}
    return Latencies(
        after_202=[arrivals[message_id] - at for message_id, at in accepted.items()],
        after_request=[arrivals[message_id] - at for message_id, at in sent.items()],
        accepted_per_second=len(accepted) / answered_in,
    )


def baselines(messages: int) -> tuple[Figures, Figures]:
    """(a) smtp-source → smtp-sink and (b) smtp-source → Postfix → smtp-sink."""
    port = free_port()
    with Sink("127.0.0.1", port) as sink:
        started = time.perf_counter()
        smtp_source(port, messages)
        ceiling = Figures(
            "(a) smtp-source → smtp-sink", messages, sink.wait_for(messages) - started
        )
    sink_port, smtpd_port = free_port(), free_port()
    with Sink("127.0.0.1", sink_port) as sink, postfix(smtpd_port, sink_port):
        started = time.perf_counter()
        smtp_source(smtpd_port, messages)
        relayed = Figures("(b) Postfix relaying", messages, sink.wait_for(messages) - started)
    return ceiling, relayed


def percentile(values: list[float], fraction: float) -> float:
    """The value under which `fraction` of the values fall."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    """Measure everything and print the report."""
    require_postfix_tools()
    ceiling, peer = await asyncio.to_thread(baselines, args.messages)
    results = [ceiling, peer]
    sink_port = free_port()
    with Sink("127.0.0.1", sink_port):
        async with running_stack(
            postgres_url=args.postgres,
            redis_url=args.redis,
            workers=args.workers,
            api_workers=args.api_workers,
            external_sink_port=sink_port,
        ) as stack:
            await columba_throughput(stack, 200, 1, "warm-up")
            results.append(
                await columba_throughput(
                    stack, args.messages, 1, "(c) Columba, 1 recipient/request"
                )
            )
            results.append(
                await columba_throughput(
                    stack, args.messages, 1000, "(c) Columba, 1,000 recipients/request"
                )
            )
    async with running_stack(
        postgres_url=args.postgres,
        redis_url=args.redis,
        workers=args.workers,
        api_workers=args.api_workers,
    ) as stack:
        latencies = await latency_at(stack, args.latency_rate, args.latency_seconds)
    report(args, results, latencies)


def report(args: argparse.Namespace, results: list[Figures], latencies: Latencies) -> None:
    """Print the figures, with Columba's as ratios against the baselines of the same run."""
    ceiling, peer = results[0], results[1]
    print(
        f"\n{args.messages} messages of ~2 KB, {args.workers} worker(s), "
        f"{args.api_workers} API process(es), PostgreSQL + Redis\n"
    )
    for figures in results:
        line = f"{figures.name:42s} {figures.rate:8.0f} msg/s"
        if figures not in (ceiling, peer):
            line += f"   ×{figures.rate / peer.rate:.2f} of (b)"
            line += f"   ×{figures.rate / ceiling.rate:.3f} of (a)"
        print(line)
    print(
        f"(d) {args.latency_rate:.0f} msg/s offered for {args.latency_seconds:.0f} s"
        f" (the API answered {latencies.accepted_per_second:.0f}/s):"
    )
    for label, values in (
        ("202 → MX 250", latencies.after_202),
        ("request → MX 250", latencies.after_request),
    ):
        p50, p99, top = (percentile(values, q) * 1000 for q in (0.5, 0.99, 1.0))
        print(f"    {label:18s} p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {top:.0f} ms")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--latency-rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
