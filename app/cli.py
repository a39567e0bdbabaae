"""The `columba` command: dev, api, worker, smtp, inbound, migrate, keys, domains, doctor,
openapi."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from app.accounts import service as accounts
from app.accounts.scopes import parse_scopes
from app.addresses import service as addresses
from app.common.fields import valid_email
from app.core import migrate, signals
from app.core.config import Settings, UnsafeSettingsError, load_settings
from app.core.db import Database
from app.dev.embedded_redis import redis_url_for, socket_path, stop_embedded_redis
from app.dev.embedded_redis import running_at as embedded_redis_answers
from app.domains import rotation
from app.domains import service as domains
from app.observability import logs
from app.observability.exposition import MULTIPROC_ENV
from app.suppressions.tombstones import tombstone_key

T = TypeVar("T")


def _settings_for_production() -> Settings:
    """Settings from the environment, refusing to go on when they are unsafe."""
    settings = load_settings()
    try:
        settings.check_safe_to_start()
    except UnsafeSettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    return settings


def _run_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` against the database, disposing of the engine afterwards."""

    async def run() -> T:
        database = Database(settings)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def _announce(settings: Settings, kind: str, key: str) -> None:
    """Tell running API and listener processes to drop a cached key or domain at once (their
    caches expire within AUTH_CACHE_TTL anyway: this makes it immediate)."""
    url = settings.redis_url
    if url is None:
        socket = socket_path(settings.var_dir)
        if not embedded_redis_answers(socket):
            return  # no embedded Redis: no process of this data directory runs
        url = f"unix://{socket}"
    asyncio.run(signals.announce_to(url, kind, key))


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(log_level: str) -> None:
    """Columba: self-hosted transactional email."""
    logs.configure(level=log_level, log_format=_log_format())
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # arq logs every job start and end at INFO: with crons every second that drowns what
        # matters. Its warnings and errors still show; --log-level DEBUG shows everything.
        logging.getLogger("arq.worker").setLevel(logging.WARNING)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--smtp-port", default=2525, show_default=True, type=int, help="Capture SMTP port.")
@click.option(
    "--submission-port",
    default=2587,
    show_default=True,
    type=int,
    help="SMTP submission, STARTTLS.",
)
@click.option(
    "--submission-tls-port", default=2465, show_default=True, type=int, help="SMTP submission, TLS."
)
@click.option(
    "--inbound-port",
    default=2526,
    show_default=True,
    type=int,
    help="The bounce and complaint listener (columba inbound).",
)
def dev(
    host: str,
    port: int,
    smtp_port: int,
    submission_port: int,
    submission_tls_port: int,
    inbound_port: int,
) -> None:
    """Everything on this machine: SQLite, embedded Redis, API, worker, SMTP submission, the
    inbound (bounce) listener and a capture SMTP server."""
    from app.dev.server import run_dev  # imported here: it pulls in uvicorn and the worker

    run_dev(
        host=host,
        port=port,
        smtp_port=smtp_port,
        submission_ports=(submission_port, submission_tls_port),
        inbound_port=inbound_port,
    )


def _log_format() -> str:
    """COLUMBA_LOG_FORMAT, `text` when the settings do not load (the command then says why)."""
    try:
        return load_settings().log_format
    except ValueError:
        return "text"


