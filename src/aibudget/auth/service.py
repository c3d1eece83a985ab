"""API keys: random, shown once, stored as SHA-256, compared in constant time.

A key reads `aib_<key id>_<secret>`: the key id (16 hex characters) finds the row, the SHA-256 of
the whole key must match the stored hash. Roles (SPEC §7): `admin` everything; `service` (the
vendor's backend) gates and settles for any practice and reads budgets; `practice` does the same for
its one practice only. `AIBUDGET_ADMIN_KEY`, when set, is accepted as an admin key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Connection, Row

from aibudget.accounts.service import get_practice
from aibudget.auth import repository
from aibudget.errors import AibudgetError, InvalidInput, NotFound

Role = Literal["admin", "service", "practice"]
ROLES: tuple[Role, ...] = ("admin", "service", "practice")
_KEY_ID = "[0-9a-f]{16}"
_KEY = re.compile(rf"aib_({_KEY_ID})_[A-Za-z0-9_-]{{32,64}}")
ENV_ADMIN = "env-admin"  # the key id reported for AIBUDGET_ADMIN_KEY


class Unauthorized(AibudgetError):
    """No key, an unknown key or a revoked key."""

    code = "UNAUTHORIZED"
    http_status = 401
    title = "Unauthorized"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling."""

    key_id: str
    role: Role
    practice_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    role: str
    practice_id: str | None
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


def secret_hash(key: str) -> str:
    """How a key or token is stored and compared: SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(row.key_id, row.role, row.practice_id, row.label, row.created_at, row.revoked_at)


def create_key(
    connection: Connection,
    *,
    role: str,
    practice_id: str | None = None,
    label: str | None = None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key and its secret text, which is never stored and cannot be shown again."""
    if role not in ROLES:
        raise InvalidInput(f"role: {role!r} is not one of {', '.join(ROLES)}", field="role")
    if (role == "practice") != (practice_id is not None):
        raise InvalidInput("practice_id is required for a practice key and only for it", field="practice_id")
    if practice_id is not None:
        get_practice(connection, practice_id)
    if label is not None and (
        not isinstance(label, str) or not 1 <= len(label) <= 200 or not label.isprintable()
    ):
        raise InvalidInput("label must be 1-200 printable characters", field="label")
    key_id = secrets.token_hex(8)
    key = f"aib_{key_id}_{secrets.token_urlsafe(32)}"
    values = {"key_id": key_id, "key_hash": secret_hash(key), "role": role, "practice_id": practice_id,
              "label": label, "created_at": now}  # fmt: skip
    repository.insert_key(connection, values)
    return ApiKey(key_id, role, practice_id, label, now, None), key


def authenticate(connection: Connection, presented: str | None, *, admin_key: str | None = None) -> Principal:
    """The principal a presented key stands for; `Unauthorized` otherwise (never says why in detail)."""
    if not presented:
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    if admin_key is not None and hmac.compare_digest(presented.encode(), admin_key.encode()):
        return Principal(ENV_ADMIN, "admin")
    match = _KEY.fullmatch(presented)
    found = repository.key_for_check(connection, match.group(1)) if match else None
    # compare a hash even when nothing was found, so timing does not tell a missing id from a bad secret
    stored_hash = found[0] if found else "0" * 64
    if not hmac.compare_digest(secret_hash(presented), stored_hash) or found is None or found[3] is not None:
        raise Unauthorized("this API key is not valid or was revoked")
    assert match is not None
    return Principal(match.group(1), cast(Role, found[1]), found[2])


def list_keys(connection: Connection) -> list[ApiKey]:
    return [_api_key(row) for row in repository.list_keys(connection)]


def revoke_key(connection: Connection, key_id: str, *, now: datetime) -> ApiKey:
    """Revoke a key; revoking again keeps the first revocation time."""
    if not re.fullmatch(_KEY_ID, key_id):  # no such key; and a lone surrogate is no SQL parameter
        raise NotFound(f"no API key with id {key_id!r}", field="key_id")
    repository.revoke_key(connection, key_id, now)
    row = repository.get_key(connection, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id!r}", field="key_id")
    return _api_key(row)
