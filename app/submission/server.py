"""The submission listener of one process: port 587 with STARTTLS (RFC 6409, RFC 3207) and
port 465 with implicit TLS (RFC 8314), sharing one handler, database, queue and Redis."""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType

from redis.asyncio import Redis

from app.accounts.cache import KeyCache
from app.common.smtp_shutdown import ListenerShutdown, until_signalled
from app.core import cache
from app.core.config import Settings
from app.core.db import Database
from app.core.queue import Queue
from app.core.signals import Listener
from app.dev.embedded_redis import redis_url_for
from app.observability.server import ObservabilityServer
from app.submission.guard import Guard, GuardLimits
from app.submission.handler import SubmissionHandler
from app.submission.protocol import SubmissionSMTP

log = logging.getLogger(__name__)


def guard_limits(settings: Settings) -> GuardLimits:
    """The lockout thresholds the settings describe."""
    return GuardLimits(
        max_ip_failures=settings.submission_auth_max_failures,
        max_key_failures=settings.submission_auth_max_key_failures,
        lockout_seconds=max(1, int(settings.submission_auth_lockout.total_seconds())),
    )


class SubmissionServer:
    """Listens for submissions until closed."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext) -> None:
        # aiosmtpd logs every command at INFO, addresses included; ours says what matters.
        logging.getLogger("mail.log").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        self.settings = settings
        self.tls_context = tls_context
        redis_url = redis_url_for(settings.redis_url, settings.var_dir)
        self.database = Database(settings)
        self.queue = Queue(redis_url)
        self.redis = Redis.from_url(redis_url)  # connects on first use: Redis may start later
        # Keys and sending domains cached as in the API (app/core/cache.py): a revoked key
        # stops authenticating within AUTH_CACHE_TTL, at once when the revocation is announced.
        cache_ttl = settings.auth_cache_ttl.total_seconds()
        self.keys = KeyCache(self.database, ttl=cache_ttl)
        cache.configure_account_caches(cache_ttl)
        self.invalidations = Listener(redis_url)
        self.handler = SubmissionHandler(
            settings,
            database=self.database,
            queue=self.queue,
            guard=Guard(self.redis, guard_limits(settings)),
            keys=self.keys,
        )
        self.shutdown = ListenerShutdown()
        self._servers: list[asyncio.Server] = []
        self.ports: dict[str, int] = {}  # "starttls" / "tls" → the port bound

    async def __aenter__(self) -> SubmissionServer:
        """Nothing to do before start()."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close everything."""
        await self.close()

    async def start(self, host: str, *, port: int | None, tls_port: int | None) -> None:
        """Listen on `port` (STARTTLS) and `tls_port` (implicit TLS); None skips one, 0 picks a
        free port."""
        loop = asyncio.get_running_loop()
        if not self._servers:
            self.invalidations.start()
        for kind, number in (("starttls", port), ("tls", tls_port)):
            if number is None:
                continue
            implicit = kind == "tls"

            def factory(implicit: bool = implicit) -> SubmissionSMTP:
                return SubmissionSMTP(
                    self.handler,
                    implicit_tls=implicit,
                    tls_context=self.tls_context,
                    loop=loop,
                    shutdown=self.shutdown,
                )

            server = await loop.create_server(
                factory, host, number, ssl=self.tls_context if implicit else None
            )
            self._servers.append(server)
            self.ports[kind] = server.sockets[0].getsockname()[1]

    async def close(self, grace: float | None = None) -> None:
        """Greet new sessions with 421, give open ones `grace` seconds (SHUTDOWN_GRACE) to
        finish, close the rest with 421 (app.common.smtp_shutdown), stop listening, and
        release the database, queue and Redis."""
        if grace is None:
            grace = self.settings.shutdown_grace.total_seconds()
        await self.shutdown.run(grace)
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        await self.invalidations.stop()
        await self.keys.close()
        await self.queue.close()
        await self.redis.aclose()
        await self.database.dispose()


async def serve(
    settings: Settings,
    tls_context: ssl.SSLContext,
    *,
    host: str,
    port: int | None,
    tls_port: int | None,
    metrics_port: int | None = None,
) -> None:
    """`columba smtp`: listen until SIGINT or SIGTERM; metrics and health on `metrics_port`."""
    observability = ObservabilityServer(settings)
    if metrics_port:
        await observability.start(host, metrics_port)
    async with SubmissionServer(settings, tls_context) as server:
        await server.start(host, port=port, tls_port=tls_port)
        for kind, bound in server.ports.items():
            what = "STARTTLS" if kind == "starttls" else "implicit TLS"
            log.info("SMTP submission listening on %s:%d (%s)", host, bound, what)
        await until_signalled()
        log.info("SMTP submission stopping")
    await observability.close()
