"""End-to-end delivery, measured in one run on this machine (issues 3 and 11):

(a) the SMTP ceiling: smtp-source straight into smtp-sink
(b) the peer MTA: smtp-source into a private Postfix relaying to the same smtp-sink
(c) Columba on PostgreSQL and Redis: sends driven by wrk → workers → DKIM-signed → smtp-sink,
    until every delivery is recorded; one recipient per request, 1,000 personalizations per
    /v3/mail/send request (each its own copy), and one message with 1,000 `to`
(d) latency from the 202 to the MX's 250 at a fixed offered load (default 200 msg/s)

The load comes from wrk (bench/wrk.py), a C program, so that the load generator does not eat
the CPU being measured. `python -m bench.hotpath` runs these as lines 3–5 of its table; this
module runs them alone:

  python -m bench.delivery [--messages 10000] [--workers 2] [--api-workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.core.db import Database
from app.messages.models import Recipient
from bench.mta import Sink, postfix, require_postfix_tools, smtp_source
from bench.procs import CpuMeter, postgres_backends
from bench.stack import Stack, running_stack
from bench.wrk import RECIPIENT, Result, Sends, WrkRun, read_accepted, sends_script
from tests.fakes.mx import free_port

TEXT = "Hello from the Columba delivery benchmark. " * 22  # ~1 KB
HTML = "<p>" + "Hello from the <b>Columba</b> delivery benchmark. " * 16 + "</p>"  # ~0.8 KB
CONNECTIONS = 20  # as smtp-source's sessions and Postfix's destination concurrency
UNITS = "@@UNITS@@"
# The limiter still runs on every request; it never refuses here.
STACK_ENV = {"COLUMBA_RATE_LIMIT": "100000000/1m"}


@dataclass
class Figures:
    """One throughput line: messages delivered in seconds, and the CPU each component used."""

    name: str
    messages: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # component → CPU seconds
    refused: int = 0  # sends answered with an error (retried with fresh recipients)

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds

    def cpu_ms_per_message(self) -> dict[str, float]:
        """Milliseconds of CPU per message, per component."""
        return {name: 1000 * used / self.messages for name, used in self.cpu.items()}

    def as_dict(self) -> dict[str, Any]:
        """For the JSON of results."""
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "msg_per_s": round(self.rate, 1),
            "cpu_ms_per_message": {k: round(v, 3) for k, v in self.cpu_ms_per_message().items()},
            "refused": self.refused,
        }


# --- bodies, built by wrk's Lua with a fresh recipient per copy ------------------------------


def _split(path: str, body: dict[str, Any], unit: Any, units: int) -> Sends:
    """`body` with UNITS where the list of `units` copies of `unit` goes."""
    text = json.dumps(body)
    head, tail = text.split(json.dumps(UNITS))
    return Sends(path, head + "[", json.dumps(unit), "]" + tail, units)


def single_sends(stack: Stack) -> Sends:
    """POST /v1/send, one recipient, ~2 KB of text and HTML (smtp-source's size)."""
    body = {"from": stack.sender, "to": UNITS, "subject": "Hotpath", "text": TEXT, "html": HTML}
    return _split("/v1/send", body, f"{RECIPIENT}@{stack.recipient_domain}", 1)


def personalized_sends(stack: Stack, count: int) -> Sends:
    """POST /v3/mail/send with `count` personalizations, each its own To and substitutions."""
    body = {
        "personalizations": UNITS,
        "from": {"email": stack.sender, "name": "Bench Shop"},
        "subject": "Your offer, -name-",
        "content": [
            {"type": "text/plain", "value": TEXT + " Your code: -code-"},
            {"type": "text/html", "value": HTML + "<p>Your code: <b>-code-</b></p>"},
        ],
        "categories": ["promotion"],
    }
    unit = {
        "to": [{"email": f"{RECIPIENT}@{stack.recipient_domain}", "name": f"Customer {RECIPIENT}"}],
        "substitutions": {"-name-": f"Customer {RECIPIENT}", "-code-": RECIPIENT},
    }
    return _split("/v3/mail/send", body, unit, count)


def shared_to_sends(stack: Stack, count: int) -> Sends:
    """POST /v1/send, one message with `count` `to` addresses (byte-identical copies)."""
    body = {"from": stack.sender, "to": UNITS, "subject": "Hotpath", "text": TEXT, "html": HTML}
    return _split("/v1/send", body, f"{RECIPIENT}@{stack.recipient_domain}", count)


# --- measuring -----------------------------------------------------------------------------


async def delivered(database: Database) -> int:
    """Recipients whose delivery has been recorded."""
    async with database.session() as session:
        query = select(func.count()).select_from(Recipient).where(Recipient.status == "delivered")
        return int(await session.scalar(query) or 0)


def meter_for(stack: Stack) -> CpuMeter:
    """CPU of the stack's components: API, workers, Redis (embedded) and its PostgreSQL
    backends (on a local server; the sink and the load generator are not Columba)."""
    database = make_url(stack.settings.database_url).database or ""
    redis = stack.redis_pid()
    roots = {
        "api": lambda: [stack.api_pid],
        "worker": lambda: list(stack.worker_pids),
        "postgres": lambda: postgres_backends(database),
    }
    if redis is not None:
        roots["redis"] = lambda: [redis]
    return CpuMeter(roots)


async def throughput(
    stack: Stack,
    sends: Sends,
    *,
    requests: int,
    connections: int,
    label: str,
    scratch: Path,
    sink: Sink | None = None,
) -> tuple[Figures, Result]:
    """wrk posts `requests` sends; the clock runs from its start until every recipient's
    delivery is recorded. `sink` (the smtp-sink the stack delivers to) spares the database
    most polls when every recipient is a message of its own."""
    messages = requests * sends.units
    database = Database(stack.settings)
    try:
        already = await delivered(database)
        sink_target = sink.count + messages if sink is not None else 0
        script = sends_script(
            sends,
            stack.headers(),
            scratch / label.replace(" ", "_"),
            quota=requests,
            connections=connections,
            tag=f"t{time.monotonic_ns() % 10**9}",
        )
        meter = meter_for(stack)
        meter.start()
        started = time.perf_counter()
        run = WrkRun(stack.api_url, script, connections=connections)
        try:
            await _until_delivered(database, already + messages, run, sink, sink_target)
            seconds = time.perf_counter() - started
            cpu = meter.stop()
        finally:
            report, accepted, refused = run.stop(label)
    finally:
        await database.dispose()
    if accepted < requests:
        raise RuntimeError(f"{label}: wrk saw {accepted} of {requests} sends accepted")
    return Figures(label, messages, seconds, cpu, refused), report


async def _until_delivered(
    database: Database,
    target: int,
    run: WrkRun,
    sink: Sink | None,
    sink_target: int,
    stall: float = 180,
) -> None:
    """Until `target` deliveries are recorded (the sink's count first, when it can tell);
    fails when wrk dies or nothing moves for `stall` seconds."""
    recorded, progress, moved = 0, (-1, -1), time.monotonic()
    while True:
        if run.finished():
            raise RuntimeError(f"wrk ended early: {run.stop('ended early')}")
        if sink is not None and sink.count < sink_target:
            pause = 0.02
        else:
            recorded = await delivered(database)
            if recorded >= target:
                return
            pause = 0.1
        now = (sink.count if sink is not None else 0, recorded)
        if now != progress:
            progress, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise RuntimeError(
                f"nothing delivered for {stall:.0f} s: the sink has {now[0]} messages, "
                f"the database {recorded} deliveries recorded of {target} (checked once the "
                "sink has them all)"
            )
        await asyncio.sleep(pause)


@dataclass(frozen=True)
class Latencies:
    """What (d) measured: per message, 202 → 250 (seconds), and what wrk saw of the requests."""

    after_202: list[float]
    offered: float  # sends per second offered
    accepted_per_second: float  # sends the API answered with a 202, per second
    request: Result  # wrk's request latencies (request sent → 202 read)


async def latency_at(
    stack: Stack, rate: float, seconds: float, scratch: Path, *, warm_up: bool = False
) -> Latencies:
    """Offer `rate` single-recipient sends per second for `seconds`; time each 202 → 250.

    Needs a stack whose sink is the in-process one (it stamps each Message-ID's arrival on
    the clock wrk stamps each 202 with)."""
    connections = max(CONNECTIONS, int(rate / 4))  # a connection per 250 ms of schedule
    directory = scratch / f"latency-{rate:.0f}"
    script = sends_script(
        single_sends(stack),
        stack.headers(),
        directory,
        quota=10**9,
        connections=connections,
        tag="lat",
        rate=rate,
        record=True,
    )
    run = WrkRun(stack.api_url, script, connections=connections, seconds=seconds)
    await asyncio.to_thread(run.process.wait)
    report, accepted_count, _ = run.stop("latency")
    accepted = read_accepted(directory)
    if not accepted and not warm_up:
        raise RuntimeError(f"no send was accepted in {seconds} s: {report}")
    arrivals = await _arrivals_of(stack, set(accepted), timeout=120)
    return Latencies(
        after_202=[arrivals[message_id] - at for message_id, at in accepted.items()],
        offered=rate,
        accepted_per_second=accepted_count / seconds,
        request=report,
    )


async def _arrivals_of(stack: Stack, message_ids: set[str], timeout: float) -> dict[str, float]:
    """Message id → arrival time at the sink, once every one of `message_ids` has arrived.

    (Counting arrivals is not enough: sends wrk had in flight when it stopped arrive too.)"""

    def arrived() -> dict[str, float]:
        return {key.split("@")[0].lower(): at for key, at in stack.sink.arrivals.items()}

    try:
        async with asyncio.timeout(timeout):
            while not message_ids <= arrived().keys():
                stack.sink.event.clear()
                await stack.sink.event.wait()
    except TimeoutError:
        missing = len(message_ids - arrived().keys())
        raise RuntimeError(f"{missing} accepted messages never reached the sink") from None
    return arrived()


def postfix_baseline(messages: int) -> tuple[Figures, Figures]:
    """(a) smtp-source → smtp-sink and (b) smtp-source → Postfix → smtp-sink, with the CPU
    Postfix's processes used for (b)."""
    port = free_port()
    with Sink("127.0.0.1", port) as sink:
        started = time.perf_counter()
        smtp_source(port, messages)
        ceiling = Figures(
            "(a) smtp-source → smtp-sink", messages, sink.wait_for(messages) - started
        )
    sink_port, smtpd_port = free_port(), free_port()
    with Sink("127.0.0.1", sink_port) as sink, postfix(smtpd_port, sink_port) as master:
        smtp_source(smtpd_port, 200)  # warm-up: Postfix's daemons start on demand
        sink.wait_for(200)
        meter = CpuMeter({"postfix": lambda: [master]})
        meter.start()
        started = time.perf_counter()
        smtp_source(smtpd_port, messages)
        arrived = sink.wait_for(200 + messages)
        relayed = Figures("(b) Postfix relaying", messages, arrived - started, meter.stop())
    return ceiling, relayed


def percentile(values: list[float], fraction: float) -> float:
    """The value under which `fraction` of the values fall."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- alone ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    """Measure everything and print the report."""
    require_postfix_tools()
    scratch = Path(tempfile.mkdtemp(prefix="columba-bench-delivery-"))
    ceiling, peer = await asyncio.to_thread(postfix_baseline, args.messages)
    results = [ceiling, peer]
    sink_port = free_port()
    with Sink("127.0.0.1", sink_port) as sink:
        async with running_stack(
            postgres_url=args.postgres,
            redis_url=args.redis,
            workers=args.workers,
            api_workers=args.api_workers,
            external_sink_port=sink_port,
            extra_env=STACK_ENV,
        ) as stack:
            single = single_sends(stack)
            await throughput(
                stack,
                single,
                requests=200,
                connections=CONNECTIONS,
                label="warm-up",
                scratch=scratch,
                sink=sink,
            )
            for sends, requests, connections, label in (
                (single, args.messages, CONNECTIONS, "(c) 1 recipient/request"),
                (
                    personalized_sends(stack, 1000),
                    args.messages // 1000,
                    4,
                    "(c) 1,000 personalizations/request",
                ),
                (
                    shared_to_sends(stack, 1000),
                    args.messages // 1000,
                    4,
                    "(c) one message, 1,000 to",
                ),
            ):
                figures, _ = await throughput(
                    stack,
                    sends,
                    requests=requests,
                    connections=connections,
                    label=label,
                    scratch=scratch,
                    sink=sink if sends.path == "/v1/send" and sends.units == 1 else None,
                )
                results.append(figures)
    async with running_stack(
        postgres_url=args.postgres,
        redis_url=args.redis,
        workers=args.workers,
        api_workers=args.api_workers,
        extra_env=STACK_ENV,
    ) as stack:
        latencies = await latency_at(stack, args.latency_rate, args.latency_seconds, scratch)
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
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in figures.cpu_ms_per_message().items())
        print(line + (f"   CPU ms/msg: {cpu}" if cpu else ""))
    p50, p99 = (percentile(latencies.after_202, q) * 1000 for q in (0.5, 0.99))
    print(
        f"(d) {latencies.offered:.0f} msg/s offered for {args.latency_seconds:.0f} s (answered"
        f" {latencies.accepted_per_second:.0f}/s): 202 → MX 250 p50 {p50:.0f} ms, p99 {p99:.0f}"
        f" ms; request → 202 p50 {latencies.request.p50_ms:.0f} ms"
    )


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
    parser.add_argument("--redis", help="Redis URL (default: an embedded one per stack)")
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--latency-rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
