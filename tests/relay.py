"""A TCP relay a test owns between aibudget and its database: stopping it cuts every open connection
and refuses new ones, as a failed network or a stopped database server would. With a database, a
`Budget` or a server behind it."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from aibudget import Budget, Settings
from tests.api.conftest import Server, free_port, start_server, stop_server
from tests.databases import PostgresServer


class Relay:
    """Forwards TCP connections from a local port to `target` until stopped; can start again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: stopped
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:  # the target is away: so is the connection
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()  # with a reset, as the target's refusal would
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            self._join(client, upstream)

    def _join(self, client: socket.socket, upstream: socket.socket) -> None:
        """Pass on what each side sends to the other, in a thread each."""
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # the other direction or `stop` closed the pair
        finally:
            for end in (source, sink):
                end.close()

    def stop(self) -> None:
        if self._listener is None:
            return  # already stopped
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone would not
        self._listener.close()
        self._listener = None
        with self._lock:
            cut, self._sockets = self._sockets, set()
        for end in cut:
            with contextlib.suppress(OSError):  # already closed by its pump
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@contextlib.contextmanager
def relayed_database(postgres: PostgresServer) -> Iterator[tuple[str, Relay]]:
    """A new PostgreSQL database reached through a relay: its URL through the relay, and the relay."""
    direct = postgres.create_database()
    url = make_url(direct)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relay.start()
    try:
        yield url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False), relay
    finally:
        relay.stop()
        postgres.drop_database(direct)


@contextlib.contextmanager
def relayed_budget(postgres: PostgresServer, data_dir: Path) -> Iterator[tuple[Budget, Relay]]:
    """A `Budget` on a new PostgreSQL database reached through a relay, and the relay."""
    with (
        relayed_database(postgres) as (url, relay),
        Budget.open(url, settings=Settings.load(data_dir=data_dir)) as budget,
    ):
        yield budget, relay


@contextlib.contextmanager
def relayed_server(postgres: PostgresServer, data_dir: Path, **env: str) -> Iterator[tuple[Server, Relay]]:
    """`aibudget serve` on a new PostgreSQL database reached through a relay (its sweeper passing
    every second, unless `env` says otherwise), and the relay."""
    with relayed_database(postgres) as (url, relay):
        server = start_server(data_dir, url, **{"AIBUDGET_SWEEP_INTERVAL_SECONDS": "1", **env})
        try:
            yield server, relay
        finally:
            stop_server(server)
