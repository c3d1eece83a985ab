"""`Journal`: records a process keeps on local disk until the database takes them.

Two kinds of record wait this way while the database is unavailable: calls admitted without a hold
(`ledger.fail_open`) and the settles of calls the proxy served (`ledger.kept_settles`). A journal keeps
its records in memory and, before `keep` returns, in a file of its own in its directory (one JSON
line each, synced to disk), which it holds locked while its process lives: a kept record survives
the process's death (`kill -9` included), and the next `drain` of any journal on the same directory
finds the file unlocked and hands on what is in it too.

A record that cannot be written to the file is refused (`JournalUnwritable`), as is one past the
journal's limit (`JournalFull`): the caller must then act as if there were no journal.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from io import FileIO
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

ABANDONED_AFTER_SECONDS = 60

log = logging.getLogger(__name__)

R = TypeVar("R")


class JournalFull(Exception):
    """The journal's limit of records already wait for the database: no more are kept."""


class JournalUnwritable(Exception):
    """A record could not be written to the journal's file (disk full, read-only, …)."""


class UnreadableJournal(Exception):
    """A journal file holds a line that is not a record (not only a last line cut short)."""


class Journal(Generic[R]):
    """Records not yet in the database; thread-safe. `directory` holds the journal files; this
    journal's own file is made when it keeps its first record.

    `name` and `noun` name the journal and its records in messages ("fail-open journal",
    "admission"); `encode`/`decode` turn a record into a JSON object and back; `key` identifies a
    record, so keeping the same one again returns the first.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str,
        noun: str,
        encode: Callable[[R], dict[str, Any]],
        decode: Callable[[dict[str, Any]], R],
        key: Callable[[R], Hashable],
        limit: int,
    ) -> None:
        self._directory = directory
        self._name, self._noun = name, noun
        self._encode, self._decode, self._key = encode, decode, key
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: dict[Hashable, R] = {}
        self._file: FileIO | None = None  # this journal's file, locked, and its path
        self._path: Path | None = None

    def keep(self, record: R) -> R:
        """Keep `record` (on disk first) and return it; while one with the same key is kept, that one
        is returned instead and nothing is written."""
        key = self._key(record)
        with self._lock:
            kept = self._pending.get(key)
            if kept is not None:
                return kept
            if len(self._pending) >= self._limit:
                raise JournalFull(f"{self._limit} {self._noun}s wait for the database")
            try:
                self._append(record)
            except OSError as error:
                raise JournalUnwritable(f"the {self._name} cannot be written: {error}") from error
            self._pending[key] = record
        return record

    def drain(self, take: Callable[[list[R]], None]) -> int:
        """Hand every kept record, and those in files of journals that died, to `take`, which puts
        them in the database; how many. When `take` raises, every record stays kept."""
        with self._lock:
            batch = list(self._pending.values())
        orphans = self._orphans()
        try:
            for _, found in orphans:
                batch += found
            if not batch:
                return 0
            take(batch)
            for orphan, _ in orphans:
                Path(orphan.name).unlink(missing_ok=True)  # another journal may have taken it first
        finally:
            for orphan, _ in orphans:
                orphan.close()
        with self._lock:
            for record in batch:
                key = self._key(record)
                if self._pending.get(key) is record:
                    del self._pending[key]
            if self._file is not None and not self._pending:  # else it keeps taken lines too: harmless
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

    def _append(self, record: R) -> None:
        """Write `record` to this journal's file and sync it (the lock held); a line that fails
        part-way is taken back out, so the file keeps kept records only, each on a line of its own."""
        if self._file is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            # locked under a name other journals do not look at, then named: never seen unlocked
            path = self._directory / f"{secrets.token_hex(8)}.jsonl"
            opening = path.with_suffix(".opening")
            # unbuffered: nothing left over after a failure; readable by this user only, as the
            # database is (a kept settle names its device)
            journal_file = open(opening, "ab", buffering=0, opener=_owner_only)  # noqa: SIM115 (kept open)
            fcntl.flock(journal_file, fcntl.LOCK_EX)  # held while this process lives
            opening.rename(path)
            self._file, self._path = journal_file, path
        line = memoryview((json.dumps(self._encode(record)) + "\n").encode())
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
            log.error("%s %s: a refused %s stays in it: %s", self._name, self._path, self._noun, error)

    def _orphans(self) -> list[tuple[IO[str], list[R]]]:
        """Journal files no living journal holds, each opened and locked, with the records it keeps."""
        if not self._directory.is_dir():
            return []
        _remove_abandoned(self._directory)
        own = self._path
        found: list[tuple[IO[str], list[R]]] = []
        for path in sorted(self._directory.glob("*.jsonl")):
            if path == own:
                continue
            try:
                orphan = path.open("r", encoding="utf-8")
            except FileNotFoundError:  # taken and removed by another journal meanwhile
                continue
            try:
                fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its journal lives
                orphan.close()
                continue
            try:
                found.append((orphan, self._read(orphan)))
            except UnreadableJournal as unreadable:  # kept for an operator; must not stop the others
                log.error("%s %s is unreadable, set aside: %s", self._name, path, unreadable)
                path.rename(path.with_suffix(".unreadable"))
                orphan.close()
        return found

    def _read(self, journal_file: IO[str]) -> list[R]:
        """The records in a journal file; a last line cut short (its process died writing it, before
        `keep` returned) is skipped."""
        records = []
        lines = journal_file.read().splitlines(keepends=True)
        for number, line in enumerate(lines, start=1):
            try:
                records.append(self._decode(json.loads(line)))
            except json.JSONDecodeError as error:
                if number == len(lines) and not line.endswith("\n"):
                    log.warning("%s %s: skipped a last line cut short", self._name, journal_file.name)
                    continue
                raise UnreadableJournal(f"line {number}: {error}") from error
            except (TypeError, KeyError, ValueError) as error:
                raise UnreadableJournal(f"line {number}: no {self._noun} ({error!r})") from error
        return records


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _remove_abandoned(directory: Path) -> None:
    """Remove the `.opening` files of journals whose process died making them: nothing is written
    to one before it is named `.jsonl`, and a living journal names its own within microseconds, so
    an empty, unlocked one older than `ABANDONED_AFTER_SECONDS` holds no record and no one's."""
    for path in directory.glob("*.opening"):
        try:
            with path.open("rb") as opening:
                fcntl.flock(opening, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found = os.fstat(opening.fileno())
                if found.st_size == 0 and time.time() - found.st_mtime > ABANDONED_AFTER_SECONDS:
                    path.unlink()
        except (FileNotFoundError, BlockingIOError):  # named or removed meanwhile; its journal lives
            continue
