"""What the HTTP benchmarks share: starting `aibudget serve`, and lean keep-alive clients posting the
authorize and settle bodies of a gpt-4o-mini letter."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(sys.executable).parent / "aibudget"


class Connection:
    """One keep-alive connection that posts JSON and returns the status."""

    def __init__(self, port: int, key: str) -> None:
        self._http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> int:
        self._http.request("POST", path, json.dumps(body), self._headers)
        response = self._http.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self._http.close()


def authorization(
    practice_id: str, request_id: str, *, input_tokens: int, max_output_tokens: int
) -> dict[str, Any]:
    return {
        "practice_id": practice_id,
        "request_id": request_id,
        "operation": "letter",
        "model": "gpt-4o-mini",
        "estimate": {"input_tokens": input_tokens, "max_output_tokens": max_output_tokens},
    }


def usage(practice_id: str, request_id: str, *, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "practice_id": practice_id,
        "request_id": request_id,
        "operation": "letter",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve(data_dir: Path, port: int, workers: int, **env: str) -> subprocess.Popen[bytes]:
    """`aibudget serve` on `port` with the given AIBUDGET_* settings, once every worker is ready
    (each logs "Application startup complete." once; polled, as the log is a file)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("AIBUDGET_")}
    clean |= {"AIBUDGET_DATA_DIR": str(data_dir), "AIBUDGET_ADMIN_KEY": secrets.token_urlsafe(32), **env}
    log_path = data_dir / "server.log"
    command = [str(SCRIPT), "serve", "--port", str(port), "--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=clean, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while log_path.read_text(errors="replace").count("Application startup complete.") < workers:
        if process.poll() is not None:
            raise RuntimeError(f"aibudget serve exited: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{workers} workers did not start within 60 s")
        time.sleep(0.2)
    return process
