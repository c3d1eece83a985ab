"""Run every benchmark in bench/ (each a standalone script) and gather their results.

Each script prints a markdown table and writes `bench/results/<name>.json`; this runner runs them
one after the other (never in parallel: they would measure each other) and writes
`bench/results/latest.json` with the machine it ran on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from _machine import machine

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    scripts = sorted(
        path for path in HERE.glob("*.py") if path.name != "run.py" and not path.name.startswith("_")
    )
    report: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    for script in scripts:
        print(f"## {script.stem}", flush=True)
        result = RESULTS / f"{script.stem}.json"
        result.unlink(missing_ok=True)  # a script that measures nothing here must not report old numbers
        subprocess.run([sys.executable, str(script)], check=True)
        report[script.stem] = json.loads(result.read_text()) if result.exists() else None
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nmachine: {report['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
