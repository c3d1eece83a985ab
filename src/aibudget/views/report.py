"""Usage reports rendered for people and programs: JSON-ready dicts and CSV, for the API and the CLI.

Every surface shows a report with the same columns and values: amounts are decimal strings in USD
(`"0.002400"`), audio is seconds with three decimals (`"12.500"`), instants ISO 8601 (events in UTC,
the range in the practice's timezone), counts and tokens integers. Nothing here knows HTTP.

CSV has a header row and one row per event or group. A text cell that a spreadsheet would read as a
formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is prefixed with `'`: model names
and request ids come from callers, and an operator opens the file in Excel. So is each part of it
after a `;` or a tab: Excel splits on its region's list separator (`;` in de-CH and fr-CH) and
takes a quote for quoting only at the start of such a part, so `gpt;=cmd` would give a cell `=cmd`.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aibudget.ledger.reports import GroupBy, UsageLine, UsageReport, UsageTotals
from aibudget.money import format_usd

EVENT_COLUMNS = (
    "event_id", "occurred_at", "request_id", "status", "operation", "model", "priced_as",
    "input_tokens", "cached_input_tokens", "output_tokens", "input_audio_tokens", "audio_seconds",
    "cost_usd", "overage_usd", "price_source", "price_version", "error_code", "estimated",
    "subscription_id", "period_id", "device_suffix",
)  # fmt: skip
TOTALS_COLUMNS = (
    "calls", "success", "error", "blocked", "cost_usd", "overage_usd", "input_tokens",
    "cached_input_tokens", "output_tokens", "input_audio_tokens", "audio_seconds",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# where a part after `;` or a tab would start a formula
_PART_FORMULA = re.compile(rf"(?<=[;\t])(?=[{re.escape(''.join(_FORMULA_START))}])")


def columns(group_by: GroupBy | None) -> tuple[str, ...]:
    """The columns of a report: the event's fields, or the group (`day`, `model`, `operation`) and totals."""
    return EVENT_COLUMNS if group_by is None else (group_by, *TOTALS_COLUMNS)


def audio_seconds(audio_ms: int) -> str:
    """Milliseconds of audio as seconds with three decimals: 12500 -> "12.500"."""
    return str((Decimal(audio_ms) / 1000).quantize(Decimal("0.001")))


def _line(line: UsageLine) -> dict[str, Any]:
    return {
        "event_id": line.event_id,
        "occurred_at": line.occurred_at.isoformat(),
        "request_id": line.request_id,
        "status": line.status,
        "operation": line.operation,
        "model": line.model,
        "priced_as": line.priced_as,
        "input_tokens": line.input_tokens,
        "cached_input_tokens": line.cached_input_tokens,
        "output_tokens": line.output_tokens,
        "input_audio_tokens": line.input_audio_tokens,
        "audio_seconds": audio_seconds(line.audio_ms),
        "cost_usd": format_usd(line.cost_micros),
        "overage_usd": format_usd(line.overage_micros),
        "price_source": line.price_source,
        "price_version": line.price_version,
        "error_code": line.error_code,
        "estimated": line.estimated,
        "subscription_id": line.subscription_id,
        "period_id": line.period_id,
        "device_suffix": line.device_suffix,
    }


def _totals(totals: UsageTotals, group_by: GroupBy) -> dict[str, Any]:
    return {
        group_by: totals.key,
        "calls": totals.calls,
        "success": totals.success,
        "error": totals.error,
        "blocked": totals.blocked,
        "cost_usd": format_usd(totals.cost_micros),
        "overage_usd": format_usd(totals.overage_micros),
        "input_tokens": totals.input_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "output_tokens": totals.output_tokens,
        "input_audio_tokens": totals.input_audio_tokens,
        "audio_seconds": audio_seconds(totals.audio_ms),
    }


def rows_as_json(report: UsageReport) -> list[dict[str, Any]]:
    """The report's rows as JSON objects, keys in `columns(report.group_by)` order."""
    rendered = []
    for row in report.rows:
        if isinstance(row, UsageLine):
            rendered.append(_line(row))
        else:
            assert report.group_by is not None
            rendered.append(_totals(row, report.group_by))
    return rendered


def _local(instant: datetime | None, timezone: str) -> str | None:
    return None if instant is None else instant.astimezone(ZoneInfo(timezone)).isoformat()


def as_json(report: UsageReport) -> dict[str, Any]:
    """The whole report as one JSON object: what was asked for (range, grouping, filters), and the rows."""
    return {
        "practice_id": report.practice_id,
        "timezone": report.timezone,
        "since": _local(report.since, report.timezone),
        "until": _local(report.until, report.timezone),
        "group_by": report.group_by,
        "status": report.status,
        "model": report.model,
        "operation": report.operation,
        "rows": rows_as_json(report),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not isinstance(value, str):
        return text
    text = _PART_FORMULA.sub("'", text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(report: UsageReport) -> str:
    """The report as CSV (RFC 4180: comma, `"` quoting, CRLF) with a header row."""
    out = io.StringIO()
    writer = csv.writer(out)
    names = columns(report.group_by)
    writer.writerow(names)
    for row in rows_as_json(report):
        writer.writerow([_cell(row[name]) for name in names])
    return out.getvalue()
