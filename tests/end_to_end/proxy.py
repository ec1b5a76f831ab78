"""A small threaded TCP proxy on loopback that can cut a connection after N bytes.

``CuttingProxy(upstream_port, cut_up=N)`` listens on 127.0.0.1 (a free port) and
forwards every connection to ``127.0.0.1:upstream_port``. With ``cut_up`` it forwards at
most N bytes client→server on a connection and then closes both sides (the request never
arrives whole, or arrives and its answer cannot come back); with ``cut_down`` the same
server→client (the server has done the work, the answer is lost on the way). With neither
it is a plain forwarder that counts bytes, used to measure an exchange.

Only loopback addresses are ever used; every thread is a daemon and ``close`` joins them,
so a test run never leaves anything behind.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class ConnStats:
    up: int = 0  # client → server bytes forwarded
    down: int = 0  # server → client bytes forwarded
    cut: str | None = None  # "up" or "down" when this proxy cut the connection


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    stats: ConnStats
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class CuttingProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, cutting after N bytes."""

    def __init__(self, upstream_port: int, *, cut_up: int | None = None, cut_down: int | None = None) -> None:
        if cut_up is not None and cut_down is not None:
            raise ValueError("cut one direction at a time")
        self.upstream_port = upstream_port
        self.cut_up = cut_up
        self.cut_down = cut_down
        self.connections: list[ConnStats] = []
        self._conns: list[_Conn] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def cuts(self) -> int:
        return sum(1 for c in self.connections if c.cut)

    @property
    def bytes_up(self) -> int:
        return sum(c.up for c in self.connections)

    @property
    def bytes_down(self) -> int:
        return sum(c.down for c in self.connections)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for conn in list(self._conns):
            conn.close()
        for t in list(self._threads):
            t.join(timeout=5)

    # ---- the work ----

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(30)
            upstream.settimeout(30)
            stats = ConnStats()
            self.connections.append(stats)
            conn = _Conn(client, upstream, stats)
            self._conns.append(conn)
            for direction, src, dst, limit in (
                ("up", client, upstream, self.cut_up),
                ("down", upstream, client, self.cut_down),
            ):
                t = threading.Thread(target=self._pump, args=(conn, direction, src, dst, limit), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, conn: _Conn, direction: str, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        forwarded = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and forwarded + len(data) >= limit:
                    part = data[: limit - forwarded]
                    if part:
                        dst.sendall(part)
                    forwarded += len(part)
                    self._count(conn, direction, len(part))
                    conn.stats.cut = direction
                    break
                dst.sendall(data)
                forwarded += len(data)
                self._count(conn, direction, len(data))
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _count(conn: _Conn, direction: str, n: int) -> None:
        if direction == "up":
            conn.stats.up += n
        else:
            conn.stats.down += n
