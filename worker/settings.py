"""arq worker configuration built from Columba's settings."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
from datetime import timedelta
from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Worker, func
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.queue import DELIVER_JOB, QUEUE_NAME, SWEEP_JOB, Queue, redis_settings
from app.core.throttled_log import ThrottledWarning
from app.observability.server import ObservabilityServer
from app.webhooks.dispatcher import build_dispatcher
from worker import deliverability, jobs
from worker.runtime import Runtime

log = logging.getLogger(__name__)

WEBHOOKS_JOB = "dispatch_webhooks"
SEQUENCE_JOB = "sequence_events"
COMPACT_JOB = "compact_stats"

JOB_TIMEOUT_SECONDS = 3600  # a job may hold many slow MX conversations; leases cover crashes
PURGE_JOB = "purge_idempotency_keys"
RETENTION_JOB = "purge_expired_data"
PAUSED_EXPIRY_JOB = "expire_paused_recipients"
REVERIFY_JOB = "reverify_domains"
TLS_COUNTS_JOB = "flush_tls_counts"
TLS_REPORTS_JOB = "send_tls_reports"
# arq's queue only carries periodic jobs (wake-ups come over pub/sub, worker/wakeups.py):
# polling it less often saves idle CPU; cron jobs still start within this of their second.
POLL_DELAY_SECONDS = 0.5
# A worker started while Redis is down waits for it this long (one try a second) before it
# gives up; a running worker outlives any outage (ResilientWorker).
REDIS_STARTUP_WAIT_SECONDS = 3600
REDIS_OUTAGE_LOG_SECONDS = 10.0

log = logging.getLogger(__name__)
_REDIS_OUTAGE = ThrottledWarning(log, REDIS_OUTAGE_LOG_SECONDS)  # one line now and then


class ResilientWorker(Worker):
    """arq's Worker, kept running through a Redis outage. arq's polling loop ends the process
    at the first Redis error; but Redis only carries wake-ups and periodic jobs here, and the
    delivery pump claims due work from the database on its own, so the worker keeps
    delivering meanwhile and polls Redis again once it is back (issue 17)."""

    async def _poll_iteration(self) -> None:
        """One poll of arq's queue; a Redis failure waits a moment instead of crashing."""
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            _REDIS_OUTAGE.warning(
                "Redis unavailable, delivering from the database meanwhile: %s", exc
            )
            await asyncio.sleep(1.0)


def sweep_seconds(settings: Settings) -> set[int]:
    """The seconds of each minute at which the sweeper runs."""
    step = max(1, min(60, int(settings.sweep_interval.total_seconds())))
    return set(range(0, 60, step))


def seconds_every(interval: timedelta) -> set[int]:
    """The seconds of each minute at which a job with this interval runs."""
    step = max(1, min(60, int(interval.total_seconds())))
    return set(range(0, 60, step))


def feedback_cron_jobs(settings: Settings) -> list[CronJob]:
    """Issue 5's periodic jobs: webhook delivery (every WEBHOOK_POLL_INTERVAL), feed
    sequencing (every SWEEP_INTERVAL; readers of the feed also sequence before reading) and
    folding the stats shards of past hours (four times an hour)."""
    return [
        cron(
            jobs.dispatch_webhooks,
            name=WEBHOOKS_JOB,
            second=seconds_every(settings.webhook_poll_interval),
            run_at_startup=True,
        ),
        cron(
            jobs.sequence_events,
            name=SEQUENCE_JOB,
            second=seconds_every(settings.sweep_interval),
            run_at_startup=True,
        ),
        cron(jobs.compact_stats, name=COMPACT_JOB, minute={1, 16, 31, 46}, second=30),
    ]


def deliverability_cron_jobs() -> list[CronJob]:
    """Issue 16's periodic jobs: domains are re-verified hourly as they come due (every
    DOMAIN_CHECK_INTERVAL, sooner during a DKIM rotation), TLS-RPT counters reach the
    database every minute, and yesterday's TLS reports go out once a day."""
    return [
        cron(deliverability.reverify_domains, name=REVERIFY_JOB, minute=7, second=0),
        cron(deliverability.flush_tls_counts, name=TLS_COUNTS_JOB, second=50),
        cron(deliverability.send_tls_reports, name=TLS_REPORTS_JOB, hour=0, minute=47, second=0),
    ]


