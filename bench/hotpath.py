"""The hot path (issue 11): every line of its table in one run, as ratios against baselines
measured in the same run on the same machine.

  1  POST /v1/send, 1 recipient, 1 API process          vs bare FastAPI 1 KB (bench/bare_app.py)
  2  1,000 personalizations in one /v3/mail/send, p50   goal ≤ 100 ms
  3  end to end, 1 recipient/request, 2 API processes   vs Postfix relaying to smtp-sink
  4  end to end, 1,000 personalizations/request         vs Postfix (4b: one message, 1,000 to)
  5  202 → MX 250 at 200 msg/s offered                  goal p99 ≤ 250 ms
  6  SMTP submission, 20 persistent sessions            vs Postfix smtpd into its queue
  7  webhook dispatcher, 1 endpoint                     vs raw signed httpx POSTs
  8  worker RSS with 100,000 recipients queued          goal ≤ 200 MB (bench/worker_memory.py)
  9  scaling: end to end with 1, 2 and 4 worker processes, efficiency rate_n / (n × rate_1)

  python -m bench.hotpath [--quick] [--lines 1,3,7] [--profile] [--postgres URL]

Every figure goes to bench/results/<timestamp>.json; --profile puts py-spy profiles of the
API and the workers (lines 1, 3 and 4) there too. Load comes from C programs: wrk and
smtp-source (the submission line's Columba clients are aiosmtplib in their own process: no C
tool speaks STARTTLS + AUTH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from app.core.db import Database
from bench import delivery, feedback, submission
from bench.delivery import CONNECTIONS, STACK_ENV, Figures, Latencies, percentile
from bench.mta import Sink, require_postfix_tools
from bench.procs import Profile, write_summary
from bench.send import bare_api, v1_body, v3_body
from bench.stack import ROOT, Stack, running_stack
from bench.wrk import Result, constant_script, run_wrk
from tests.fakes.mx import free_port

RESULTS = ROOT / "bench" / "results"
T = TypeVar("T")
PG_CONNECTIONS = 80  # for all of a Columba's processes (PostgreSQL's default limit is 100)
ALL_LINES = (1, 2, 3, 4, 5, 6, 7, 8, 9)


@dataclass(frozen=True)
class Sizes:
    """How much each line does: the full run, or --quick's smoke run."""

    seconds: float = 10  # wrk duration for lines 1 and 2
    messages: int = 10_000  # line 3 and the Postfix baseline
    bulk_messages: int = 20_000  # lines 4 and 9 (in requests of 1,000)
    latency_rate: float = 200
    latency_seconds: float = 10
    submission_messages: int = 3000
    submission_rounds: int = 3
    webhook_events: int = 20_000
    queued_recipients: int = 100_000
    warm_up: int = 200


QUICK = Sizes(
    seconds=3,
    messages=500,
    bulk_messages=1000,
    latency_rate=50,
    latency_seconds=3,
    submission_messages=300,
    submission_rounds=1,
    webhook_events=1000,
    queued_recipients=5000,
    warm_up=50,
)


@dataclass
class Row:
    """One line of the printed table."""

    line: str
    measure: str
    baseline: str
    columba: str
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


@dataclass
class Run:
    """Everything one run measured, as it goes."""

    args: argparse.Namespace
    sizes: Sizes
    stamp: str
    scratch: Path
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # line → its figures, for the JSON
    profiles: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    postfix: Figures | None = None  # the peer baseline of lines 3, 4 and 9
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load: dict[str, list[float]] = field(default_factory=dict)  # load averages

    def add(self, row: Row, **figures: Any) -> None:
        """Record a line and print it at once (a long run shows its progress)."""
        self.rows.append(row)
        self.figures[row.line] = figures
        ratio = f"  ×{row.ratio:.2f}" if row.ratio is not None else ""
        print(f"[{row.line}] {row.measure}: {row.columba} | {row.baseline}{ratio}", flush=True)


# --- lines 1 and 2: the accept path ----------------------------------------------------------


