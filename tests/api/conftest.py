"""A real aibudget server per test module and engine: uvicorn in its own process on a free port, over a
fresh SQLite file or PostgreSQL database, with an admin key in its environment; tests talk to it with
real HTTP (httpx)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from aibudget import Budget, Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    admin_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def budget(self) -> Budget:
        """The same database through the library, for setting up state and checking the books."""
        return Budget.open(self.database_url, settings=Settings.load(data_dir=self.data_dir))

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(data_dir: Path, database_url: str | None = None, **env: str) -> Server:
    """A server over `database_url`, by default the SQLite file in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    database_url = database_url or f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    port, admin_key = free_port(), secrets.token_urlsafe(32)
    clean = {name: value for name, value in os.environ.items() if not name.startswith("AIBUDGET_")}
    clean |= {"AIBUDGET_DATA_DIR": str(data_dir), "AIBUDGET_ADMIN_KEY": admin_key,
              "AIBUDGET_DATABASE_URL": database_url, **env}  # fmt: skip
    log_path = data_dir / "server.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", "aibudget.api.app:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=clean, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", admin_key, data_dir, process, log_path, database_url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/openapi.json", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start within 30 s:\n{server.logs()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
