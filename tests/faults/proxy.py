"""A loopback HTTP proxy that injects faults request by request (docs/faults.md).

``FaultProxy(upstream_port, rnd, p_fault)`` listens on 127.0.0.1 (a free port). It reads
each HTTP/1.1 request a laptop sends (headers, then ``Content-Length`` bytes of body),
forwards it to ``127.0.0.1:<upstream_port>`` on a fresh connection, reads the answer the
same way and relays it; the laptop's connection stays open for its next request. With
probability ``p_fault`` a request meets one fault instead:

``drop``          the connection is closed, before the request is forwarded or after the
                  server answered (the answer is lost)
``delay``         the request waits 50-600 ms before it goes on
``duplicate``     the request is sent to the server twice at the same moment; the laptop
                  gets one of the answers
``replay``        an earlier request (one of the last few, or one sampled from the whole
                  run; half the time the same laptop's, of the same kind, so its own stale
                  pull cursor arrives just before its current pull) is sent to the server
                  again, then the current one goes on
``reorder``       the request is held until a later request (another laptop's connection)
                  has passed it, then sent (a hold that nobody overtook counts as a delay)
``truncate_up``   only the first N bytes of the request reach the server, then both sides
                  are closed
``truncate_down`` the server gets the whole request; only the first N bytes of its answer
                  reach the laptop, then both sides are closed

Requests carry envelopes whose header is plain JSON (docs/protocol.md): the proxy reads
``sender``, ``type`` and ``seq`` from it, for its counts and for the harness's hooks
(``on_sent`` the moment a whole request has reached the server: the harness kills the
server a few milliseconds later, while it merges; ``on_answer`` before an answer is
relayed: the harness kills the laptop there, so the server's work is done and its answer
never arrives). ``upstream_port`` may change while it runs (a restarted server).

Only 127.0.0.1 is ever used; threads are daemons, and ``close`` shuts every socket.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

HOST = "127.0.0.1"
KINDS = ("drop", "delay", "duplicate", "replay", "reorder", "truncate_up", "truncate_down")
MAX_HEAD = 65536
REPLAY_POOL = 32  # recent requests kept for replay, and as many sampled from the whole run
REORDER_WAIT_S = 1.5
IO_TIMEOUT_S = 30.0


class _Closed(Exception):
    """The other side closed (or broke) the connection."""


@dataclass(frozen=True)
class Request:
    raw: bytes  # the whole request as the laptop sent it
    path: str
    body: bytes
    sender: str | None  # the envelope's header, when the body is an envelope
    kind: str | None
    seq: int | None


def envelope_header(body: bytes) -> dict[str, object] | None:
    """The plain JSON header of an envelope (docs/protocol.md "Layout"), or None."""
    if len(body) < 8 or body[:4] != b"MQE1":
        return None
    n = int.from_bytes(body[4:8], "big")
    try:
        doc = json.loads(body[8 : 8 + n])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _recv_until(sock: socket.socket, buf: bytearray, marker: bytes) -> int:
    while True:
        i = buf.find(marker)
        if i >= 0:
            return i
        if len(buf) > MAX_HEAD:
            raise _Closed("head too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed("eof")
        buf += chunk


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def read_message(sock: socket.socket, buf: bytearray, *, until_eof: bool = False) -> tuple[bytes, bytes]:
    """One HTTP message from ``sock`` (``buf`` holds bytes already read): (head, body)."""
    end = _recv_until(sock, buf, b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    length = _content_length(head)
    if length is None and until_eof:  # an answer without a length ends with the connection
        while chunk := sock.recv(65536):
            buf += chunk
        length = len(buf)
    length = length or 0
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed("eof in body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return head, body


def _close(*socks: socket.socket | None) -> None:
    for s in socks:
        if s is None:
            continue
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


class FaultProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, injecting faults (module docstring)."""

    def __init__(self, upstream_port: int, *, rnd: random.Random, p_fault: float = 0.3,
                 kinds: tuple[str, ...] = KINDS) -> None:
        self.upstream_port = upstream_port
        self.rnd = rnd
        self.p_fault = p_fault
        self.kinds = kinds
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.on_sent: Callable[[Request], None] | None = None
        self.on_answer: Callable[[Request], bool] | None = None  # True: drop the answer
        self._lock = threading.Lock()
        self._passed = 0  # requests forwarded so far (a held request waits for this to grow)
        self._cond = threading.Condition(self._lock)
        self._pool: list[Request] = []  # the last REPLAY_POOL requests
        self._old: list[Request] = []  # a uniform sample of all of them (reservoir)
        self._seen = 0
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(32)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
            self._cond.notify_all()
        _close(*socks)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- bookkeeping ----

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def _choose(self) -> str | None:
        with self._lock:
            if self.rnd.random() >= self.p_fault:
                return None
            return self.rnd.choice(self.kinds)

    def _rand(self, fn: Callable[[random.Random], object]) -> object:
        with self._lock:
            return fn(self.rnd)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.add(s)

    def _untrack(self, *socks: socket.socket | None) -> None:
        with self._lock:
            for s in socks:
                self._socks.discard(s)  # type: ignore[arg-type]
        _close(*socks)

    # ---- the work ----

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(IO_TIMEOUT_S)
            self._track(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self._stop.is_set():
                head, body = read_message(client, buf)
                if not self._one(client, head, body):
                    break
        except (_Closed, OSError, ValueError):
            pass
        finally:
            self._untrack(client)

    def _parse(self, head: bytes, body: bytes) -> Request:
        first = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        path = first[1] if len(first) > 1 else "?"
        h = envelope_header(body) or {}
        seq = h.get("seq")
        return Request(head + body, path, body, str(h["sender"]) if "sender" in h else None,
                       str(h["type"]) if "type" in h else None, seq if isinstance(seq, int) else None)

    def _upstream(self, raw: bytes, *, limit: int | None = None, req: Request | None = None) -> bytes | None:
        """Send ``raw`` (its first ``limit`` bytes) to the server on a new connection; its answer
        (head + body), or None when the connection failed or was cut on purpose."""
        try:
            up = socket.create_connection((HOST, self.upstream_port), timeout=IO_TIMEOUT_S)
        except OSError:
            return None
        self._track(up)
        try:
            if limit is not None:
                up.sendall(raw[:limit])
                return None
            up.sendall(raw)
            with self._cond:
                self._passed += 1
                self._cond.notify_all()
            if req is not None and self.on_sent is not None:
                self.on_sent(req)
            head, body = read_message(up, bytearray(), until_eof=True)
            return head + body
        except (_Closed, OSError, ValueError):
            return None
        finally:
            self._untrack(up)

    def _one(self, client: socket.socket, head: bytes, body: bytes) -> bool:
        """Handle one request; False when the laptop's connection is to be closed."""
        req = self._parse(head, body)
        with self._lock:
            self.requests += 1
            replayable = self._pool + self._old
            if req.kind in ("changeset", "request"):
                self._pool.append(req)
                del self._pool[:-REPLAY_POOL]
                self._seen += 1
                if len(self._old) < REPLAY_POOL:
                    self._old.append(req)
                else:
                    i = self.rnd.randrange(self._seen)
                    if i < REPLAY_POOL:
                        self._old[i] = req
        fault = self._choose()
        if fault == "replay" and not replayable:
            fault = "duplicate"
        if fault == "drop" and self._rand(lambda r: r.random() < 0.5):
            self._count("drop")
            return False  # the request never reaches the server
        if fault == "delay":
            self._count("delay")
            time.sleep(float(self._rand(lambda r: r.uniform(0.05, 0.6))))  # type: ignore[arg-type]
        if fault == "reorder":
            with self._cond:
                mark = self._passed
                overtaken = self._cond.wait_for(lambda: self._passed > mark or self._stop.is_set(),
                                                timeout=REORDER_WAIT_S)
            self._count("reorder" if overtaken and not self._stop.is_set() else "delay")
        if fault == "replay":
            # half the time an older request of the same laptop and kind (its own stale pull
            # cursor just before its current pull), else anyone's
            own = [o for o in replayable if o.sender == req.sender and o.kind == req.kind and o.raw != req.raw]
            old = self._rand(lambda r: r.choice(own if own and r.random() < 0.5 else replayable))
            assert isinstance(old, Request)
            self._upstream(old.raw)
            self._count("replay")
        if fault == "truncate_up":
            n = int(self._rand(lambda r: r.randint(1, max(1, len(req.raw) - 1))))  # type: ignore[arg-type]
            self._upstream(req.raw, limit=n)
            self._count("truncate_up")
            return False
        if fault == "duplicate":
            answers: list[bytes | None] = []
            twin = threading.Thread(target=lambda: answers.append(self._upstream(req.raw)), daemon=True)
            twin.start()
            answer = self._upstream(req.raw, req=req)
            twin.join(timeout=IO_TIMEOUT_S)
            if answer is None and answers:
                answer = answers[0]
            self._count("duplicate")
        else:
            answer = self._upstream(req.raw, req=req)
        if answer is None:
            return False  # the server is down or broke the connection: so does the proxy
        if self.on_answer is not None and self.on_answer(req):
            return False  # the laptop was killed while its answer was on the way
        if fault == "drop":
            self._count("drop")
            return False  # the server did the work; its answer is lost
        if fault == "truncate_down":
            n = int(self._rand(lambda r: r.randint(1, max(1, len(answer) - 1))))  # type: ignore[arg-type]
            client.sendall(answer[:n])
            self._count("truncate_down")
            return False
        client.sendall(answer)
        return True
