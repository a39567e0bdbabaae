"""Sending domains, cached per process for at most AUTH_CACHE_TTL (≤ 1 s).

Every send asks which of its account's domains covers the From address; the answer changes
only when a domain is added, verified or removed, which announces an invalidation
(app/core/signals.py). Only found domains are cached, so a domain added a moment ago is found
at once. The cached objects are detached from any session and only read.
"""

from __future__ import annotations

from app.core.cache import AccountCache
from app.core.signals import DOMAINS
from app.domains.models import Domain

# (account id, From domain) → the sending domain that covers it; one per process, like the
# engine's connection pool.
sending_domains: AccountCache[tuple[str, str], Domain] = AccountCache(DOMAINS)