async def api_lines(run: Run, lines: set[int]) -> None:
    """1: POST /v1/send against the bare endpoint; 2: 1,000 personalizations, p50."""
    size, connections = run.sizes, 32
    bare: Result | None = None
    if 1 in lines:
        with bare_api(1) as url:
            script = constant_script(v1_body("bench@bench.test"), {}, run.scratch, "bare")
            await asyncio.to_thread(
                run_wrk, "warm-up", url + "/send", script, connections=connections, seconds=2
            )
            bare = await asyncio.to_thread(
                run_wrk,
                "bare",
                url + "/send",
                script,
                connections=connections,
                seconds=size.seconds,
            )
    # A pooled connection for each of wrk's (as bench.send): no request waits for one.
    async with stack(run, api_workers=1, workers=0, pool=connections) as columba:
        if bare is not None:
            await line_1(run, columba, bare, connections)
        if 2 in lines:
            script = constant_script(
                v3_body(columba.sender, 1000), columba.headers(), run.scratch, "line2"
            )
            url = columba.api_url + "/v3/mail/send"
            await asyncio.to_thread(run_wrk, "warm-up", url, script, connections=1, seconds=2)
            result = await asyncio.to_thread(
                run_wrk, "line 2", url, script, connections=1, seconds=size.seconds
            )
            run.add(
                Row(
                    "2",
                    "1,000 personalizations in one request, p50",
                    "—",
                    f"p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms",
                    None,
                    "p50 ≤ 100 ms",
                    result.p50_ms <= 100,
                ),
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                requests=result.requests,
                errors=result.errors,
            )


async def line_1(run: Run, columba: Stack, bare: Result, connections: int) -> None:
    """POST /v1/send, one recipient, 1 KB, the API's CPU per request measured alongside."""
    script = constant_script(v1_body(columba.sender), columba.headers(), run.scratch, "line1")
    url = columba.api_url + "/v1/send"
    await asyncio.to_thread(run_wrk, "warm-up", url, script, connections=connections, seconds=2)
    meter = delivery.meter_for(columba)
    meter.roots.pop("worker")  # none run here: this line measures accepting only
    profiles = start_profiles(run, "line1", {"api": [columba.api_pid]})
    meter.start()
    result = await asyncio.to_thread(
        run_wrk, "line 1", url, script, connections=connections, seconds=run.sizes.seconds
    )
    cpu = per_unit(meter.stop(), result.requests)
    stop_profiles(run, "line1", profiles)
    ratio = result.requests_per_second / bare.requests_per_second
    run.add(
        Row(
            "1",
            "POST /v1/send, 1 recipient, PostgreSQL, 1 API process",
            f"bare FastAPI 1 KB: {bare.requests_per_second:,.0f} req/s",
            f"{result.requests_per_second:,.0f} req/s",
            ratio,
            "≥ 0.5×",
            ratio >= 0.5,
        ),
        columba_rps=result.requests_per_second,
        bare_rps=bare.requests_per_second,
        ratio=ratio,
        columba_p50_ms=result.p50_ms,
        columba_p99_ms=result.p99_ms,
        bare_p50_ms=bare.p50_ms,
        errors=result.errors,
        cpu_ms_per_request=cpu,
    )


