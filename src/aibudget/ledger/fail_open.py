"""Calls let through without a hold while the database was unavailable: fail-open, off by default.

With `AIBUDGET_FAIL_OPEN` on, an authorization the database cannot take is admitted instead of being
refused with 503 — availability over the budget, for a vendor who would rather let some calls past a
budget than stop its customers' work during an outage. Nothing can be held or checked then (not the
balance, not the practice's subscription), so an admission holds nothing. The call's cost is charged
when its settle arrives, as a settle without a hold; settles never fail open, they wait for the
database (the caller sends them again, idempotently).

Every admission is recorded: logged and counted when it is made, kept by the `Journal`, and written
to `fail_open_admissions` (one row per practice and request id) as soon as the database answers
again. The journal keeps its admissions in memory and, before a call is admitted, in a file of its
own under `<data_dir>/fail-open/` (one JSON line each, synced to disk), which it holds locked while
its process lives: an admission survives the process's death (`kill -9` included), and the next
write of any journal on the same data directory finds the file unlocked and records what is in it.
A call whose admission cannot be written to that file is refused, as is one past `JOURNAL_LIMIT`
waiting admissions, as if fail-open were off: nothing is ever let through unrecorded.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from io import FileIO
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, select

from aibudget.store import tables
from aibudget.store.dialect import insert_ignore, run_transaction

JOURNAL_LIMIT = 100_000  # ~300 bytes each: ~30 MB at most
JOURNAL_DIRECTORY = "fail-open"  # under the data directory
ABANDONED_AFTER_SECONDS = 60

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    """One call admitted without a hold; `admission_id` is what the caller got as authorization id."""

    practice_id: str
    request_id: str
    operation: str
    model: str
    estimate_micros: int
    admitted_at: datetime
    admission_id: str = field(default_factory=lambda: f"fo_{secrets.token_hex(12)}")
    replayed: bool = False  # True when this is the kept admission of an earlier, identical call


class JournalFull(Exception):
    """`JOURNAL_LIMIT` admissions wait for the database: no more are made."""


class JournalUnwritable(Exception):
    """An admission could not be written to the journal's file (disk full, read-only, …)."""


class Journal:
    """Admissions not yet written to the database; thread-safe, one per `Budget`.

    `directory` holds the journal files; this journal's own file is made on its first admission.
    """

    def __init__(self, directory: Path, limit: int = JOURNAL_LIMIT) -> None:
        self._directory = directory
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Admission] = {}
        self._file: FileIO | None = None  # this journal's file, locked, and its path
        self._path: Path | None = None

    def admit(self, admission: Admission) -> Admission:
        """Keep `admission` (on disk first); a replay of a kept practice and request id gets the first."""
        key = (admission.practice_id, admission.request_id)
        with self._lock:
            kept = self._pending.get(key)
            if kept is not None:
                return replace(kept, replayed=True)
            if len(self._pending) >= self._limit:
                raise JournalFull(f"{self._limit} admissions wait for the database")
            try:
                self._append(admission)
            except OSError as error:
                raise JournalUnwritable(f"the fail-open journal cannot be written: {error}") from error
            self._pending[key] = admission
        return admission

    def write(self, engine: Engine, now: datetime) -> int:
        """Write every kept admission, and those in files of journals that died (one transaction);
        how many were written.

        Raises `DatabaseUnavailable` while the database is away; the admissions stay kept.
        """
        with self._lock:
            batch = list(self._pending.values())
        orphans = self._orphans()
        try:
            for _, found in orphans:
                batch += found
            if not batch:
                return 0
            rows = [_row(admission, now) for admission in batch]

            def work(connection: Connection) -> None:
                table = tables.fail_open_admissions
                connection.execute(insert_ignore(connection, table, ["practice_id", "request_id"]), rows)

            run_transaction(engine, work, write=True)
            for orphan, _ in orphans:
                Path(orphan.name).unlink(missing_ok=True)  # another journal may have recorded it first
        finally:
            for orphan, _ in orphans:
                orphan.close()
        with self._lock:
            for admission in batch:
                key = (admission.practice_id, admission.request_id)
                if self._pending.get(key) is admission:
                    del self._pending[key]
            if self._file is not None and not self._pending:  # else it keeps recorded lines too: harmless
                self._file.truncate(0)
        return len(batch)

    def close(self) -> None:
        """Let go of this journal's file: removed when nothing waits, else left for the next journal."""
        with self._lock:
            if self._file is None:
                return
            if not self._pending:
                assert self._path is not None
                self._path.unlink()
            self._file.close()
            self._file = self._path = None

    def _append(self, admission: Admission) -> None:
        """Write `admission` to this journal's file and sync it (the lock held); a line that fails
        part-way is taken back out, so the file keeps admitted calls only, each on a line of its own."""
        if self._file is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            # locked under a name other journals do not look at, then named: never seen unlocked
            path = self._directory / f"{secrets.token_hex(8)}.jsonl"
            opening = path.with_suffix(".opening")
            journal_file = opening.open("ab", buffering=0)  # unbuffered: nothing left over after a failure
            fcntl.flock(journal_file, fcntl.LOCK_EX)  # held while this process lives
            opening.rename(path)
            self._file, self._path = journal_file, path
        line = memoryview((json.dumps(_fields(admission), default=datetime.isoformat) + "\n").encode())
        size = os.fstat(self._file.fileno()).st_size
        try:
            while line:
                written = self._file.write(line)
                assert written is not None  # a regular file never would block
                line = line[written:]
            os.fsync(self._file.fileno())
        except OSError:
            self._take_back(size)
            raise

    def _take_back(self, size: int) -> None:
        """Cut this journal's file back to `size` bytes after a failed append (the lock held)."""
        assert self._file is not None
        try:
            self._file.truncate(size)
        except OSError as error:  # the next journal to read it sets the file aside for an operator
            log.error("fail-open journal %s: a refused admission stays in it: %s", self._path, error)

    def _orphans(self) -> list[tuple[IO[str], list[Admission]]]:
        """Journal files no living journal holds, each opened and locked, with the admissions it keeps."""
        if not self._directory.is_dir():
            return []
        _remove_abandoned(self._directory)
        own = self._path
        found: list[tuple[IO[str], list[Admission]]] = []
        for path in sorted(self._directory.glob("*.jsonl")):
            if path == own:
                continue
            try:
                orphan = path.open("r", encoding="utf-8")
            except FileNotFoundError:  # recorded and removed by another journal meanwhile
                continue
            try:
                fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its journal lives
                orphan.close()
                continue
            try:
                found.append((orphan, _read(orphan)))
            except UnreadableJournal as unreadable:  # kept for an operator; must not stop the others
                log.error("fail-open journal %s is unreadable, set aside: %s", path, unreadable)
                path.rename(path.with_suffix(".unreadable"))
                orphan.close()
        return found


