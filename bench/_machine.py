"""What a benchmark ran on, and its results file (not a benchmark itself: run.py skips `_*.py`)."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def machine() -> dict[str, object]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        memory_gib = round(total_kib / 1024**2)
    return {
        "cpu": model,
        "memory_gib": memory_gib,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
    }


def write_results(path: Path, benchmark: str, *, elapsed_s: float, **fields: Any) -> None:
    """`path` as JSON: the benchmark's name, when and on what it ran, `fields`, how long it took."""
    report = {
        "benchmark": benchmark,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **fields,
        "elapsed_s": round(elapsed_s, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{elapsed_s:.1f} s; written to {path}", file=sys.stderr)
