"""A TCP gateway a test owns in front of an aibudget server, failing requests the way a network, a
restart or a load balancer does: it counts the requests it sees by request line (`"POST /v1/usage"`)
and meets the next ones of a kind with the faults a test asks for:

- `"reset"`: the connection is reset before the request goes on — it never arrives;
- `"lost"`: the request goes on and the server answers it, but the connection is cut before the
  answer comes back — the server took it, the client cannot know;
- a status (502, 503, 504, …): answered by the gateway itself with an HTML page, as a load balancer
  does when its backend is away (`retry_after` sets its `Retry-After`).

`stop()` closes the port and cuts every connection (connections are refused, as while a server
restarts); `start()` opens it again.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from collections import Counter, defaultdict, deque

from tests.relay import Relay

Fault = str | int
REQUEST_LINE = re.compile(rb"([A-Z]+) (/[^ ?]*)\S* HTTP/1\.[01]\r\n")


def _cut(end: socket.socket, *, reset: bool = False) -> None:
    """Close `end` — with a TCP reset when `reset`, else with a FIN; it may be closed already by the
    other pump. Shutting down its reading side first wakes the pump blocked on it: close alone would
    not, and would not end the connection while that pump holds it."""
    with contextlib.suppress(OSError):
        if reset:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        end.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
    end.close()


def _page(status: int, retry_after: str | None) -> bytes:
    """A load balancer's answer of its own: HTML, and the connection closed after it."""
    page = f"<html><body><h1>{status} from the gateway</h1></body></html>"
    head = f"HTTP/1.1 {status} Gateway\r\nContent-Type: text/html\r\nContent-Length: {len(page)}\r\n"
    head += f"Retry-After: {retry_after}\r\n" if retry_after else ""
    return f"{head}Connection: close\r\n\r\n{page}".encode()


class Gateway(Relay):
    """Forwards TCP connections from `url` to `target`, with the faults asked for (see module doc)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        super().__init__((host, int(port)))
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: Counter[str] = Counter()
        self._faults: defaultdict[str, deque[tuple[Fault, str | None]]] = defaultdict(deque)

    def fail(self, request: str, *faults: Fault, retry_after: str | None = None) -> None:
        """Meet the next requests with the line `request` (`"POST /v1/usage"`) with `faults`, in turn."""
        with self._lock:
            self._faults[request].extend((fault, retry_after) for fault in faults)

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _join(self, client: socket.socket, upstream: socket.socket) -> None:
        lose = threading.Event()  # the answer to the request in flight is to be lost
        threading.Thread(target=self._requests, args=(client, upstream, lose), daemon=True).start()
        threading.Thread(target=self._answers, args=(upstream, client, lose), daemon=True).start()

    def _next_fault(self, data: bytes) -> tuple[Fault, str | None] | None:
        line = REQUEST_LINE.match(data)
        if line is None:  # the rest of a request whose line came before
            return None
        request = f"{line[1].decode()} {line[2].decode()}"
        with self._lock:
            self.seen[request] += 1
            faults = self._faults[request]
            return faults.popleft() if faults else None

    def _requests(self, client: socket.socket, upstream: socket.socket, lose: threading.Event) -> None:
        reset = False
        with contextlib.suppress(OSError):  # the other pump or `stop` cut the pair
            while data := client.recv(65536):
                match self._next_fault(data):
                    case ("reset", _):
                        reset = True
                        break
                    case ("lost", _):
                        lose.set()
                    case (int(status), retry_after):
                        client.sendall(_page(status, retry_after))
                        client.shutdown(socket.SHUT_WR)
                        client.settimeout(5)
                        while client.recv(65536):  # the rest of the request: unread, it would reset
                            pass
                        break
                upstream.sendall(data)
        _cut(client, reset=reset)
        _cut(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket, lose: threading.Event) -> None:
        with contextlib.suppress(OSError):  # the other pump or `stop` cut the pair
            while data := upstream.recv(65536):
                if lose.is_set():  # the server has answered: it took the request
                    break
                client.sendall(data)
        _cut(client, reset=True)
        _cut(upstream)
