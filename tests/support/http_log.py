"""An HTTP proxy in front of the S3 server that logs every request: which objects a run fetched.

``HttpLog(upstream)`` listens on 127.0.0.1 (any free port) and forwards each request to
``upstream`` (the moto server), noting method, object path, status and response body size. Point
s3fs at ``log.endpoint_url`` and ask ``log.gets(pattern)`` which objects were read: a test proves
that a restore fetched no payload bytes, not only that it was fast.
"""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # /bucket/key, unquoted, without the query
    status: int
    body_bytes: int  # of the response


class HttpLog:
    """``with HttpLog("http://127.0.0.1:PORT") as log: ... log.endpoint_url ...``"""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def note(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def gets(self, pattern: str) -> list[Request]:
        """Successful GETs of objects whose path matches the regular expression ``pattern``."""
        found = re.compile(pattern)
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "GET" and r.status < 300 and found.search(r.path)
            ]

    def __enter__(self) -> HttpLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(log: HttpLog) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for uploads that ask

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log on stderr

        def _forward(self) -> None:
            body = self._request_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            # A connection per request: a reused one the server closed meanwhile would fail a
            # request that may not be sent twice (a conditional PUT).
            upstream = http.client.HTTPConnection(*log.upstream, timeout=60)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            # Noted before the client has the answer: a test that reads the log right after
            # its request returned must find it there.
            path = unquote(urlsplit(self.path).path)
            log.note(Request(self.command, path, response.status, len(data)))
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                    continue
                self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _request_body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                pieces = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline().strip():
                            pass  # trailers
                        return b"".join(pieces)
                    pieces.append(self.rfile.read(size))
                    self.rfile.readline()
            length = self.headers.get("Content-Length")
            return self.rfile.read(int(length)) if length is not None else None

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Forward
