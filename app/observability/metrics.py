"""Every Prometheus metric of Columba, in one place and one scheme.

Names follow Prometheus' conventions: the `columba_` prefix, base units (`_seconds`), and
counters exposed with `_total` (prometheus-client appends it). Labels are bounded: a status,
a reply class, a classification bucket, a provider out of a fixed list, a route template;
never an address, a domain of a recipient or an id. In a process started with
PROMETHEUS_MULTIPROC_DIR set (`columba api --workers N`), prometheus-client keeps each value in
a file of that directory and the scrape adds them up (app/observability/exposition.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.observability.providers import OTHER, PROVIDERS

# HTTP API --------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "columba_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "columba_http_request_duration_seconds",
    "Time from a request's first byte to its response, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0),
)

# Accepting -------------------------------------------------------------------------------------
MESSAGES_ACCEPTED = Counter(
    "columba_messages_accepted", "Messages accepted (committed) for delivery."
)
RECIPIENTS_ACCEPTED = Counter(
    "columba_recipients_accepted",
    "Recipients of accepted messages, by their first status (queued, scheduled, dropped, …).",
    ["status"],
)

# Delivering ------------------------------------------------------------------------------------
RECIPIENTS_FINAL = Counter(
    "columba_recipients_final",
    "Recipients that reached a final status (delivered, bounced, expired, dropped).",
    ["status"],
)
DEFERRALS = Counter(
    "columba_deferrals",
    "Delivery attempts deferred, by classification (SendGrid's buckets) and provider.",
    ["classification", "provider"],
)
BOUNCES = Counter(
    "columba_bounces",
    "Recipients bounced, by kind (hard, soft, block), classification and provider.",
    ["kind", "classification", "provider"],
)
SMTP_REPLIES = Counter(
    "columba_smtp_replies",
    "Final SMTP replies per recipient attempt, by class (2xx, 4xx, 5xx).",
    ["class"],
)
DELIVERY_LATENCY = Histogram(
    "columba_delivery_latency_seconds",
    "From a message's acceptance to its recipient's 250 (delivered recipients).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)
SMTP_CONNECTIONS = Gauge(
    "columba_smtp_connections",
    "Outbound SMTP connections open now, by provider.",
    ["provider"],
    multiprocess_mode="livesum",
)
THROTTLE_WAITS = Counter(
    "columba_throttle_waits",
    "Times a delivery waited for (or was refused) a destination's connection slot or rate.",
    ["provider"],
)
DKIM_SIGNING = Histogram(
    "columba_dkim_signing_seconds",
    "Time to DKIM-sign one distinct copy of a message.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)

# Webhooks --------------------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "columba_webhook_deliveries",
    "Webhook batch POSTs, by outcome (success, client_error, server_error, error).",
    ["outcome"],
)

# Inbound (columba inbound) ---------------------------------------------------------------------
INBOUND_MESSAGES = Counter(
    "columba_inbound_messages",
    "Messages the inbound listener stored, by what was concluded.",
    ["outcome", "bounce_type"],
)
INBOUND_STORE_FAILURES = Counter(
    "columba_inbound_store_failures",
    "Messages answered 451 because they could not be stored.",
)

# Sending domains -------------------------------------------------------------------------------
DOMAIN_CHECKS = Counter(
    "columba_domain_checks", "Domain DNS verifications, by outcome.", ["outcome"]
)
DOMAIN_VERIFICATION_LOST = Counter(
    "columba_domain_verification_lost",
    "Domains that stopped being verified because a DKIM record they sign with failed.",
)


def prime() -> None:
    """Every series with a small fixed label set at zero, so that a dashboard (and an alert
    on `rate()`) sees it before its first event."""
    for provider in (*(name for name, _ in PROVIDERS), OTHER):
        SMTP_CONNECTIONS.labels(provider)
        THROTTLE_WAITS.labels(provider)
    for status in ("delivered", "bounced", "expired", "dropped"):
        RECIPIENTS_FINAL.labels(status)
    for reply_class in ("2xx", "4xx", "5xx"):
        SMTP_REPLIES.labels(reply_class)
    for outcome in ("success", "client_error", "server_error", "error"):
        WEBHOOK_DELIVERIES.labels(outcome)
    for status in ("queued", "scheduled", "dropped"):
        RECIPIENTS_ACCEPTED.labels(status)


prime()