def _metrics_port_option(process: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--metrics-port: /metrics, /healthz and /readyz of `process` on a port of --host."""
    return click.option(
        "--metrics-port",
        default=0,
        show_default=True,
        type=click.IntRange(min=0, max=65535),
        help=f"Serve {process}'s /metrics, /healthz and /readyz on this port of --host; 0 = off.",
    )


def _multiprocess_metrics(workers: int) -> None:
    """Several uvicorn workers share their metrics through files in PROMETHEUS_MULTIPROC_DIR
    (prometheus-client's multiprocess mode): one made for this run unless given, and emptied
    of a previous run's files, which would otherwise be added to this one's."""
    if workers < 2:
        return
    directory = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="columba-metrics-")
    for stale in Path(directory).glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = directory  # read by each worker as it imports prometheus-client


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from app.main import proxy_options

    settings = _settings_for_production()
    _multiprocess_metrics(workers)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # COLUMBA_LOG_FORMAT=json logs each request (columba.http)
        log_config=logs.uvicorn_config(level=level, log_format=settings.log_format),
        # uvicorn's default of 5 s kills a worker still importing the app on a loaded machine,
        # and the next one, and so on (seen with 2 workers on 2 busy cores).
        timeout_worker_healthcheck=30,
        # SIGTERM: stop accepting, give requests in flight this long, then cut them off.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace.total_seconds()),
        **proxy_options(settings),
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="For --metrics-port.")
@_metrics_port_option("the worker")
def worker(host: str, metrics_port: int) -> None:
    """Run a delivery worker (arq) with the sweeper."""
    from worker.settings import build_worker

    settings = _settings_for_production()
    redis_url = redis_url_for(settings.redis_url, settings.var_dir)
    metrics_at = (host, metrics_port) if metrics_port else None
    build_worker(settings, redis_url, metrics_at=metrics_at).run()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=587, show_default=True, type=int, help="STARTTLS; 0 = off.")
@click.option("--tls-port", default=465, show_default=True, type=int, help="TLS; 0 = off.")
@_metrics_port_option("the listener")
def smtp(host: str, port: int, tls_port: int, metrics_port: int) -> None:
    """SMTP submission: user `apikey`, an API key as password, TLS required."""
    from app.submission.server import serve
    from app.submission.tls import TlsSetupError, context_from_settings

    settings = _settings_for_production()
    try:
        tls_context = context_from_settings(settings)
    except TlsSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    if not (port or tls_port):
        raise click.BadParameter("give --port or --tls-port (or both)", param_hint="--port")
    try:
        asyncio.run(
            serve(
                settings,
                tls_context,
                host=host,
                port=port or None,
                tls_port=tls_port or None,
                metrics_port=metrics_port or None,
            )
        )
    finally:
        stop_embedded_redis()


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=25, show_default=True, type=int)
@_metrics_port_option("the listener")
def inbound(host: str, port: int, metrics_port: int) -> None:
    """Receive bounces (DSN and text), complaints (ARF) and everything else returned to the
    bounce domains; every message is stored with what was concluded (GET /v1/inbound)."""
    from app.bounces.inbound import serve_inbound

    settings = _settings_for_production()
    asyncio.run(serve_inbound(settings, host=host, port=port, metrics_port=metrics_port or None))


@main.command(name="migrate")
def migrate_command() -> None:
    """Apply the database migrations."""
    settings = load_settings()
    migrate.upgrade(settings.database_url)
    click.echo(f"database is up to date ({_safe_url(settings.database_url)})")


def _safe_url(url: str) -> str:
    """The URL without a password, for printing."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        rest = credentials.partition(":")[0] + ":***@" + host
    return scheme + sep + rest


@main.group()
def keys() -> None:
    """API keys."""


@keys.command(name="create")
@click.option("--name", required=True, help="A name to recognise the key by.")
@click.option("--scope", "scopes", multiple=True, help="Repeatable; none gives full access.")
@click.option("--account", default=accounts.DEFAULT_ACCOUNT, show_default=True)
@click.option(
    "--smtp-rate-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Messages per minute over SMTP [default: COLUMBA_SUBMISSION_RATE_LIMIT].",
)
def keys_create(
    name: str, scopes: tuple[str, ...], account: str, smtp_rate_limit: int | None
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    try:
        chosen = parse_scopes(scopes) if scopes else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from exc

    async def work(database: Database) -> str:
        async with database.session() as session:
            owner = await accounts.get_or_create_account(session, name=account)
            issued = await accounts.create_key(session, account=owner, name=name, scopes=chosen)
            issued.api_key.smtp_messages_per_minute = smtp_rate_limit
            await session.commit()
            return issued.plaintext

    plaintext = _run_db(load_settings(), work)
    click.echo(plaintext)
    click.echo(
        f"# key {name!r} for account {account!r}, scopes: {', '.join(chosen or ['full access'])}."
        " It is shown only now.",
        err=True,
    )


@keys.command(name="list")
@click.option("--account", default=None, help="Only this account's keys.")
def keys_list(account: str | None) -> None:
    """List keys (prefixes only; secrets are never stored)."""

    async def work(database: Database) -> list[Any]:
        async with database.session() as session:
            owner = await accounts.get_account_by_name(session, name=account) if account else None
            if account and owner is None:
                raise click.ClickException(f"no account named {account!r}")
            return await accounts.list_keys(session, account=owner)

    settings = load_settings()
    for key in _run_db(settings, work):
        state = "revoked" if key.revoked_at else "active"
        scopes = ",".join(key.scopes) if key.scopes is not None else "full access"
        rate = key.smtp_messages_per_minute or settings.submission_rate_limit
        click.echo(f"SG.{key.prefix}.…  {key.name}  {scopes}  {state}  smtp {rate}/min")


@keys.command(name="limit")
@click.argument("prefix")
@click.option(
    "--smtp-rate-limit",
    required=True,
    help="Messages per minute over SMTP, or `default` for COLUMBA_SUBMISSION_RATE_LIMIT.",
)
def keys_limit(prefix: str, smtp_rate_limit: str) -> None:
    """Set a key's SMTP message rate, by its public prefix."""
    prefix = prefix.removeprefix("SG.").split(".")[0]
    if smtp_rate_limit == "default":
        per_minute = None
    elif smtp_rate_limit.isdigit() and int(smtp_rate_limit) >= 1:
        per_minute = int(smtp_rate_limit)
    else:
        raise click.BadParameter("a positive integer or `default`", param_hint="--smtp-rate-limit")

    async def work(database: Database) -> bool:
        async with database.session() as session:
            done = await accounts.set_smtp_rate_limit(session, prefix=prefix, per_minute=per_minute)
            await session.commit()
            return done

    settings = load_settings()
    if not _run_db(settings, work):
        raise click.ClickException(f"no key with prefix {prefix!r}")
    _announce(settings, signals.KEY, prefix)
    click.echo(f"SG.{prefix}: smtp {per_minute or 'default'} messages/min")


@keys.command(name="revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke a key by its public prefix (the part between `SG.` and the second dot)."""
    prefix = prefix.removeprefix("SG.").split(".")[0]

    async def work(database: Database) -> bool:
        async with database.session() as session:
            done = await accounts.revoke_key(session, prefix=prefix)
            await session.commit()
            return done

    settings = load_settings()
    if not _run_db(settings, work):
        raise click.ClickException(f"no active key with prefix {prefix!r}")
    _announce(settings, signals.KEY, prefix)
    click.echo(f"revoked SG.{prefix}")


@main.group(name="addresses")
def addresses_group() -> None:
    """Recipients' addresses (GDPR erasure)."""


@addresses_group.command(name="erase")
@click.argument("email")
@click.option("--account", default=accounts.DEFAULT_ACCOUNT, show_default=True)
def addresses_erase(email: str, account: str) -> None:
    """Erase EMAIL from the account's mail, events and lists (suppressions stay as keyed
    hashes, so mail to it stays dropped); prints the rows touched per table as JSON."""
    try:
        address = valid_email(email)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from exc
    settings = _settings_for_production()

    async def work(database: Database) -> addresses.Erased:
        async with database.session() as session:
            owner = await accounts.get_account_by_name(session, name=account)
        if owner is None:
            raise click.ClickException(f"no account named {account!r}")
        return await addresses.erase(
            database,
            account_id=owner.id,
            email=address,
            actor="cli",
            tombstone_key=tombstone_key(settings.secret_key_bytes()),
        )

    erased = _run_db(settings, work)
    click.echo(json.dumps({"erasure_id": erased.id, "counts": erased.counts}, indent=2))


@main.group(name="domains")
def domains_group() -> None:
    """Sending domains."""


@domains_group.command(name="add")
@click.argument("domain")
@click.option("--account", default=accounts.DEFAULT_ACCOUNT, show_default=True)
@click.option("--ed25519", is_flag=True, help="Also sign with an Ed25519 key (RFC 8463).")
def domains_add(domain: str, account: str, ed25519: bool) -> None:
    """Create a DKIM key for DOMAIN and print the DNS records to publish."""
    settings = _settings_for_production()

    async def work(database: Database) -> tuple[str, list[domains.DnsRecord]]:
        async with database.session() as session:
            owner = await accounts.get_or_create_account(session, name=account)
            try:
                added = await domains.add_domain(
                    session,
                    account=owner,
                    name=domain,
                    secret_key=settings.secret_key_bytes(),
                    ed25519=ed25519,
                )
            except domains.DomainExistsError as exc:
                raise click.ClickException(f"{exc} is already a domain of {account!r}") from exc
            await session.commit()
            return owner.id, domains.dns_records(
                added, hostname=settings.hostname, inbound_host=settings.inbound_hostname
            )

    owner_id, records = _run_db(settings, work)
    _announce(settings, signals.DOMAINS, owner_id)
    click.echo(f"Added {domain} to account {account!r}. Publish these DNS records:\n")
    _print_records(records)
    click.echo(f"\nThen run: columba domains verify {domain} --account {account}")


def _print_records(records: list[domains.DnsRecord]) -> None:
    for record in records:
        click.echo(f"; {record.purpose}")
        value = record.value if record.type == "MX" else f'"{record.value}"'
        click.echo(f"{record.name}.  IN  {record.type}  {value}")


@domains_group.command(name="list")
@click.option("--account", default=None, help="Only this account's domains.")
def domains_list(account: str | None) -> None:
    """List sending domains with their verification state and DNS records."""
    settings = load_settings()

    async def work(database: Database) -> list[tuple[Any, list[Any]]]:
        async with database.session() as session:
            owner = await accounts.get_account_by_name(session, name=account) if account else None
            if account and owner is None:
                raise click.ClickException(f"no account named {account!r}")
            found = await domains.list_domains(session, account_id=owner.id if owner else None)
            return [(d, await rotation.keys_of(session, d.id)) for d in found]

    for found, keys in _run_db(settings, work):
        state = "verified" if found.verified_at else "not verified"
        checked = found.last_checked_at.isoformat() if found.last_checked_at else "never"
        click.echo(f"{found.name}  selector={found.dkim_selector}  {state}  checked {checked}")
        _print_records(
            domains.dns_records(
                found, hostname=settings.hostname, keys=keys, inbound_host=settings.inbound_hostname
            )
        )
        click.echo()


def _find_domain_work(
    domain: str, account: str, then: Callable[[Any, Any], Awaitable[T]]
) -> Callable[[Database], Awaitable[T]]:
    """Database work on the account's domain called DOMAIN, committed afterwards."""

    async def work(database: Database) -> T:
        async with database.session() as session:
            owner = await accounts.get_account_by_name(session, name=account)
            name = domains.normalize_domain_name(domain)
            found = (
                await domains.get_domain(session, account_id=owner.id, name=name) if owner else None
            )
            if found is None:
                raise click.ClickException(f"{domain} is not a domain of account {account!r}")
            result = await then(session, found)
            await session.commit()
            return result

    return work


@domains_group.command(name="verify")
@click.argument("domain")
@click.option("--account", default=accounts.DEFAULT_ACCOUNT, show_default=True)
def domains_verify(domain: str, account: str) -> None:
    """Check every DNS record of DOMAIN (DKIM, SPF, bounce MX and SPF, DMARC), and mark it
    verified when the DKIM records it signs with are published. Exits 1 when it is not."""
    from app.delivery.resolver import make_resolver
    from app.domains import verification

    settings = load_settings()

    owners: list[str] = []

    async def check(session: Any, found: Any) -> Any:
        owners.append(found.account_id)
        resolver = make_resolver(
            settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds()
        )
        context = await verification.check_context(settings, resolver)
        return await verification.verify(
            session,
            resolver=resolver,
            domain=found,
            context=context,
            grace=settings.dkim_rotation_grace,
        )

    report = _run_db(settings, _find_domain_work(domain, account, check))
    _announce(settings, signals.DOMAINS, owners[0])  # verified or no longer: say so at once
    click.echo(f"{report.domain}: {'verified' if report.verified else 'NOT verified'}")
    for line in describe_records(report.records):
        click.echo(line)
    if not report.verified:
        sys.exit(1)


def describe_records(records: list[Any]) -> list[str]:
    """Each record's verdict, with what was found and what is expected when not valid."""
    lines = []
    for record in records:
        required = " (required)" if record.required else ""
        lines.append(f"  [{record.status:<7}] {record.type:<3} {record.name}{required}")
        lines.append(f"            {record.detail}")
        if record.status != "valid":
            lines.append(f"            expected: {record.expected}")
            for value in record.found:
                lines.append(f"            found:    {value}")
    return lines


@domains_group.command(name="rotate-dkim")
@click.argument("domain")
@click.option("--account", default=accounts.DEFAULT_ACCOUNT, show_default=True)
def domains_rotate_dkim(domain: str, account: str) -> None:
    """Generate DOMAIN's next DKIM key(s) and print the records to publish. The new selector
    signs once `columba domains verify` (or the daily check) finds its record; the old one
    stays published for COLUMBA_DKIM_ROTATION_GRACE, then is retired."""
    settings = _settings_for_production()

    async def rotate(session: Any, found: Any) -> list[Any]:
        try:
            return await rotation.start_rotation(
                session, domain=found, secret_key=settings.secret_key_bytes()
            )
        except rotation.RotationInProgress as exc:
            raise click.ClickException(
                f"{exc} already has a new key waiting for its DNS record: publish it and run "
                f"columba domains verify {domain}"
            ) from exc

    pending = _run_db(settings, _find_domain_work(domain, account, rotate))
    click.echo(f"New DKIM key(s) for {domain}. Publish, beside the current ones:\n")
    _print_records(
        [
            domains.DnsRecord(
                "TXT", f"{key.selector}._domainkey.{domains.normalize_domain_name(domain)}",
                key.public_record, f"DKIM {key.algorithm} (next key)",
            )
            for key in pending
        ]
    )  # fmt: skip
    click.echo(
        f"\nThe new key signs once its record verifies: columba domains verify {domain} "
        f"--account {account}. Keep the old record published until then and for "
        f"{settings.dkim_rotation_grace.days} days after."
    )


@main.command()
@click.option("--offline", is_flag=True, help="Skip DNSBL look-ups and the port 25 probe.")
def doctor(offline: bool) -> None:
    """Check what sending depends on (reverse DNS, blocklists, port 25, every domain's
    records, the listener's certificate, settings) and print what to fix."""
    from app.delivery.resolver import make_resolver
    from app.domains.doctor import Status, examine, render

    settings = load_settings()

    async def work(database: Database) -> list[Any]:
        resolver = make_resolver(
            settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds()
        )
        return await examine(settings, database, resolver, offline=offline)

    findings = _run_db(settings, work)
    for line in render(findings):
        click.echo(line)
    failed = sum(1 for f in findings if f.status is Status.FAIL)
    warned = sum(1 for f in findings if f.status is Status.WARN)
    click.echo(f"\n{failed} to fix, {warned} to look at, {len(findings) - failed - warned} fine")
    if failed:
        sys.exit(1)


@main.command()
def openapi() -> None:
    """Print the OpenAPI description (what openapi/openapi.json holds)."""
    from app.main import create_app

    schema = create_app(Settings(dev_mode=True)).openapi()
    click.echo(json.dumps(schema, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