def _first_line(error: Exception) -> str:
    """A failure in a table cell: its type and the first line of its message."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:100]


def per_unit(cpu: dict[str, float], units: int) -> dict[str, float]:
    """CPU seconds per component → milliseconds per unit."""
    return {name: round(1000 * used / max(units, 1), 3) for name, used in cpu.items()}


# --- lines 3, 4 and 9: end to end against Postfix ---------------------------------------------


def postfix_baseline(run: Run) -> Figures:
    """Postfix relaying to smtp-sink, measured once per run (with the SMTP ceiling)."""
    if run.postfix is None:
        ceiling, peer = delivery.postfix_baseline(run.sizes.messages)
        run.postfix = peer
        run.figures["baseline"] = {"smtp_ceiling": ceiling.as_dict(), "postfix": peer.as_dict()}
        print(
            f"[baseline] Postfix relaying {peer.rate:,.0f} msg/s, "
            f"smtp-source → smtp-sink {ceiling.rate:,.0f} msg/s",
            flush=True,
        )
    return run.postfix


async def end_to_end_lines(run: Run, lines: set[int]) -> None:
    """3: one recipient per request; 4: 1,000 personalizations per request (4b: 1,000 `to`)."""
    peer = await asyncio.to_thread(postfix_baseline, run)
    size = run.sizes
    sink_port = free_port()
    with Sink("127.0.0.1", sink_port) as sink:
        async with stack(run, api_workers=2, workers=run.args.workers, sink_port=sink_port) as s:
            single = delivery.single_sends(s)
            await delivery.throughput(
                s,
                single,
                requests=size.warm_up,
                connections=CONNECTIONS,
                label="warm-up",
                scratch=run.scratch,
                sink=sink,
            )
            if 3 in lines:
                figures = await profiled(
                    run,
                    "line3",
                    s,
                    delivery.throughput(
                        s,
                        single,
                        requests=size.messages,
                        connections=CONNECTIONS,
                        label="line 3",
                        scratch=run.scratch,
                        sink=sink,
                    ),
                )
                add_end_to_end(
                    run,
                    "3",
                    "end to end, 1 recipient/request, 2 API processes, wrk -c20",
                    figures,
                    peer,
                    "≥ 1×",
                    1.0,
                )
            if 4 in lines:
                requests = max(1, size.bulk_messages // 1000)
                figures = await profiled(
                    run,
                    "line4",
                    s,
                    delivery.throughput(
                        s,
                        delivery.personalized_sends(s, 1000),
                        requests=requests,
                        connections=4,
                        label="line 4",
                        scratch=run.scratch,
                    ),
                )
                add_end_to_end(
                    run,
                    "4",
                    "end to end, 1,000 personalizations/request, 4 in flight",
                    figures,
                    peer,
                    "≥ 2×",
                    2.0,
                )
                figures, _ = await delivery.throughput(
                    s,
                    delivery.shared_to_sends(s, 1000),
                    requests=requests,
                    connections=4,
                    label="line 4b",
                    scratch=run.scratch,
                )
                add_end_to_end(
                    run,
                    "4b",
                    "end to end, one message with 1,000 to, 4 in flight",
                    figures,
                    peer,
                    "",
                    None,
                )


def add_end_to_end(
    run: Run,
    line: str,
    measure: str,
    figures: Figures,
    peer: Figures,
    goal: str,
    target: float | None,
) -> None:
    """A row for an end-to-end line, its CPU per message per component beside Postfix's."""
    ratio = figures.rate / peer.rate
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in figures.cpu_ms_per_message().items())
    run.add(
        Row(
            line,
            measure,
            f"Postfix relaying: {peer.rate:,.0f} msg/s",
            f"{figures.rate:,.0f} msg/s",
            ratio,
            goal,
            None if target is None else ratio >= target,
        ),
        **figures.as_dict(),
        ratio=ratio,
        postfix=peer.as_dict(),
    )
    postfix_cpu = peer.cpu_ms_per_message().get("postfix", 0.0)
    print(f"    CPU ms/msg: {cpu}; Postfix {postfix_cpu:.2f}", flush=True)