def _remove_abandoned(directory: Path) -> None:
    """Remove the `.opening` files of journals whose process died making them: nothing is written
    to one before it is named `.jsonl`, and a living journal names its own within microseconds, so
    an empty, unlocked one older than `ABANDONED_AFTER_SECONDS` holds no admission and no one's."""
    for path in directory.glob("*.opening"):
        try:
            with path.open("rb") as opening:
                fcntl.flock(opening, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found = os.fstat(opening.fileno())
                if found.st_size == 0 and time.time() - found.st_mtime > ABANDONED_AFTER_SECONDS:
                    path.unlink()
        except (FileNotFoundError, BlockingIOError):  # named or removed meanwhile; its journal lives
            continue


class UnreadableJournal(Exception):
    """A journal file holds a line that is not an admission (not only a last line cut short)."""


def _read(journal_file: IO[str]) -> list[Admission]:
    """The admissions in a journal file; a last line cut short (its process died writing it, before
    the call was admitted) is skipped."""
    admissions = []
    lines = journal_file.read().splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            admitted_at = datetime.fromisoformat(row["admitted_at"])
            admissions.append(Admission(**row | {"admitted_at": admitted_at}))
        except json.JSONDecodeError as error:
            if number == len(lines) and not line.endswith("\n"):
                log.warning("fail-open journal %s: skipped a last line cut short", journal_file.name)
                continue
            raise UnreadableJournal(f"line {number}: {error}") from error
        except (TypeError, KeyError, ValueError) as error:
            raise UnreadableJournal(f"line {number}: not an admission ({error!r})") from error
    return admissions


def _fields(admission: Admission) -> dict[str, object]:
    fields = asdict(admission)
    del fields["replayed"]
    return fields


def _row(admission: Admission, recorded_at: datetime) -> dict[str, object]:
    return _fields(admission) | {"recorded_at": recorded_at}


def admissions(connection: Connection, practice_id: str | None = None) -> list[Admission]:
    """Recorded admissions, oldest first, of one practice or all."""
    table = tables.fail_open_admissions
    query = select(
        table.c.practice_id, table.c.request_id, table.c.operation, table.c.model,
        table.c.estimate_micros, table.c.admitted_at, table.c.admission_id,
    ).order_by(table.c.admitted_at, table.c.practice_id, table.c.request_id)  # fmt: skip
    if practice_id is not None:
        query = query.where(table.c.practice_id == practice_id)
    return [Admission(*row) for row in connection.execute(query)]