class GracefulWorker(ResilientWorker):
    """arq's worker kept running through Redis outages, whose first SIGTERM or SIGINT also
    winds the delivery pump down at once (Runtime.begin_shutdown) and whose second ends the
    process on the spot."""

    signalled = False

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        """Stop delivering, then let arq's running jobs finish (within the grace period)."""
        self._begin_stopping(signum)
        super().handle_sig_wait_for_completion(signum)

    def handle_sig(self, signum: signal.Signals) -> None:
        """The same, when the grace period is 0 (arq cancels its jobs at once)."""
        self._begin_stopping(signum)
        super().handle_sig(signum)

    def _begin_stopping(self, signum: signal.Signals) -> None:
        """Wind delivery down; a second signal exits at once."""
        signalled = signum in (signal.SIGINT, signal.SIGTERM)  # not arq's own SIGUSR1 on close
        if signalled and self.signalled:
            # Recipients in hand keep their leases until they run out (and count as expired).
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        self.signalled = self.signalled or signalled
        runtime: Runtime | None = self.ctx.get("runtime")
        if runtime is not None:
            runtime.begin_shutdown()


def build_worker(
    settings: Settings,
    redis_url: str,
    *,
    metrics_at: tuple[str, int] | None = None,
    **overrides: Any,
) -> Worker:
    """An arq Worker running delivery jobs and the sweeper; its metrics and health served at
    `metrics_at` (host, port) if given."""

    async def startup(ctx: dict[str, Any]) -> None:
        if metrics_at is not None:
            ctx["observability"] = ObservabilityServer(settings, queue=True)
            await ctx["observability"].start(*metrics_at)
        runtime = Runtime(settings, redis=ctx["redis"])
        runtime.start()
        ctx["runtime"] = runtime
        ctx["queue"] = Queue(redis_url)
        ctx["webhooks"] = build_dispatcher(settings, ctx["runtime"].db)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["webhooks"].client.close()
        await ctx["queue"].close()
        await ctx["runtime"].close()
        if "observability" in ctx:
            await ctx["observability"].close()

    options: dict[str, Any] = {
        "functions": [func(jobs.deliver_message, name=DELIVER_JOB)],
        "cron_jobs": [
            cron(
                jobs.sweep_due_recipients,
                name=SWEEP_JOB,
                second=sweep_seconds(settings),
                run_at_startup=True,
            ),
            *feedback_cron_jobs(settings),
            cron(jobs.purge_idempotency_keys, name=PURGE_JOB, minute=17, second=0),
            cron(jobs.purge_expired_data, name=RETENTION_JOB, minute=37, second=0),
            *deliverability_cron_jobs(),
            cron(
                jobs.expire_paused_recipients,
                name=PAUSED_EXPIRY_JOB,
                minute=set(range(0, 60, 5)),
                second=40,
            ),
        ],
        "queue_name": QUEUE_NAME,
        "redis_settings": worker_redis_settings(redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": JOB_TIMEOUT_SECONDS,
        "keep_result": 0,  # frees a compatibility wake-up's job id at once
        "poll_delay": POLL_DELAY_SECONDS,
        "max_tries": 3,  # arq retries only help; recipient state changes only in the database
        # On SIGTERM running jobs (wake-ups are instant; a webhook batch may not be) get the
        # grace period too; delivery winds down beside them (GracefulWorker).
        "job_completion_wait": math.ceil(settings.shutdown_grace.total_seconds()),
    }
    options.update(overrides)
    return GracefulWorker(**options)


def worker_redis_settings(redis_url: str) -> RedisSettings:
    """arq's connection settings, waiting up to REDIS_STARTUP_WAIT_SECONDS for Redis at
    start (a worker restarted during an outage would otherwise exit after a second)."""
    settings = redis_settings(redis_url)
    settings.conn_retries = REDIS_STARTUP_WAIT_SECONDS
    settings.conn_retry_delay = 1
    return settings
