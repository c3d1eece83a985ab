"""Dashboard sessions: signing in with an admin key, the session behind a cookie, signing out.

Signing in takes an admin API key once and hands back a random session token for an HTTP-only
cookie; the key itself is never kept. Only the token's SHA-256 is stored, with the id of the key that
opened the session and the session's CSRF token, which every form of the dashboard must send back.

A session is valid until it expires (`SESSION_LIFETIME` after sign-in) or is signed out, and only
while its key is: revoking the admin key ends every session it opened at their next request. All
sessions opened with `AIBUDGET_ADMIN_KEY` share one key id (`env-admin`), so each also keeps the
key's HMAC-SHA256 under the server secret (`env_key_hmac`): it is valid only while the variable holds
that very key — unsetting it or changing it (rotating a leaked key), or changing the server secret,
ends them all. Expired rows are removed at each sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select

from aibudget.auth.service import ENV_ADMIN, Principal, Unauthorized, secret_hash
from aibudget.store import tables

SESSION_LIFETIME = timedelta(hours=12)
sessions = tables.admin_sessions
keys = tables.api_keys


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A signed-in operator: `token` goes in the cookie, `csrf_token` in every form."""

    token: str
    key_id: str
    csrf_token: str
    expires_at: datetime

    def accepts(self, csrf_token: str | None) -> bool:
        """Whether a form's CSRF token is this session's (compared in constant time)."""
        return csrf_token is not None and hmac.compare_digest(csrf_token.encode(), self.csrf_token.encode())


def env_key_hmac(secret: bytes, admin_key: str | None) -> str | None:
    """What sessions keep of `AIBUDGET_ADMIN_KEY` (None when it is unset): its HMAC-SHA256 keyed with
    the server secret, hex — not a plain hash, which would let a copy of the database test guesses of
    a short key."""
    if admin_key is None:
        return None
    return hmac.new(secret, b"env-admin-key:" + admin_key.encode(), hashlib.sha256).hexdigest()


def open_session(
    connection: Connection, principal: Principal, *, now: datetime, env_key: str | None
) -> AdminSession:
    """A new session for an authenticated admin; `Unauthorized` for any other role.

    `env_key`: `env_key_hmac` of the `AIBUDGET_ADMIN_KEY` in force, kept with a session it opens."""
    if principal.role != "admin" or (principal.key_id == ENV_ADMIN and env_key is None):
        raise Unauthorized("the dashboard needs an admin key")
    connection.execute(delete(sessions).where(sessions.c.expires_at <= now))
    session = AdminSession(
        token=secrets.token_urlsafe(32),
        key_id=principal.key_id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + SESSION_LIFETIME,
    )
    connection.execute(
        sessions.insert().values(
            session_hash=secret_hash(session.token),
            key_id=session.key_id,
            env_key_hmac=env_key if session.key_id == ENV_ADMIN else None,
            csrf_token=session.csrf_token,
            created_at=now,
            expires_at=session.expires_at,
        )
    )
    return session


def find_session(
    connection: Connection, token: str | None, *, now: datetime, env_key: str | None
) -> AdminSession | None:
    """The live session behind a cookie's token, or None (unknown, expired, signed out, key revoked or,
    for `AIBUDGET_ADMIN_KEY`, no longer `env_key`: the `env_key_hmac` of the one in force, if any)."""
    if not token:
        return None
    row = connection.execute(
        select(
            sessions.c.key_id,
            sessions.c.env_key_hmac,
            sessions.c.csrf_token,
            sessions.c.expires_at,
            keys.c.key_id.label("known"),
            keys.c.revoked_at,
        )
        .select_from(sessions.outerjoin(keys, keys.c.key_id == sessions.c.key_id))
        .where(sessions.c.session_hash == secret_hash(token), sessions.c.expires_at > now)
    ).first()
    if row is None:
        return None
    if row.key_id == ENV_ADMIN:
        # sessions from before env_key_hmac was kept have none, and end like those of another key
        key_valid = _same(row.env_key_hmac, env_key)
    else:
        key_valid = row.known is not None and row.revoked_at is None
    return AdminSession(token, row.key_id, row.csrf_token, row.expires_at) if key_valid else None


def _same(kept: str | None, current: str | None) -> bool:
    return kept is not None and current is not None and hmac.compare_digest(kept.encode(), current.encode())


def close_session(connection: Connection, token: str) -> None:
    """Sign out: the token signs nobody in any more."""
    connection.execute(delete(sessions).where(sessions.c.session_hash == secret_hash(token)))
