"""Dashboard sessions: signing in with an admin key, the session behind a cookie, signing out.

Signing in takes an admin API key once and hands back a random session token for an HTTP-only
cookie; the key itself is never kept. Only the token's SHA-256 is stored, with the id of the key that
opened the session and the session's CSRF token, which every form of the dashboard must send back.

A session is valid until it expires (`SESSION_LIFETIME` after sign-in) or is signed out, and only
while its key is: revoking the admin key, or unsetting `AIBUDGET_ADMIN_KEY` for the key it stands for,
ends every session it opened at their next request. Expired rows are removed at each sign-in.
"""

from __future__ import annotations

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


def open_session(connection: Connection, principal: Principal, *, now: datetime) -> AdminSession:
    """A new session for an authenticated admin; `Unauthorized` for any other role."""
    if principal.role != "admin":
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
            csrf_token=session.csrf_token,
            created_at=now,
            expires_at=session.expires_at,
        )
    )
    return session


def find_session(
    connection: Connection, token: str | None, *, now: datetime, env_admin_set: bool
) -> AdminSession | None:
    """The live session behind a cookie's token, or None (unknown, expired, signed out, key revoked)."""
    if not token:
        return None
    row = connection.execute(
        select(
            sessions.c.key_id,
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
    key_valid = env_admin_set if row.key_id == ENV_ADMIN else row.known is not None and row.revoked_at is None
    return AdminSession(token, row.key_id, row.csrf_token, row.expires_at) if key_valid else None


def close_session(connection: Connection, token: str) -> None:
    """Sign out: the token signs nobody in any more."""
    connection.execute(delete(sessions).where(sessions.c.session_hash == secret_hash(token)))
