"""create_app(): assemble settings, database, queue, routers and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.accounts.cache import KeyCache
from app.accounts.router import router as keys_router
from app.addresses.router import router as addresses_router
from app.asm.router import router as asm_router
from app.batches.router import router as batches_router
from app.bounces.router import router as inbound_router
from app.core import cache
from app.core.config import Settings, load_settings
from app.core.db import Database
from app.core.errors import install_error_handlers
from app.core.queue import Queue
from app.core.ratelimit import RateLimitHeaders
from app.core.shutdown import on_server_exit
from app.core.signals import Listener
from app.dashboard.router import install_dashboard
from app.dev.embedded_redis import redis_url_for, release_redis
from app.domains.router import router as domains_router
from app.domains.sendgrid import router as sg_domains_router
from app.events.router import router as events_router
from app.events.waiting import LongPolls
from app.fastpath import FastPath
from app.health import router as health_router
from app.messages.activity_router import router as activity_router
from app.messages.committer import SendCommitter
from app.messages.router import router as messages_router
from app.messages.router import send
from app.messages.schemas import SendRequest
from app.messages.search_router import router as search_router
from app.middleware import BodySizeLimit, GzipRequests, body_limit_for
from app.observability.http import RequestObserver
from app.observability.router import router as observability_router
from app.openapi import install_openapi
from app.sendgrid.router import mail_send
from app.sendgrid.router import router as sendgrid_router
from app.sendgrid.schemas import MailSend
from app.stats.router import router as stats_router
from app.stats.segments import router as stats_segments_router
from app.suppressions.router import router as suppressions_router
from app.templates.router import router as templates_router
from app.templates.sendgrid_router import router as sendgrid_templates_router
from app.tracking.committer import TrackingCommitter
from app.tracking.router import FAST_ROUTES as TRACKING_ROUTES
from app.tracking.router import router as tracking_router
from app.tracking.settings_router import router as tracking_settings_router
from app.webhooks.router import router as webhooks_router
from app.webhooks.sendgrid_router import router as sg_webhooks_router

API_VERSION = "0.1.0"


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for proxy headers: honoured only from COLUMBA_FORWARDED_ALLOW_IPS
    (uvicorn would otherwise believe any local peer, 127.0.0.1 and ::1)."""
    proxies = list(settings.forwarded_allow_ips)
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": proxies}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Columba HTTP API."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(settings)
        app.state.queue = Queue(redis_url_for(settings.redis_url, settings.var_dir))
        # One transaction at a time gathers the most sends per transaction (measured with
        # bench/send.py on PostgreSQL: 1 beat 2 and 4); SQLite takes one writer at a time anyway.
        app.state.committer = SendCommitter(app.state.db, app.state.queue, concurrency=1)
        # Opens, clicks and one-click unsubscribes arriving together share a transaction.
        app.state.tracking_committer = TrackingCommitter(app.state.db)
        app.state.long_polls = LongPolls(
            per_process=settings.long_poll_max, per_key=settings.long_poll_max_per_key
        )
        # Waiting long polls answer as soon as the server is told to stop, rather than hold
        # its graceful shutdown for as long as they were asked to wait.
        forget_exit = on_server_exit(app.state.long_polls.stop)
        cache_ttl = settings.auth_cache_ttl.total_seconds()
        app.state.keys = KeyCache(app.state.db, ttl=cache_ttl)
        cache.configure_account_caches(cache_ttl)
        invalidations = app.state.invalidations = Listener(app.state.queue.redis_url)
        invalidations.start()
        try:
            yield
        finally:
            forget_exit()
            await invalidations.stop()
            await app.state.keys.close()
            await app.state.committer.close()
            await app.state.tracking_committer.close()
            await app.state.queue.close()
            await app.state.db.dispose()
            # Before uvicorn re-raises SIGTERM, which ends the process without atexit.
            release_redis(settings.redis_url, settings.var_dir)

    app = FastAPI(
        title="Columba",
        version=API_VERSION,
        description="Self-hosted transactional email: a SendGrid-style API with its own MTA.",
        lifespan=lifespan,
    )
    # Innermost: the send routes still get the body limit and the rate-limit headers.
    app.add_middleware(
        FastPath, routes={("POST", "/v1/send"): send, ("POST", "/v3/mail/send"): mail_send}
    )
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(GzipRequests, max_bytes=body_limit_for(settings.max_message_size))
    app.add_middleware(BodySizeLimit, max_bytes=body_limit_for(settings.max_message_size))
    # Outermost: the public tracking links carry no key (no rate-limit headers), take no
    # gzip bodies and cap their own small forms, so they skip the three.
    app.add_middleware(FastPath, routes={}, prefixes=TRACKING_ROUTES)
    # Outermost: the request id and the timing cover everything, refusals included.
    app.add_middleware(RequestObserver, log_requests=settings.log_format == "json")
    install_error_handlers(app)
    install_openapi(app, extra_models=[MailSend, SendRequest])
    app.include_router(health_router)
    app.include_router(observability_router)
    app.include_router(messages_router)
    app.include_router(search_router)
    app.include_router(activity_router)
    app.include_router(events_router)
    app.include_router(webhooks_router)
    app.include_router(sg_webhooks_router)
    app.include_router(stats_router)
    app.include_router(stats_segments_router)  # before suppressions: see its docstring
    app.include_router(suppressions_router)
    app.include_router(addresses_router)
    app.include_router(asm_router)
    app.include_router(sendgrid_router)
    app.include_router(batches_router)
    app.include_router(templates_router)
    app.include_router(sendgrid_templates_router)
    app.include_router(inbound_router)
    app.include_router(domains_router)
    app.include_router(sg_domains_router)
    app.include_router(keys_router)
    app.include_router(tracking_router)
    app.include_router(tracking_settings_router)
    install_dashboard(app)
    return app
