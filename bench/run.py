"""Run every benchmark in bench/ (each a standalone script; not the soak: NOT_RUN) and gather results.

Each script prints a markdown table and writes `bench/results/<name>.json`; this runner runs them
one after the other (never in parallel: they would measure each other) and writes
`bench/results/latest.json` with the machine it ran on, and `bench/results/latest.md`: every
script's tables under its name, with the date and machine — the README's benchmark section is made
from it.
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
# not a benchmark of its own numbers but a 10-minute stability check (flat memory, steady latency):
# run on its own with `make soak`
NOT_RUN = frozenset({"soak.py"})


def _run(script: Path) -> str:
    """Run one benchmark script, showing its output as it comes; what it printed."""
    lines = []
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as running:
        assert running.stdout is not None
        for line in running.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if running.returncode != 0:
        raise SystemExit(f"{script.name} failed with exit code {running.returncode}")
    return "".join(lines)


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    scripts = sorted(
        path
        for path in HERE.glob("*.py")
        if path.name != "run.py" and path.name not in NOT_RUN and not path.name.startswith("_")
    )
    report: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    about = report["machine"]
    assert isinstance(about, dict)
    markdown = [
        f"Measured {report['date']} on {about['cpu']}, {about['cores']} cores, Python {about['python']},"
        f" SQLite {about['sqlite']}.",
        "",
    ]
    for script in scripts:
        print(f"## {script.stem}", flush=True)
        result = RESULTS / f"{script.stem}.json"
        result.unlink(missing_ok=True)  # a script that measures nothing here must not report old numbers
        printed = _run(script)
        report[script.stem] = json.loads(result.read_text()) if result.exists() else None
        markdown += [f"### {script.stem}", "", printed.strip(), ""]
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text("\n".join(markdown))
    print(f"\nmachine: {report['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