async def scaling(run: Run) -> None:
    """Line 4's load with 1, 2 and 4 worker processes; efficiency = rate_n / (n × rate_1)."""
    peer = await asyncio.to_thread(postfix_baseline, run)
    requests = max(1, run.sizes.bulk_messages // 1000)
    rates: dict[int, Figures] = {}
    errors: dict[int, str] = {}
    for workers in run.args.scaling:
        try:
            rates[workers] = await scaling_point(run, workers, requests)
        except Exception as error:  # the other worker counts still tell something
            traceback.print_exc()
            errors[workers] = _first_line(error)
            continue
        print(f"    {workers} worker(s): {rates[workers].rate:,.0f} msg/s", flush=True)
    if not rates:
        raise RuntimeError(f"no worker count completed: {errors}")
    first = min(rates)
    base = rates[first].rate / first
    efficiency = {n: f.rate / (n * base) for n, f in rates.items()}
    run.add(
        Row(
            "9",
            "scaling, line 4's load, " + "/".join(map(str, rates)) + " workers",
            f"Postfix relaying: {peer.rate:,.0f} msg/s",
            " / ".join(f"{f.rate:,.0f}" for f in rates.values()) + " msg/s",
            None,
            "efficiency " + " / ".join(f"{e:.2f}" for e in efficiency.values()),
        ),
        workers={n: {**f.as_dict(), "efficiency": efficiency[n]} for n, f in rates.items()},
        errors=errors,
    )
    if errors:
        raise RuntimeError(f"worker counts that failed: {errors}")


async def scaling_point(run: Run, workers: int, requests: int) -> Figures:
    """One point of the scaling line: a fresh Columba with `workers` worker processes."""
    sink_port = free_port()
    with Sink("127.0.0.1", sink_port):
        async with stack(run, api_workers=2, workers=workers, sink_port=sink_port) as s:
            await delivery.throughput(
                s,
                delivery.personalized_sends(s, 100),
                requests=2,
                connections=2,
                label="warm-up",
                scratch=run.scratch,
            )
            figures, _ = await delivery.throughput(
                s,
                delivery.personalized_sends(s, 1000),
                requests=requests,
                connections=4,
                label=f"scaling {workers}",
                scratch=run.scratch,
            )
    return figures


# --- line 5: latency at a fixed offered rate -------------------------------------------------


async def latency_line(run: Run) -> None:
    """202 → MX 250 at the offered rate, single-recipient sends, 2 API processes."""
    size = run.sizes
    async with stack(run, api_workers=2, workers=run.args.workers) as s:
        await delivery.latency_at(s, size.latency_rate / 4, 3, run.scratch, warm_up=True)
        s.sink.arrivals.clear()
        s.sink.recipients = 0
        found: Latencies = await delivery.latency_at(
            s, size.latency_rate, size.latency_seconds, run.scratch
        )
    p50, p99, top = (percentile(found.after_202, q) * 1000 for q in (0.5, 0.99, 1.0))
    run.add(
        Row(
            "5",
            f"202 → MX 250 at {found.offered:.0f} msg/s offered, 1 recipient/request",
            f"answered {found.accepted_per_second:.0f}/s; request → 202 p50 "
            f"{found.request.p50_ms:.0f} ms",
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms",
            None,
            "p99 ≤ 250 ms",
            p99 <= 250,
        ),
        offered_per_s=found.offered,
        answered_per_s=found.accepted_per_second,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=top,
        messages=len(found.after_202),
        request_p50_ms=found.request.p50_ms,
        request_p99_ms=found.request.p99_ms,
    )


# --- lines 6 and 7: submission and webhooks (their own modules) -------------------------------


async def submission_line(run: Run) -> None:
    """20 clients, persistent sessions: `columba smtp` against Postfix's smtpd into its queue."""
    size, clients = run.sizes, 20
    rates: dict[str, list[float]] = {"postfix": [], "columba": []}
    cpu: list[float] = []
    port = free_port()
    with submission.postfix_instance(port) as queue:
        async with submission.columba_listener(
            postgres_url=run.args.postgres, redis_url=run.args.redis
        ) as listener:
            for messages in (50,) + (size.submission_messages,) * size.submission_rounds:
                postfix_round = await asyncio.to_thread(
                    submission.smtp_source_round,
                    port,
                    queue,
                    messages=messages,
                    clients=clients,
                    persistent=True,
                )
                columba_round = await asyncio.to_thread(
                    submission.columba_round,
                    listener,
                    messages=messages,
                    clients=clients,
                    persistent=True,
                )
                if messages == 50:
                    continue  # the warm-up round
                rates["postfix"].append(postfix_round.rate)
                rates["columba"].append(columba_round.rate)
                cpu.append(1000 * (columba_round.cpu_seconds or 0) / columba_round.accepted)
    postfix, columba = (statistics.median(rates[k]) for k in ("postfix", "columba"))
    ratio = columba / postfix
    run.add(
        Row(
            "6",
            f"SMTP submission, {clients} clients, persistent sessions",
            f"Postfix smtpd into its queue: {postfix:,.0f} msg/s",
            f"{columba:,.0f} msg/s",
            ratio,
            "≥ 0.5×",
            ratio >= 0.5,
        ),
        columba_msg_per_s=rates["columba"],
        postfix_msg_per_s=rates["postfix"],
        ratio=ratio,
        listener_cpu_ms_per_message=statistics.median(cpu),
    )


async def webhook_line(run: Run) -> None:
    """The dispatcher with one endpoint against raw signed httpx POSTs to the same receiver."""
    async with feedback.bench_settings(run.args.postgres) as settings:
        db = Database(settings)
        try:
            figures = await feedback.measure_webhooks(
                settings, db, run.sizes.webhook_events, fan_out=False
            )
        finally:
            await db.dispose()
    baseline = (figures["before"] + figures["between"]) / 2
    ratio = figures["single"] / baseline
    run.add(
        Row(
            "7",
            "webhook dispatcher, 1 endpoint",
            f"raw signed httpx POSTs: {baseline:,.0f} events/s",
            f"{figures['single']:,.0f} events/s",
            ratio,
            "≥ 0.5×",
            ratio >= 0.5,
        ),
        **figures,
        ratio=ratio,
    )


# --- line 8: worker memory (bench/worker_memory.py, when it exists) ---------------------------


async def memory_line(run: Run) -> None:
    """Peak worker RSS with the queue full, from bench.worker_memory.measure if it exists."""
    measure = _memory_probe()
    row = Row(
        "8",
        f"worker RSS with {run.sizes.queued_recipients:,} recipients queued",
        "Postfix bounds its active queue",
        "not measured",
        None,
        "≤ 200 MB",
    )
    if measure is None:
        run.add(row, measured=False, reason="bench/worker_memory.py does not exist yet")
        return
    offered = {
        "postgres_url": run.args.postgres,
        "redis_url": run.args.redis,
        "recipients": run.sizes.queued_recipients,
        "quick": run.args.quick,
    }
    accepted = inspect.signature(measure).parameters
    result = measure(**{k: v for k, v in offered.items() if k in accepted})
    if inspect.isawaitable(result):
        result = await result
    figures = dict(result) if isinstance(result, dict) else {"peak_rss_mb": float(result)}
    rss = figures.get("peak_rss_mb", figures.get("rss_mb"))
    if rss is None:
        run.add(row, measured=False, reason=f"bench.worker_memory returned {figures}")
        return
    row.columba, row.met = f"peak {float(rss):,.0f} MB", float(rss) <= 200
    run.add(row, measured=True, **figures)


def _memory_probe() -> Callable[..., Any] | None:
    """bench.worker_memory.measure, or None while that module is not there."""
    if importlib.util.find_spec("bench.worker_memory") is None:
        return None
    module = importlib.import_module("bench.worker_memory")
    probe = getattr(module, "measure", None)
    return probe if callable(probe) else None


# --- shared ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stack(
    run: Run,
    *,
    api_workers: int,
    workers: int,
    sink_port: int | None = None,
    pool: int | None = None,
) -> AsyncIterator[Stack]:
    """A Columba on PostgreSQL (its own database) with the bench's environment."""
    async with running_stack(
        postgres_url=run.args.postgres,
        redis_url=run.args.redis,
        workers=workers,
        api_workers=api_workers,
        external_sink_port=sink_port,
        extra_env=STACK_ENV | pool_env(api_workers + workers, pool),
        log_dir=run.scratch / f"logs-{time.monotonic_ns()}",
    ) as started:
        yield started


