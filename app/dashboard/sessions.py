"""Dashboard sessions: an encrypted cookie that names a key (never holds it), a CSRF token
bound to it, and the single-use sign-in links of `columba dev`."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.fernet import InvalidToken

from app.core import clock
from app.core.encryption import decrypt, encrypt

SESSION_COOKIE = "columba_session"
SIGNIN_CSRF_COOKIE = "columba_signin_csrf"
SESSION_LIFETIME = timedelta(hours=8)
SIGNIN_LINK_LIFETIME = timedelta(minutes=10)
_PURPOSE = "dashboard-session"


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """Who is signed in (by key id: the key itself stays with its owner) until when."""

    api_key_id: str
    csrf: str
    expires_at: float  # Unix time

    def csrf_matches(self, presented: str | None) -> bool:
        """True for this session's token (compared in constant time)."""
        return presented is not None and hmac.compare_digest(self.csrf, presented)


def new_session(api_key_id: str, lifetime: timedelta = SESSION_LIFETIME) -> DashboardSession:
    """A session for a key that just signed in, with a fresh CSRF token."""
    expires = clock.now() + lifetime
    return DashboardSession(api_key_id, secrets.token_urlsafe(32), expires.timestamp())


def seal(secret_key: bytes, session: DashboardSession) -> str:
    """The cookie value: authenticated encryption, so it can be neither read nor forged."""
    payload = {"k": session.api_key_id, "c": session.csrf, "x": session.expires_at}
    return encrypt(secret_key, json.dumps(payload).encode(), purpose=_PURPOSE).decode()


def unseal(secret_key: bytes, cookie: str | None) -> DashboardSession | None:
    """The session in a cookie; None when absent, forged, tampered with or expired."""
    if not cookie:
        return None
    try:
        payload = json.loads(decrypt(secret_key, cookie.encode(), purpose=_PURPOSE))
        session = DashboardSession(str(payload["k"]), str(payload["c"]), float(payload["x"]))
    except (InvalidToken, ValueError, KeyError, TypeError):
        return None
    return session if session.expires_at > clock.now().timestamp() else None


class SignInLinks:
    """Single-use sign-in tokens of `columba dev`, kept in this process only: the dev server
    is one process, and a token that dies with it is what a one-time link should do."""

    def __init__(self, lifetime: timedelta = SIGNIN_LINK_LIFETIME) -> None:
        self.lifetime = lifetime
        self._tokens: dict[str, tuple[str, float]] = {}

    def issue(self, key_prefix: str) -> str:
        """A token that signs in as the key with this public prefix, once."""
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (key_prefix, (clock.now() + self.lifetime).timestamp())
        return token

    def redeem(self, token: str) -> str | None:
        """The key prefix of an unused, unexpired token; the token is spent either way."""
        found = self._tokens.pop(token, None)
        if found is None or found[1] <= clock.now().timestamp():
            return None
        return found[0]
