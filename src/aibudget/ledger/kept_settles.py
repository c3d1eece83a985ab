"""Settles the database could not take when a served call's cost was known: kept until it can.

The proxy settles a call after the upstream answered it: the provider is paid and the answer is
there. When the database is unavailable at that moment (a failover, a network cut), refusing the
answer would not undo the cost — the caller would only send the call again and pay the provider
twice — and dropping the settle would lose it. So `Budget.settle_or_keep` keeps such a settle in a
`SettleJournal` (`ledger.journal`: a file under `<data_dir>/kept-settles/`, synced before it
returns, that outlives the process) and the caller gets its answer; the call's hold stays held.
`Budget.post_kept_settles` posts them once the database answers — the server's sweeper runs it at
every pass, `aibudget sweep` too — by their request ids, so one that did reach the database before
it failed is not charged again. A kept settle is priced and dated when it is posted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aibudget.ledger.journal import Journal

KEPT_DIRECTORY = "kept-settles"  # under the data directory
KEPT_LIMIT = 100_000  # ~400 bytes each: ~40 MB at most


@dataclass(frozen=True, slots=True)
class KeptSettle:
    """The arguments of one `Budget.settle` call, and when it was kept."""

    request_id: str
    model: str
    practice_id: str | None
    device_id: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    input_audio_tokens: int
    audio_seconds: Decimal
    operation: str | None
    status: str
    error_code: str | None
    estimated: bool
    kept_at: datetime

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of `Budget.settle` that post it."""
        return {name: getattr(self, name) for name in _ARGUMENTS}


_ARGUMENTS = tuple(field.name for field in fields(KeptSettle) if field.name != "kept_at")


class SettleJournal(Journal[KeptSettle]):
    """Settles kept, not yet posted; one per `Budget`."""

    def __init__(self, directory: Path, limit: int = KEPT_LIMIT) -> None:
        super().__init__(
            directory, name="kept-settle journal", noun="settle", encode=_fields, decode=_settle,
            key=lambda settle: (settle.practice_id, settle.device_id, settle.request_id), limit=limit,
        )  # fmt: skip


def _fields(settle: KeptSettle) -> dict[str, Any]:
    """The settle as a journal line keeps it: the duration as exact text, the instant as ISO text."""
    return asdict(settle) | {
        "audio_seconds": str(settle.audio_seconds),
        "kept_at": settle.kept_at.isoformat(),
    }


def _settle(line: dict[str, Any]) -> KeptSettle:
    try:
        audio_seconds = Decimal(line["audio_seconds"])
    except InvalidOperation:
        raise ValueError(f"audio_seconds {line['audio_seconds']!r} is no number") from None
    kept_at = datetime.fromisoformat(line["kept_at"])
    return KeptSettle(**line | {"audio_seconds": audio_seconds, "kept_at": kept_at})