def pool_env(processes: int, pool: int | None) -> dict[str, str]:
    """Connection pools that fit PostgreSQL's default max_connections (100) with room to
    spare: every process's pool (10 + 20 overflow by default) at once would not, with 4
    workers. `pool` sets the pool size of a lone API process instead."""
    if pool is not None:
        return {"COLUMBA_DB_POOL_SIZE": str(pool)}
    each = max(5, PG_CONNECTIONS // max(processes, 1))
    size = min(10, each)
    return {"COLUMBA_DB_POOL_SIZE": str(size), "COLUMBA_DB_MAX_OVERFLOW": str(each - size)}


def start_profiles(run: Run, name: str, components: dict[str, list[int]]) -> list[Profile]:
    """py-spy on each process (tree) of each component, when --profile is on."""
    if not run.args.profile:
        return []
    profiles = []
    for component, pids in components.items():
        for pid in pids:
            out = run.scratch / f"{name}-{component}-{pid}.raw.txt"
            profiles.append(Profile(pid, out))
    return profiles


def stop_profiles(run: Run, name: str, profiles: list[Profile]) -> None:
    """Stop them; merge each component's raw stacks and summarise them under bench/results/."""
    merged: dict[str, list[str]] = {}
    for profile in profiles:
        raw = profile.stop()
        if raw is not None:
            component = raw.name.split("-")[1]
            merged.setdefault(component, []).append(raw.read_text())
    for component, parts in merged.items():
        raw = run.args.results / f"{run.stamp}-{name}-{component}.raw.txt"
        raw.write_text("".join(parts))
        summary_file, summary = write_summary(raw, f"{name}, {component} (py-spy, 100 Hz)")
        run.profiles[f"{name}-{component}"] = {
            "raw": str(raw.relative_to(ROOT)),
            "summary": str(summary_file.relative_to(ROOT)),
            **summary,
        }


async def profiled(run: Run, name: str, s: Stack, work: Awaitable[tuple[T, Any]]) -> T:
    """`work`'s first result, with the API and the workers under py-spy when asked."""
    profiles = start_profiles(run, name, {"api": [s.api_pid], "worker": s.worker_pids})
    try:
        result, _ = await work
    finally:
        stop_profiles(run, name, profiles)
    return result


async def guarded(run: Run, label: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run a group of lines; a failure is reported and the other lines still run."""
    try:
        await work()
    except Exception as error:  # one broken line must not lose the others
        traceback.print_exc()
        run.failed.append(f"{label}: {type(error).__name__}: {error}")
        run.rows.append(Row(label, "failed", "", _first_line(error)))
    save(run)  # as it goes: a run cut short keeps what it measured


async def measure(run: Run, lines: set[int]) -> None:
    """Each selected group of lines, in the order of the table."""
    if lines & {3, 4, 9}:
        require_postfix_tools()
    if lines & {1, 2}:
        await guarded(run, "1-2", lambda: api_lines(run, lines))
    if lines & {3, 4}:
        await guarded(run, "3-4", lambda: end_to_end_lines(run, lines))
    steps: dict[int, Callable[[Run], Awaitable[None]]] = {
        5: latency_line,
        6: submission_line,
        7: webhook_line,
        8: memory_line,
        9: scaling,
    }
    for line, step in steps.items():
        if line in lines:
            await guarded(run, str(line), functools.partial(step, run))


# --- report --------------------------------------------------------------------------------


def print_table(run: Run, load: dict[str, list[float]]) -> None:
    """The issue's table with this run's figures."""
    mode = "quick (smoke sizes)" if run.args.quick else "full"
    print(
        f"\nIssue 11 hot path, {mode} run {run.stamp}, {os.cpu_count()} CPUs, load average "
        f"{_load(load['start'])} at the start, {_load(load['end'])} at the end"
        + (", py-spy sampling lines 1, 3, 4" if run.args.profile else "")
    )
    header = ("line", "measure", "baseline (same run)", "Columba", "ratio", "goal", "")
    rows = [header] + [
        (
            r.line,
            r.measure,
            r.baseline,
            r.columba,
            "" if r.ratio is None else f"{r.ratio:.2f}×",
            r.goal,
            {True: "met", False: "not met", None: ""}[r.met],
        )
        for r in run.rows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for name, profile in run.profiles.items():
        print(f"\n{name}: {profile['summary']}")
        for function, share in profile["functions_self"][:8]:
            print(f"  {share:6.1%}  {function}")


def _load(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip()


def save(run: Run) -> Path:
    """bench/results/<timestamp>.json with every figure so far."""
    out: Path = run.args.results / f"{run.stamp}.json"
    load = run.load | {"now": list(os.getloadavg())}
    document = {
        "started": run.started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "commit": _commit(),
        "cpus": os.cpu_count(),
        "load_average": load,
        "mode": "quick" if run.args.quick else "full",
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run.args).items()},
        "sizes": vars(run.sizes),
        "lines": run.figures,
        "profiles": run.profiles,
        "failed": run.failed,
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return out


def parse_lines(text: str) -> set[int]:
    """`1,3,7` → {1, 3, 7}; `all` → every line."""
    if text == "all":
        return set(ALL_LINES)
    chosen = {int(part) for part in text.split(",") if part.strip()}
    unknown = chosen - set(ALL_LINES)
    if unknown:
        raise argparse.ArgumentTypeError(f"no line {sorted(unknown)}; lines are 1–9")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=parse_lines, default=set(ALL_LINES), help="e.g. 1,3,7")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--profile", action="store_true", help="py-spy the API and workers")
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", help="Redis URL (default: an embedded one per stack)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, lines 3–5")
    parser.add_argument(
        "--scaling", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2, 4]
    )
    parser.add_argument("--messages", type=int, help="line 3 and the Postfix baseline")
    parser.add_argument("--bulk-messages", type=int, help="lines 4 and 9 (1,000 per request)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    """Run the selected lines, print the table, save the JSON; non-zero if a line failed."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    for name in ("messages", "bulk_messages"):
        if getattr(args, name):
            sizes = dataclasses.replace(sizes, **{name: getattr(args, name)})
    args.results.mkdir(parents=True, exist_ok=True)
    run = Run(
        args,
        sizes,
        datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        Path(tempfile.mkdtemp(prefix="columba-hotpath-")),
    )
    run.load["start"] = list(os.getloadavg())
    began = time.monotonic()
    await measure(run, args.lines)
    run.load["end"] = list(os.getloadavg())
    print_table(run, run.load)
    out = save(run)
    print(f"\n{len(run.rows)} line(s) in {time.monotonic() - began:.0f} s; figures in {out}")
    for failure in run.failed:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
