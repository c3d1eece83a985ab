"""Run every benchmark in bench/ (each a standalone script; not the soak: NOT_RUN) and gather results.

Each script prints a markdown report and writes `bench/results/<name>.json`; this runner runs them
one after the other (never in parallel: they would measure each other) and writes
`bench/results/latest.json` with the machine it ran on, and `bench/results/latest.md`: every
script's report, with the date and machine. The same markdown replaces the README's benchmark
tables, between the two REPORT_MARKERS, so the README always shows the last full run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from _machine import machine

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
REPORT_MARKERS = ("<!-- make bench writes from here -->", "<!-- to here -->")
# this runner, and the soak: not a benchmark of its own numbers but a 10-minute stability check
# (flat memory, steady latency), run on its own with `make soak`
NOT_RUN = frozenset({"run.py", "soak.py"})


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


def _report_heading(printed: str) -> str:
    """A script's report with its `# title` made a subsection of the README's benchmark section."""
    return re.sub(r"^# ", "### ", printed.strip(), flags=re.MULTILINE)


def _into_readme(markdown: str) -> None:
    begin, end = REPORT_MARKERS
    text = README.read_text()
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"README.md must hold the markers {begin!r} and {end!r} once each, in that order")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    README.write_text(f"{head}{begin}\n{markdown}\n{end}{tail}")


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    scripts = sorted(
        path for path in HERE.glob("*.py") if path.name not in NOT_RUN and not path.name.startswith("_")
    )
    load_before = os.getloadavg()[0]
    report: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    sections = []
    for script in scripts:
        print(f"## {script.stem}", flush=True)
        result = RESULTS / f"{script.stem}.json"
        result.unlink(missing_ok=True)  # a script that measures nothing here must not report old numbers
        printed = _run(script)
        report[script.stem] = json.loads(result.read_text()) if result.exists() else None
        sections.append(_report_heading(printed))
    load_after = os.getloadavg()[0]
    report["load_average_1min"] = {"before": load_before, "after": load_after}
    about = report["machine"]
    assert isinstance(about, dict)
    markdown = "\n\n".join(
        [
            f"Measured {report['date'][:10]} by `make bench` on {about['cpu']}, {about['cores']} cores,"
            f" {about['memory_gib']} GiB, Python {about['python']}, SQLite {about['sqlite']}; 1-minute load"
            f" average {load_before:.1f} before the run and {load_after:.1f} after it (the benchmarks' own"
            " load included).",
            *sections,
        ]
    )
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown + "\n")
    _into_readme(markdown)
    print(f"\nmachine: {report['machine']}; README.md benchmark tables replaced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
