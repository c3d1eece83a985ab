"""Reports, the operator dashboard's figures, API keys, dashboard sessions, the books' check and
notifications: the operator's layer of `Budget`."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date, datetime

from sqlalchemy import Engine

from aibudget.accounts.service import Device
from aibudget.auth import service as auth
from aibudget.auth import sessions
from aibudget.auth.service import ApiKey, Principal
from aibudget.auth.sessions import AdminSession
from aibudget.budget.core import Clock, system_clock
from aibudget.budget.gating import Gating
from aibudget.config import Settings
from aibudget.dashboard import data
from aibudget.dashboard.data import BurnDown, OverviewPage
from aibudget.ledger import reports, retention
from aibudget.ledger.reports import UsageReport
from aibudget.ledger.retention import Pruned
from aibudget.ledger.verify import Discrepancy, verify
from aibudget.notify import delivery, outbox
from aibudget.notify.delivery import Notifier, Sender
from aibudget.notify.outbox import Notification


class Operations(Gating):
    """What the operator reads and manages: usage reports and retention, the dashboard's overview,
    API keys and sessions, `verify`, and the notifications' delivery."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = system_clock) -> None:
        super().__init__(engine, settings, clock=clock)
        self._sender: Sender | None = None  # made on first delivery: no HTTP client unless needed
        self._sender_lock = threading.Lock()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
        super().close()

    def prune_usage(self, before: date | datetime) -> Pruned:
        """Remove usage events that occurred before `before` (a date is midnight UTC) and the closed
        authorizations of that time; no balance changes and `verify` still passes (see
        `ledger.retention`). Runs in batches of its own transactions, so traffic goes on meanwhile."""
        cutoff = retention.cutoff(before, now=self.clock())
        removed = Pruned(events=0, authorizations=0)
        while batch := self._write(lambda connection: retention.prune_events(connection, cutoff)):
            removed = replace(removed, events=removed.events + batch)
        while batch := self._write(lambda connection: retention.prune_authorizations(connection, cutoff)):
            removed = replace(removed, authorizations=removed.authorizations + batch)
        return removed

    def usage_report(
        self,
        practice_id: str,
        *,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
        group_by: str | None = None,
        limit: int = reports.DEFAULT_LIMIT,
        status: str | None = None,
        model: str | None = None,
        operation: str | None = None,
    ) -> UsageReport:
        """The practice's events in `[since, until)`, newest first (at most `limit`), or their totals
        per `group_by` (`day` in the practice's timezone, `model`, `operation`); dates are midnight
        in the practice's timezone. `status` (success, error, blocked, voided, expired), `model` and
        `operation` keep only the events equal to them. Render with `aibudget.views.report`."""
        return self._read(
            lambda connection: reports.usage_report(
                connection,
                practice_id,
                since=since,
                until=until,
                group_by=group_by,
                limit=limit,
                status=status,
                model=model,
                operation=operation,
            )
        )

    def overview(
        self,
        *,
        query: str = "",
        sort: str = "practice_id",
        descending: bool = False,
        page: int = 1,
        per_page: int = 25,
    ) -> OverviewPage:
        """One page of all practices whose id or name contains `query` (ignoring case), with their
        budget now, sorted by `sort` (`practice_id`, `name`, `plan`, `available_percent`, `spend`;
        ties by practice id). Costs O(practices) per call: see `aibudget.dashboard.data`."""
        return data.overview(
            read=self._read, snapshot=self.snapshot, now=self.clock(), rules=self.rules, query=query,
            sort=sort, descending=descending, page=page, per_page=per_page,
        )  # fmt: skip

    def burn_down(self, practice_id: str) -> BurnDown:
        """The practice's current period day by day (in its timezone) up to today: spent per pot and
        the included budget left at each day's end; and the period's calls per model and operation."""
        snapshot = self.snapshot(practice_id)
        return self._read(lambda connection: data.burn_down(connection, snapshot, now=self.clock()))

    def devices(self, practice_id: str) -> list[Device]:
        """The practice's devices, the most recently bound first."""
        return self._read(lambda connection: data.devices(connection, practice_id))

    def create_key(
        self, *, role: str, practice_id: str | None = None, label: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new API key and its text, shown this once: only its hash is stored."""
        return self._write(
            lambda connection: auth.create_key(
                connection, role=role, practice_id=practice_id, label=label, now=self.clock()
            )
        )

    def authenticate(self, presented: str | None) -> Principal:
        """Who a presented API key stands for; raises `Unauthorized`."""
        admin = self.settings.admin_key
        return self._read(
            lambda connection: auth.authenticate(
                connection, presented, admin_key=admin.get_secret_value() if admin else None
            )
        )

    def api_keys(self) -> list[ApiKey]:
        return self._read(lambda connection: auth.list_keys(connection))

    def revoke_key(self, key_id: str) -> ApiKey:
        return self._write(lambda connection: auth.revoke_key(connection, key_id, now=self.clock()))

    def sign_in(self, admin_key: str) -> AdminSession:
        """A dashboard session for an admin key (`Unauthorized` for any other key); the key is not kept."""
        principal = self.authenticate(admin_key)
        env_key = self._env_key_hmac()  # kept with a session it opens, to tell it from a new one
        return self._write(
            lambda connection: sessions.open_session(connection, principal, now=self.clock(), env_key=env_key)
        )

    def dashboard_session(self, token: str | None) -> AdminSession | None:
        """The live session behind a cookie's token; None when unknown, expired, signed out or revoked
        (for a session of `AIBUDGET_ADMIN_KEY`: when the variable no longer holds the key that opened it)."""
        env_key = self._env_key_hmac()
        return self._read(
            lambda connection: sessions.find_session(connection, token, now=self.clock(), env_key=env_key)
        )

    def _env_key_hmac(self) -> str | None:
        admin = self.settings.admin_key
        return sessions.env_key_hmac(self._secret, admin.get_secret_value() if admin else None)

    def sign_out(self, token: str) -> None:
        self._write(lambda connection: sessions.close_session(connection, token))

    def verify(self) -> list[Discrepancy]:
        """Every difference between cached balances and the ledger; empty when the books balance."""
        return self._read(lambda connection: verify(connection))

    def notifications(
        self, *, practice_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Notification]:
        """The notifications delivery log, newest first, optionally of one practice or one status
        (`pending`, `delivered`, `failed`)."""
        return self._read(
            lambda connection: outbox.list_notifications(
                connection, practice_id=practice_id, status=status, limit=limit
            )
        )

    def resend_notifications(
        self, *, notification_id: str | None = None, practice_id: str | None = None
    ) -> int:
        """Send failed notifications again — the one named, else every failed one (of a practice) —
        with a new round of attempts from the next delivery pass; how many (see `outbox.resend`)."""
        return self._write(
            lambda connection: outbox.resend(
                connection, now=self.clock(), notification_id=notification_id, practice_id=practice_id
            )
        )

    def _notify_sender(self) -> Sender:
        with self._sender_lock:
            if self._sender is None:
                self._sender = Sender.from_settings(self.settings)
            return self._sender

    def deliver_notifications(self) -> int:
        """One delivery pass (the server's `Notifier` runs one every `notify_interval_seconds`): POST
        every due notification to `notify_url` and record each outcome; returns how many were
        delivered. Does nothing without `notify_url`; `ConfigError` without `notify_secret`."""
        if self.settings.notify_url is None:
            return 0
        return delivery.deliver_due(
            read=self._read, write=self._write, sender=self._notify_sender(), clock=self.clock,
            max_attempts=self.settings.notify_max_attempts,
        )  # fmt: skip

    def notifier(self) -> Notifier | None:
        """The background delivery worker (not started), or None without `notify_url`; raises
        `ConfigError` at once when `notify_url` is set without `notify_secret`."""
        if self.settings.notify_url is None:
            return None
        self._notify_sender()
        return Notifier(self.deliver_notifications, interval=self.settings.notify_interval_seconds)
