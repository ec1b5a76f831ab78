"""A loopback TCP proxy that behaves like a 2G link: one-way delay and a byte rate, each way.

``ThrottleProxy(upstream_port, rate_bps=50_000, one_way_s=0.25)`` listens on 127.0.0.1
(a free port) and forwards each connection to ``127.0.0.1:upstream_port``. Each
direction is a link of its own, modelled as a queue in front of a slow wire:

* bytes read from one side are cut into pieces of ``piece`` bytes; a piece starts on
  the wire when the wire is free (``start = max(arrival, wire_free)``), occupies it for
  ``8 * len / rate_bps`` seconds, and is delivered ``one_way_s`` after it left the wire:
  a 50 kbit/s link with 250 ms of latency each way has a 500 ms round trip, and a
  response cannot start back before the request has fully crossed;
* a new connection pays one round trip before its first byte may leave (the TCP
  handshake: the client's ``connect`` returns at once on loopback, so the proxy holds the
  client's first bytes instead);
* nothing is dropped, and the queue is unbounded (a large buffer at the bottleneck).

What is not modelled: TCP/IP headers (40 bytes per segment, about 3% at a 1,460-byte
MSS, more with a small 2G MTU), ACKs sharing the uplink, loss and retransmission, slow
start (irrelevant here: the path holds about 3 KB in flight). The proxy counts the bytes
it forwards each way (``up``: client → server, ``down``: server → client), HTTP headers
and bodies alike, since it sits below HTTP.

``ThrottleProxy(..., rate_bps=None, one_way_s=0)`` forwards at full speed and only
counts. Loopback only; every thread is a daemon; ``close()`` stops and joins them
(bounded).
"""

from __future__ import annotations

import heapq
import socket
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Counts:
    up: int = 0  # client -> server
    down: int = 0  # server -> client
    connections: int = 0

    @property
    def total(self) -> int:
        return self.up + self.down


@dataclass
class _Link:
    """One direction of one connection: reader puts delivery-timed pieces, writer sends them."""

    src: socket.socket
    dst: socket.socket
    rate_Bps: float | None
    one_way_s: float
    piece: int
    wire_free: float
    counts: Counts
    direction: str
    lock: threading.Lock
    queue: list[tuple[float, int, bytes | None]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    n: int = 0

    def schedule(self, data: bytes | None) -> None:
        now = time.monotonic()
        with self.cond:
            if data is None:  # EOF travels behind the last piece
                deliver = max(now, self.wire_free) + self.one_way_s
                self.n += 1
                heapq.heappush(self.queue, (deliver, self.n, None))
            else:
                for i in range(0, len(data), self.piece):
                    part = data[i : i + self.piece]
                    start = max(now, self.wire_free)
                    self.wire_free = start + (len(part) / self.rate_Bps if self.rate_Bps else 0.0)
                    self.n += 1
                    heapq.heappush(self.queue, (self.wire_free + self.one_way_s, self.n, part))
            self.cond.notify()

    def read_loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    data = self.src.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                with self.lock:
                    if self.direction == "up":
                        self.counts.up += len(data)
                    else:
                        self.counts.down += len(data)
                self.schedule(data)
        finally:
            self.schedule(None)

    def write_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.cond:
                while not self.queue and not stop.is_set():
                    self.cond.wait(0.1)
                if stop.is_set():
                    return
                deliver, _, part = self.queue[0]
                wait = deliver - time.monotonic()
                if wait > 0:
                    self.cond.wait(min(wait, 0.1))
                    continue
                heapq.heappop(self.queue)
            try:
                if part is None:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(part)
            except OSError:
                return


class ThrottleProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream_port> through a slow, distant link."""

    def __init__(self, upstream_port: int, *, rate_bps: float | None = 50_000, one_way_s: float = 0.25,
                 piece: int = 256, handshake: bool = True) -> None:
        self.upstream_port = upstream_port
        self.rate_Bps = rate_bps / 8 if rate_bps else None
        self.one_way_s = one_way_s
        self.piece = piece
        self.handshake = handshake
        self.counts = Counts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop, f"throttle-accept-{self.port}")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(self.counts.up, self.counts.down, self.counts.connections)

    def _spawn(self, target: object, name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(0.2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            with self._lock:
                self.counts.connections += 1
            now = time.monotonic()
            rtt = 2 * self.one_way_s if self.handshake else 0.0
            up = _Link(client, upstream, self.rate_Bps, self.one_way_s, self.piece, now + rtt, self.counts,
                       "up", self._lock)
            down = _Link(upstream, client, self.rate_Bps, self.one_way_s, self.piece, now, self.counts,
                         "down", self._lock)
            for link, name in ((up, "up"), (down, "down")):
                self._spawn(link.read_loop, f"throttle-{name}-read", self._stop)
                self._spawn(link.write_loop, f"throttle-{name}-write", self._stop)

    def close(self, timeout: float = 5.0) -> None:
        """Stop forwarding, close every socket, join every thread (at most ``timeout`` s)."""
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> ThrottleProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
