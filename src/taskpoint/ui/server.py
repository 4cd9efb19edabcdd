"""The web view's HTTP server: standard library only (`http.server.ThreadingHTTPServer`).

Routes (GET only)::

    /                                                  executions page
    /executions/<id>                                   execution page
    /static/<name>                                     a packaged asset (exact name)
    /api/executions[?status=S&q=TEXT&offset=N&limit=N] see api.py for every document
    /api/executions/<id>
    /api/executions/<id>/checkpoints
    /api/executions/<id>/nodes/<key>/checkpoints
    /api/executions/<id>/nodes/<key>/checkpoints/<version>.tar
    /api/executions/<id>/nodes/<key>/attempts/<n>/log[?offset=N | ?tail=N]

Each path segment is percent-decoded on its own (so a node key may hold ``#`` or ``/`` as
``%23``/``%2F``) and then looked up among the recorded ids, node keys and committed versions.
Under ``/api/`` and ``/static/`` an error is a JSON document ``{"error": ...}``; a page that
names nothing (an unknown execution id) is a readable HTML page with the same status.

The executions list is a page of rows; ``X-Total-Count`` says how many executions match and
``X-Status-Counts`` (a JSON object) how many of each status match the search ``q`` alone. A log
is sent as ``text/plain`` bytes, at most `logview.MAX_CHUNK` of them, with ``X-Log-Start`` (the
offset of its first byte) and ``X-Log-Size`` (the log's size when it was read).
"""

from __future__ import annotations

import html
import json
import logging
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote

from taskpoint.engine import blobs
from taskpoint.engine.config import Engine
from taskpoint.errors import TaskpointError
from taskpoint.ui import assets, auth
from taskpoint.ui.api import DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY_CHARS, STATUSES, Api, NotFound
from taskpoint.ui.logview import LogUnreadable
from taskpoint.ui.readonly import ExecutionQuery, RecordsSource
from taskpoint.ui.tarstream import VersionTar, archive_name

log = logging.getLogger("taskpoint.ui")
_TOKEN_RE = re.compile(r"token=[^&\s'\"]*")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


class BadRequest(ValueError):
    """A malformed request (answered with 400)."""


class DamagedDownload(Exception):
    """A checkpoint version that cannot be sent as it is in the store (answered with 502)."""


class PageNotFound(NotFound):
    """A page (not an API document) that names nothing: answered with a readable 404 page."""


class UiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        engine: Engine,
        token: str | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.records = RecordsSource(engine.resolved_home())
        self.api = Api(engine)
        self.token = token
        self.loopback = auth.is_loopback(address[0])
        self.assets = assets.load_assets()
        super().__init__(address, UiHandler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, host: str | None = None) -> str:
        """The address to open (with ``?token=`` when one is required)."""
        host = host or cast(str, self.server_address[0])  # an AF_INET(6) address: a str
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        qs = f"?token={quote(self.token, safe='')}" if self.token else ""
        return f"http://{host}:{self.port}/{qs}"


