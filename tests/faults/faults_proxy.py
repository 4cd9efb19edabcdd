"""A TCP proxy between s3fs and the S3 server that can drop or stall connections mid-upload.

Every connection is pumped by two threads. While a fault is armed, a connection that has carried
more than ``threshold`` bytes from the client (since the fault was armed) is either reset
(``drop``: the client sees the connection die in the middle of its request body) or frozen
(``stall``: nothing more is read or forwarded, the socket stays open, so only the client's own
timeouts can end the request). ``heal()`` disarms the fault and closes frozen connections.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProxyStats:
    connections: int = 0
    dropped: int = 0
    stalled: int = 0
    bytes_up: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class _Conn:
    def __init__(self, proxy: FaultyProxy, client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.generation = proxy.generation
        self.sent_since_armed = 0
        self.closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._pump_up, daemon=True, name="proxy-up").start()
        threading.Thread(target=self._pump_down, daemon=True, name="proxy-down").start()

    def _pump_up(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.client.recv(65536)
                if not data:
                    break
                if self._fault(len(data)):
                    return
                self.upstream.sendall(data)
                self.proxy.stats.add("bytes_up", len(data))
        except OSError:
            pass
        self.close()

    def _pump_down(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.upstream.recv(65536)
                if not data:
                    break
                self.client.sendall(data)
        except OSError:
            pass
        self.close()

    def _fault(self, n: int) -> bool:
        """Apply the armed fault once this connection passed the threshold; True: stop pumping."""
        proxy = self.proxy
        mode = proxy.mode
        if mode == "pass":
            self.sent_since_armed = 0
            return False
        self.sent_since_armed += n
        if self.sent_since_armed <= proxy.threshold:
            return False
        if mode == "drop":
            proxy.stats.add("dropped")
            self.close(reset=True)
            return True
        proxy.stats.add("stalled")  # stall: stop reading, keep the socket open until healed
        proxy.healed.wait()
        self.close(reset=True)
        return True

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            try:
                if reset:  # RST instead of FIN: the peer sees "connection reset"
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.proxy._forget(self)


class FaultyProxy:
    """``with FaultyProxy(host, port) as proxy: ... proxy.endpoint_url ...``"""

    def __init__(self, upstream_host: str, upstream_port: int, threshold: int = 256 * 1024):
        self.upstream = (upstream_host, upstream_port)
        self.threshold = threshold
        self.mode = "pass"
        self.healed = threading.Event()
        self.healed.set()
        self.generation = 0
        self.stats = ProxyStats()
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="proxy-accept")

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def arm(self, mode: str, threshold: int | None = None) -> None:
        """Start dropping or stalling connections that carry more than ``threshold`` bytes."""
        assert mode in ("drop", "stall")
        if threshold is not None:
            self.threshold = threshold
        if mode == "stall":
            self.healed.clear()
        with self._lock:
            for conn in self._conns:
                conn.sent_since_armed = 0
        self.mode = mode

    def heal(self) -> None:
        self.mode = "pass"
        self.healed.set()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client, upstream)
            with self._lock:
                self._conns.add(conn)
            self.stats.add("connections")
            conn.start()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def close(self) -> None:
        self._stopped = True
        self.heal()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()


def proxied_options(endpoint: str, **config: Any) -> dict[str, Any]:
    """fsspec options for moto behind the proxy at ``endpoint``: botocore ``config`` (timeouts,
    retries) and a filesystem of its own, so that all its connections go through the proxy."""
    return {
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "key": "testing",
        "secret": "testing",
        "config_kwargs": config,
        "skip_instance_cache": True,
    }
