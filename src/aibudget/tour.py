"""A short tour of what aibudget does so far: open the store, set up a practice, price typical calls.

Run by `make run` (`aibudget tour`). It writes to the configured database (default
`var/aibudget.sqlite3`) and is safe to run again: every write is an idempotent upsert.
"""

from __future__ import annotations

import math
import struct
import tempfile
import wave
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.pricing.audio import read_duration

CALLS = [
    ("letter", "gpt-4o-mini", {"input_tokens": 1800, "cached_input_tokens": 1024, "output_tokens": 650}),
    ("letter", "gpt-4.1", {"input_tokens": 1800, "output_tokens": 650}),
    ("letter", "openai/gpt-4o-mini-2024-07-18", {"input_tokens": 1800, "output_tokens": 650}),
    ("chat", "praxis-internal-llm", {"input_tokens": 1000, "output_tokens": 1000}),
]


def _dictation(path: Path, seconds: int = 42, rate: int = 16_000) -> Path:
    """A mono 16 kHz WAV, the shape of a short dictation."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(i * 0.05))) for i in range(seconds * rate))
        )
    return path


def run(settings: Settings, say: Callable[[str], None] = print) -> None:
    with Budget.open(settings=settings) as budget:
        say(f"database      {settings.resolved_database_url}")
        budget.put_plan("basic", included_usd="20")
        budget.put_practice("praxis-muster", name="Praxis Dr. Muster", locale="de-CH")
        budget.put_subscription("sub_demo", practice_id="praxis-muster", plan="basic", status="active")
        budget.bind_device("demo-laptop", practice_id="praxis-muster")
        period = budget.current_period("praxis-muster")
        assert period is not None
        practice = budget.resolve_practice(device_id="demo-laptop")
        say(
            f"practice      {practice.name} ({practice.locale}, {practice.timezone}),"
            " plan basic: 20 USD a month"
        )
        zone = ZoneInfo(practice.timezone)
        first, last = (datetime.fromtimestamp(t, zone).date() for t in (period.start, period.end - 1))
        say(f"period        {first} .. {last} (a calendar month: the subscription gives no period)\n")

        with tempfile.TemporaryDirectory() as scratch:
            audio = read_duration(_dictation(Path(scratch) / "dictation.wav"))
        say(f"dictation     {audio.seconds} s of {audio.format}, read from the {audio.method}")
        transcriptions = [
            ("transcribe", "whisper-1", {"audio_seconds": audio.seconds}),
            ("transcribe", "gpt-4o-transcribe", {"audio_seconds": audio.seconds, "output_tokens": 180}),
        ]
        say(f"\n{'operation':<11} {'model':<31} {'priced as':<18} {'source':<9} {'cost USD':>10}")
        for operation, model, usage in transcriptions + CALLS:
            price = budget.price(model, **usage)  # type: ignore[arg-type]
            say(f"{operation:<11} {model:<31} {price.priced_as:<18} {price.source:<9} {price.cost_usd:>10}")
        say("\nUnknown models are priced at the conservative fallback; set AIBUDGET_UNKNOWN_MODEL=refuse")
        say("to refuse them, or price them in the file named by AIBUDGET_PRICE_OVERRIDES.")