class UiHandler(BaseHTTPRequestHandler):
    server: UiServer
    protocol_version = "HTTP/1.1"
    server_version = "taskpoint-ui"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this many seconds

    # -- entry -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            if not self._authorized(query):
                return
            segments = _segments(path)
            self._route(segments, query)
        except PageNotFound as exc:
            self._not_found_page(exc)
        except NotFound as exc:
            self._json({"error": str(exc)}, HTTPStatus.NOT_FOUND)
        except BadRequest as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (DamagedDownload, LogUnreadable) as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_GATEWAY)
        except TaskpointError as exc:
            log.warning("%s: %s", path, exc)
            self._json({"error": str(exc)}, HTTPStatus.BAD_GATEWAY)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            log.exception("internal error serving %s", path)
            self._json(
                {"error": f"internal error: {type(exc).__name__}: {exc}"},
                HTTPStatus.INTERNAL_SERVER_ERROR,
            )

    def _authorized(self, query: str) -> bool:
        token = self.server.token
        if token is not None:
            given = auth.request_token(self.headers.get("Authorization"), query)
            if auth.token_matches(token, given):
                return True
            self._json(
                {
                    "error": "a token is required: open the URL printed by `taskpoint ui` "
                    "(it ends with ?token=...) or send 'Authorization: Bearer <token>'"
                },
                HTTPStatus.UNAUTHORIZED,
                {"WWW-Authenticate": 'Bearer realm="taskpoint"'},
            )
            return False
        if self.server.loopback and not auth.host_is_loopback(self.headers.get("Host")):
            self._json(
                {"error": "this server only answers requests for a loopback host"},
                HTTPStatus.FORBIDDEN,
            )
            return False
        return True

    def _route(self, seg: list[str], query: str) -> None:
        token = self.server.token
        if seg == [""]:
            return self._send(assets.page(self.server.assets, "executions", token), "text/html")
        if len(seg) == 2 and seg[0] == "executions":
            with self.server.records.open() as records:
                try:
                    self.server.api.load(records, seg[1])
                except NotFound:
                    raise PageNotFound(seg[1]) from None
            return self._send(assets.page(self.server.assets, "execution", token), "text/html")
        if len(seg) == 2 and seg[0] == "static":
            asset = self.server.assets.get(seg[1])
            if asset is None or seg[1] in assets.PAGES.values():
                raise NotFound(f"no asset {seg[1]!r}")
            return self._send(asset.body, asset.content_type, cache="no-cache")
        if seg[:2] == ["api", "executions"]:
            return self._api(seg[2:], query)
        if seg[0] in ("api", "static"):
            raise NotFound(f"no such endpoint {'/'.join(seg)!r}")
        raise PageNotFound(None)

    def _api(self, rest: list[str], query: str) -> None:
        api, source = self.server.api, self.server.records
        if not rest:
            execution_query, offset, limit = _list_params(query)
            with source.open() as records:
                page = api.executions(records, execution_query, offset, limit)
            counts = json.dumps(page.counts, separators=(",", ":"))
            return self._json(
                page.rows, extra={"X-Total-Count": str(page.total), "X-Status-Counts": counts}
            )
        if len(rest) == 1:
            with source.open() as records:
                return self._json(api.execution(records, rest[0]))
        if len(rest) == 2 and rest[1] == "checkpoints":
            with source.open() as records:
                return self._json(api.checkpoints(records, rest[0]))
        if len(rest) == 4 and rest[1] == "nodes" and rest[3] == "checkpoints":
            with source.open() as records:
                return self._json(api.checkpoints(records, rest[0], rest[2]))
        if len(rest) == 5 and rest[1] == "nodes" and rest[3] == "checkpoints":
            return self._download(rest[0], rest[2], rest[4])
        if len(rest) == 6 and rest[1] == "nodes" and rest[3] == "attempts" and rest[5] == "log":
            return self._log(rest[0], rest[2], rest[4], query)
        raise NotFound("no such API endpoint")

    # -- attempt logs ----------------------------------------------------------------------------

    def _log(self, execution_id: str, node: str, attempt: str, query: str) -> None:
        offset, tail = _log_params(query)
        with self.server.records.open() as records:
            execution = self.server.api.load(records, execution_id)
            source = self.server.api.attempt_log(execution, node, attempt)
        chunk = source.read(offset, tail)
        headers = {"X-Log-Start": str(chunk.start), "X-Log-Size": str(chunk.size)}
        # Untrusted bytes: sent as plain text (nosniff), never as HTML; the page escapes them.
        self._send(chunk.data, "text/plain; charset=utf-8", extra=headers)

    # -- download --------------------------------------------------------------------------------

    def _download(self, execution_id: str, node: str, name: str) -> None:
        if not name.endswith(".tar"):
            raise NotFound("downloads are named <version>.tar")
        version_id = name[: -len(".tar")]
        with self.server.records.open() as records:
            execution = self.server.api.load(records, execution_id)
            scope = self.server.api.scope(execution, node)
        if version_id not in scope.committed_ids():
            raise NotFound(f"node {node} has no committed checkpoint version {version_id!r}")
        try:
            archive = VersionTar(scope.manifest(version_id), scope.open_file)
        except FileNotFoundError:
            raise NotFound(f"checkpoint version {version_id} is gone") from None
        except Exception as exc:  # a damaged manifest (DamagedVersion) or a date out of range
            raise DamagedDownload(f"checkpoint version {version_id} is damaged: {exc}") from None
        filename = archive_name(execution.id, blobs.node_dir(node), version_id)
        out = _ChunkedWriter(self.wfile)

        def started() -> None:  # called once the first file is verified
            out.started = True
            self.send_response(HTTPStatus.OK)
            self._headers(
                {
                    "Content-Type": "application/x-tar",
                    "Content-Disposition": f'attachment; filename="{filename}"',
                    "Transfer-Encoding": "chunked",
                    "Cache-Control": "no-store",
                }
            )

        try:
            archive.write(out, started)
            out.finish()
        except Exception as exc:
            where = f"{execution.id}/{node}/{version_id}"
            log.warning("download of %s refused or aborted: %s", where, exc)
            if not out.started:  # nothing sent yet: say what is wrong
                raise DamagedDownload(
                    f"checkpoint version {version_id} cannot be downloaded: {exc}"
                ) from None
            # Headers and verified files are sent: the only honest signal left is to end the
            # connection without the final chunk, which every HTTP client reports as an
            # incomplete download.
            self.close_connection = True

    # -- responses -------------------------------------------------------------------------------

    def _not_found_page(self, exc: PageNotFound) -> None:
        execution_id = exc.args[0] if exc.args else None
        if execution_id is not None:
            if len(execution_id) > 200:
                execution_id = execution_id[:199] + "\N{HORIZONTAL ELLIPSIS}"
            title = "Unknown execution"
            message = (
                f"No execution with the id <code>{html.escape(execution_id)}</code> is recorded "
                "here. Ids must be given in full, exactly as listed."
            )
        else:
            title = "Page not found"
            message = "There is no page at this address."
        body = assets.not_found_page(self.server.assets, self.server.token, title, message)
        self._send(body, "text/html", status=HTTPStatus.NOT_FOUND)

    def _json(
        self, doc: Any, status: int = HTTPStatus.OK, extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._send(body, "application/json", status=status, extra=extra)

    def _send(
        self,
        body: bytes,
        content_type: str,
        *,
        status: int = HTTPStatus.OK,
        cache: str = "no-store",
        extra: dict[str, str] | None = None,
    ) -> None:
        if "charset" not in content_type and content_type.startswith(("text/", "application/j")):
            content_type += "; charset=utf-8"
        self.send_response(status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        headers["Cache-Control"] = cache
        self._headers({**headers, **(extra or {})})
        self.wfile.write(body)

    def _headers(self, headers: dict[str, str]) -> None:
        for name, value in {**SECURITY_HEADERS, **headers}.items():
            self.send_header(name, value)
        self.end_headers()

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def log_message(self, format: str, *args: Any) -> None:
        # An error message may quote the request line, and with it ?token=...: redact it.
        message = format % args if args else format
        log.debug("%s %s", self.address_string(), _TOKEN_RE.sub("token=<redacted>", message))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.partition("?")[0]
        log.info('"%s %s" %s', self.command, path, getattr(code, "value", code))


class _ChunkedWriter:
    """HTTP/1.1 chunked transfer encoding over the response stream."""

    def __init__(self, wfile: Any) -> None:
        self.wfile = wfile
        self.started = False  # whether the response's status and headers went out

    def write(self, data: bytes) -> int:
        if data:
            self.wfile.write(b"%x\r\n" % len(data))
            self.wfile.write(data)
            self.wfile.write(b"\r\n")
        return len(data)

    def finish(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _segments(path: str) -> list[str]:
    if not path.startswith("/"):
        raise BadRequest("the request path must start with /")
    try:
        segments = [unquote(s, errors="strict") for s in path[1:].split("/")]
    except UnicodeDecodeError:
        raise BadRequest("the request path is not valid UTF-8") from None
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # a trailing slash
    if any("\x00" in s for s in segments):
        raise BadRequest("the request path holds a NUL byte")
    return segments


def _int_param(params: dict[str, list[str]], name: str, default: int | None) -> int | None:
    values = params.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def _list_params(query: str) -> tuple[ExecutionQuery, int, int]:
    params = parse_qs(query)
    status = params.get("status", [None])[-1] or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    q = (params.get("q", [""])[-1]).strip() or None
    if q is not None and len(q) > MAX_QUERY_CHARS:
        raise BadRequest(f"q must be at most {MAX_QUERY_CHARS} characters")
    limit = cast(int, _int_param(params, "limit", DEFAULT_LIMIT))
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    offset = cast(int, _int_param(params, "offset", 0))
    if offset < 0:
        raise BadRequest("offset must be 0 or more")
    return ExecutionQuery(status, q), offset, limit


def _log_params(query: str) -> tuple[int, int | None]:
    params = parse_qs(query)
    if "offset" in params and "tail" in params:
        raise BadRequest("give offset or tail, not both")
    offset = cast(int, _int_param(params, "offset", 0))
    tail = _int_param(params, "tail", None)
    if offset < 0 or (tail is not None and tail < 0):
        raise BadRequest("offset and tail must be 0 or more")
    return offset, tail


def make_server(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8265,
    token: str | None = None,
) -> UiServer:
    """A server ready to ``serve_forever()`` over the engine's home (records) and storage
    options; off loopback it always requires a token."""
    return UiServer((host, port), engine=engine, token=auth.resolve_token(host, token))


def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8265,
    token: str | None = None,
    echo: Any = print,
) -> None:
    """Serve until Ctrl-C, after printing where (and the token when one is required)."""
    server = make_server(engine, host, port, token)
    with server:
        echo(f"taskpoint ui: records {server.records.db_path} (read-only)")
        if not server.records.exists():
            echo("taskpoint ui: no executions recorded there yet; the list fills in as they run")
        if server.token is not None and token is None:
            echo("taskpoint ui: bound off loopback, so requests need this generated token:")
            echo(f"  {server.token}")
        echo(f"taskpoint ui: serving on {server.url()}  (Ctrl-C to stop)")
        try:
            server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            echo("taskpoint ui: stopped")
