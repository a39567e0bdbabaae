"""Settings: one validated object read from the environment (prefix `COLUMBA_`)."""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.durations import parse_duration, parse_schedule
from app.delivery.throttle import DestinationLimits

DEFAULT_RETRY_SCHEDULE = "5m,10m,20m,40m,1h"
MIN_SECRET_KEY_LENGTH = 32

Duration = Annotated[timedelta, NoDecode]
CommaList = Annotated[tuple[str, ...], NoDecode]


class UnsafeSettingsError(RuntimeError):
    """Raised at start when settings are unsafe outside `columba dev`."""


class Settings(BaseSettings):
    """Every setting of Columba; names and defaults are fixed by ARCHITECTURE.md §5."""

    model_config = SettingsConfigDict(env_prefix="COLUMBA_", extra="ignore", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./var/columba.db"
    redis_url: str | None = None
    secret_key: SecretStr | None = None
    hostname: str = Field(default_factory=socket.getfqdn)
    public_url: str = "http://127.0.0.1:8000"
    dns_nameservers: CommaList = ()
    mx_port: int = Field(default=25, ge=1, le=65535)
    relay_url: str | None = None
    retry_schedule: Annotated[tuple[timedelta, ...], NoDecode] = parse_schedule(
        DEFAULT_RETRY_SCHEDULE
    )
    max_message_age: Duration = timedelta(days=5)
    require_verified_domains: bool = True
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    allow_private_destinations: bool = False
    # Peers (IPs or networks, `*` for any) whose X-Forwarded-For / X-Forwarded-Proto the API
    # believes: the proxies in front of it. None by default, so a client cannot choose the
    # address that per-address rate limits count against.
    forwarded_allow_ips: CommaList = ()

    var_dir: Path = Path("./var")
    dev_mode: bool = False
    max_message_size: int = Field(default=30 * 1024 * 1024, ge=1024)
    lease_duration: Duration = timedelta(minutes=15)
    # A recipient whose lease runs out this many times in a row without an outcome (its
    # worker died each time it had it) is dropped rather than crash the next worker too. At
    # least 2: a worker's death counts against everything it had in flight, and only the
    # last chance is given alone (app.messages.dispatch.claim).
    max_lease_expiries: int = Field(default=3, ge=2)
    sweep_interval: Duration = timedelta(seconds=5)
    # On SIGTERM (or SIGINT) every process stops taking new work at once and gives what it
    # has in hand this long to finish: a worker's SMTP transactions in flight, the API's
    # requests, the SMTP listeners' open sessions. Then it aborts what is left (a worker
    # hands those recipients back) and exits. A second signal ends the process at once.
    shutdown_grace: Duration = timedelta(seconds=30)
    smtp_connect_timeout: Duration = timedelta(seconds=30)
    smtp_greeting_timeout: Duration = timedelta(minutes=5)
    smtp_command_timeout: Duration = timedelta(minutes=5)
    smtp_data_timeout: Duration = timedelta(minutes=10)
    dns_timeout: Duration = timedelta(seconds=10)
    worker_max_jobs: int = Field(default=20, ge=1)
    worker_capacity: int = Field(default=500, ge=1)
    worker_batch_size: int = Field(default=100, ge=1)
    smtp_max_recipients: int = Field(default=100, ge=1, le=1000)
    smtp_idle_timeout: Duration = timedelta(seconds=30)
    smtp_max_messages_per_connection: int = Field(default=100, ge=1)
    destination_max_connections: int = Field(default=20, ge=1)
    destination_rate: float = Field(default=0.0, ge=0.0)
    throttle_wait: Duration = timedelta(seconds=10)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    # `pgbouncer`: COLUMBA_DATABASE_URL points at a pooler in transaction mode (PgBouncer's
    # `pool_mode = transaction`, before 1.21's prepared-statement support): asyncpg and
    # SQLAlchemy then cache no prepared statements and give the ones they must make unique
    # names, since consecutive transactions of one client run on different server connections.
    # `none` (the default): a direct connection, or a pooler in session mode.
    database_pooler: Literal["none", "pgbouncer"] = "none"
    # SQLite only: `full` makes every commit (every 202) survive a power failure; `normal`
    # is faster but may lose the last commits to one (a process crash loses nothing).
    sqlite_synchronous: Literal["full", "normal"] = "full"
    # Long polls (GET /v1/events?wait=) waiting at once in one API process, and per API key.
    long_poll_max: int = Field(default=50, ge=1)
    long_poll_max_per_key: int = Field(default=5, ge=1)
    max_schedule_ahead: Duration = timedelta(days=7)
    # Recipients still paused this long after they were due expire (SendGrid: 72 hours).
    paused_expiry: Duration = timedelta(hours=72)
    template_render_timeout: Duration = timedelta(seconds=2)
    template_max_output: int = Field(default=1024 * 1024, ge=1024)
    idempotency_ttl: Duration = timedelta(hours=24)
    # Messages (with their recipients, attempts and events) whose recipients are all final,
    # and finished webhook batches, are deleted once older than this; 0 keeps everything.
    retention: Duration = timedelta(days=30)
    # A finished message's content (bodies, attachments, raw MIME, template data and each
    # recipient's personalization) is removed once older than this, while the message row,
    # its recipients' statuses, attempts and events stay until RETENTION. Unset: the same as
    # RETENTION; 0 keeps content as long as the message. At most RETENTION.
    content_retention: Duration | None = None
    idempotency_lock: Duration = timedelta(seconds=60)
    rate_limit: str = "10000/1m"
    # How long a process may use a cached API key, account, sending domain or tracking settings
    # (app/core/cache.py): the bound on how late a revocation or change takes effect everywhere.
    # At most 1 second; 0 disables.
    auth_cache_ttl: Duration = Field(default=timedelta(seconds=1), le=timedelta(seconds=1))
    # How long a dashboard sign-in lasts (the key is checked on every page all the same).
    dashboard_session_lifetime: Duration = Field(default=timedelta(hours=8), gt=timedelta(0))
    # SMTP submission (`columba smtp`): limits and protections of a public listener.
    submission_rate_limit: int = Field(default=100, ge=1)  # messages per minute per key
    submission_max_recipients: int = Field(default=1000, ge=1)
    submission_auth_max_failures: int = Field(default=5, ge=1)  # per client IP
    submission_auth_max_key_failures: int = Field(default=10, ge=1)  # per API key and network
    submission_auth_lockout: Duration = timedelta(minutes=15)
    submission_bare_line_endings: Literal["normalize", "reject"] = "normalize"
    submission_idle_timeout: Duration = timedelta(minutes=5)  # RFC 5321 §4.5.3.2.7
    # Open sessions per listener process: per client IP (Postfix's smtpd default is 50) and
    # in all, so that one client cannot take every file descriptor.
    submission_max_connections_per_ip: int = Field(default=50, ge=1)
    submission_max_connections: int = Field(default=1000, ge=1)

    webhook_timeout: Duration = timedelta(seconds=10)
    webhook_poll_interval: Duration = timedelta(seconds=1)
    webhook_retry_min: Duration = timedelta(seconds=5)
    webhook_retry_max_interval: Duration = timedelta(hours=6)
    webhook_retry_period: Duration = timedelta(days=3)
    webhook_disable_after_failures: int = Field(default=25, ge=1)
    webhook_batch_size: int = Field(default=100, ge=1, le=100)
    webhook_concurrency: int = Field(default=20, ge=1)
    max_webhooks: int = Field(default=10, ge=1)  # endpoints per account
    webhook_replay_max_events: int = Field(default=10_000, ge=1)  # queued by one replay
    inbound_max_message_size: int = Field(default=10 * 1024 * 1024, ge=1024)
    # A woken worker waits this long for more wake-ups before it claims, so that messages
    # trickling in are claimed (and recorded) together; 0 claims at once.
    worker_claim_gather_ms: int = Field(default=5, ge=0, le=1000)
    # Messages a worker keeps loaded (for their recipients claimed in later batches): at
    # most this many megabytes, each for at most a minute.
    worker_message_cache_mb: int = Field(default=32, ge=0)
    # Of each message `columba inbound` receives, this many bytes are kept (GET /v1/inbound).
    inbound_store_max_size: int = Field(default=256 * 1024, ge=1024)

    # Deliverability (issue 16). The addresses mail leaves from (SPF and the doctor check
    # them); unset: the addresses HOSTNAME resolves to.
    sending_ips: CommaList = ()
    # Where the bounce domains' MX records must point (`columba inbound`); unset: HOSTNAME.
    inbound_hostname: str | None = None
    domain_check_interval: Duration = timedelta(days=1)  # the cron re-verifies this often
    dkim_rotation_grace: Duration = timedelta(days=7)  # a replaced selector stays published
    dkim_rotate_after: Duration = timedelta(0)  # rotate keys this old; 0: only when asked
    # Extra trust anchors (PEM) for MX certificates and MTA-STS policy hosts, on top of the
    # system's: a private PKI, or the tests' CA.
    tls_ca_file: Path | None = None
    # Per-destination TLS requirements, like Postfix's smtp_tls_policy_maps:
    # `example.com=verify, .example.org=encrypt` (`.x` covers subdomains; `may` is the default).
    destination_tls: CommaList = ()
    mta_sts: bool = True  # honour receivers' MTA-STS policies (RFC 8461)
    mta_sts_port: int = Field(default=443, ge=1, le=65535)  # tests serve policies elsewhere
    mta_sts_timeout: Duration = timedelta(seconds=10)
    tls_rpt: bool = True  # send daily TLS reports (RFC 8460) to domains that ask for them
    tls_rpt_from: str | None = None  # unset: tls-reports@HOSTNAME
    # DNS blocklists `columba doctor` asks about the sending IPs.
    dnsbl_zones: CommaList = ("zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net")
    # Where `columba doctor` tests that outbound port 25 is open (host:port).
    port25_probe: str = "gmail-smtp-in.l.google.com:25"
    # `text` for people, `json` for one object per line (with a line per request, delivery
    # attempt, webhook delivery and inbound message).
    log_format: Literal["text", "json"] = "text"
    # Client addresses (IPs or networks) that may scrape /metrics without a key: the
    # Prometheus of the internal network. Anyone else needs a key with `metrics.read`.
    metrics_allow_ips: CommaList = ()

    @field_validator(
        "dns_nameservers",
        "forwarded_allow_ips",
        "metrics_allow_ips",
        "sending_ips",
        "destination_tls",
        "dnsbl_zones",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(
                        f"COLUMBA_FORWARDED_ALLOW_IPS: {entry!r} is not an IP address, a network "
                        "such as 10.0.0.0/8, or *"
                    ) from exc
        return value

    @field_validator("metrics_allow_ips")
    @classmethod
    def _check_metrics_ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"COLUMBA_METRICS_ALLOW_IPS: {entry!r} is not an IP address or a network "
                    "such as 10.0.0.0/8"
                ) from exc
        return value

    @field_validator("destination_tls")
    @classmethod
    def _check_destination_tls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from app.delivery.tls_policy import DestinationTable  # it imports the SMTP client

        try:
            DestinationTable(value)
        except ValueError as exc:
            raise ValueError(f"COLUMBA_DESTINATION_TLS: {exc}") from exc
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        return parse_schedule(value) if isinstance(value, str) else value

    @field_validator(
        "max_message_age",
        "lease_duration",
        "sweep_interval",
        "shutdown_grace",
        "smtp_connect_timeout",
        "smtp_greeting_timeout",
        "smtp_command_timeout",
        "smtp_data_timeout",
        "dns_timeout",
        "smtp_idle_timeout",
        "throttle_wait",
        "webhook_timeout",
        "webhook_poll_interval",
        "webhook_retry_min",
        "webhook_retry_max_interval",
        "webhook_retry_period",
        "max_schedule_ahead",
        "paused_expiry",
        "template_render_timeout",
        "idempotency_ttl",
        "idempotency_lock",
        "retention",
        "content_retention",
        "submission_auth_lockout",
        "submission_idle_timeout",
        "auth_cache_ttl",
        "dashboard_session_lifetime",
        "domain_check_interval",
        "dkim_rotation_grace",
        "dkim_rotate_after",
        "mta_sts_timeout",
        mode="before",
    )
    @classmethod
    def _parse_duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _retention_outlives_webhook_retries(self) -> Settings:
        # Events still waiting for a webhook retry must not be deleted under it.
        if self.retention and self.retention < self.webhook_retry_period:
            raise ValueError(
                "COLUMBA_RETENTION must be 0 (keep everything) or at least "
                "COLUMBA_WEBHOOK_RETRY_PERIOD"
            )
        return self

    @model_validator(mode="after")
    def _content_goes_before_its_message(self) -> Settings:
        # Content outliving its message would be kept by nothing: say so rather than ignore it.
        content = self.content_retention
        if content and self.retention and content > self.retention:
            raise ValueError(
                "COLUMBA_CONTENT_RETENTION must be at most COLUMBA_RETENTION (or 0: keep content "
                "as long as the message)"
            )
        return self

    @property
    def content_retention_period(self) -> timedelta:
        """How long a finished message keeps its content; 0: as long as the message."""
        return self.retention if self.content_retention is None else self.content_retention

    @field_validator("relay_url")
    @classmethod
    def _check_relay_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
                raise ValueError("COLUMBA_RELAY_URL must look like smtp://[user:pass@]host:port")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @property
    def rate_limit_rule(self) -> RateLimitRule | None:
        """Requests allowed per API key per window; None when limiting is off."""
        return parse_rate_limit(self.rate_limit)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded database."""
        return self.database_url.startswith("sqlite")

    @property
    def destination_limits(self) -> DestinationLimits:
        """The budget of a destination without a provider rule."""
        return DestinationLimits(
            max_connections=self.destination_max_connections,
            rate=self.destination_rate,
            burst=max(1, int(self.destination_rate * 2)),
        )

    @property
    def relay(self) -> Relay | None:
        """The smarthost every message goes through, when one is configured."""
        return Relay.from_url(self.relay_url) if self.relay_url else None

    def secret_key_bytes(self) -> bytes:
        """The secret key; callers run after `check_safe_to_start`, so it is present."""
        if self.secret_key is None:
            raise UnsafeSettingsError("COLUMBA_SECRET_KEY is not set")
        return self.secret_key.get_secret_value().encode()

    def problems(self) -> list[str]:
        """Reasons these settings are unsafe for a production start (empty when fine)."""
        if self.dev_mode:
            return []
        found: list[str] = []
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key:
            found.append(
                "COLUMBA_SECRET_KEY is not set: it encrypts DKIM keys and signs tokens. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        elif len(key) < MIN_SECRET_KEY_LENGTH:
            found.append(
                f"COLUMBA_SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters; "
                "use a long random value"
            )
        if "." not in self.hostname.strip("."):
            found.append(
                f"COLUMBA_HOSTNAME is {self.hostname!r}, not a fully qualified domain name: "
                "receiving servers reject such EHLO names; set e.g. "
                "COLUMBA_HOSTNAME=mail.example.com"
            )
        return found

    def check_safe_to_start(self) -> None:
        """Refuse to start with unsafe production settings, saying what to change."""
        found = self.problems()
        if found:
            raise UnsafeSettingsError(
                "refusing to start with unsafe settings:\n  - " + "\n  - ".join(found)
            )


@dataclass(frozen=True, slots=True)
class Relay:
    """A smarthost parsed from COLUMBA_RELAY_URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Relay:
        """Parse `smtp://[user:pass@]host:port` (smtps:// for implicit TLS)."""
        parts = urlsplit(url)
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "",
            port=parts.port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=tls,
        )


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """At most `requests` per `window_seconds`, per API key."""

    requests: int
    window_seconds: int


@functools.lru_cache(maxsize=64)
def parse_rate_limit(value: str) -> RateLimitRule | None:
    """`600/1m`, `100/1s` or `off`."""
    if value.strip().lower() == "off":
        return None
    count, slash, window = value.partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise ValueError("COLUMBA_RATE_LIMIT must look like 600/1m (requests/window) or off")
    seconds = int(parse_duration(window.strip()).total_seconds())
    if seconds < 1:
        raise ValueError("the rate limit window must be at least one second")
    return RateLimitRule(requests=int(count), window_seconds=seconds)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (used by `columba dev` and tests)."""
    return Settings(**overrides)
