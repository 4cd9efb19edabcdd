"""Off loopback every request needs the token; on loopback the Host must be a loopback name."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from ui_support import get, serving

from support.fixtures import cli_command, tp_env
from taskpoint.ui import auth


@pytest.fixture(scope="module")
def exposed(ui_home):
    """The shared home served on every interface (0.0.0.0), port 0, with a generated token."""
    with serving(ui_home.path, host="0.0.0.0") as server:
        yield server


def test_binding_off_loopback_generates_a_token(exposed):
    assert exposed.token and len(exposed.token) >= 32
    assert f"?token={exposed.token}" in exposed.url()


@pytest.mark.parametrize(
    "path", ["/api/executions", "/", "/static/common.js", "/executions/x", "/nope"]
)
def test_requests_without_the_token_are_refused(exposed, path):
    url = f"http://127.0.0.1:{exposed.port}{path}"
    response = get(url)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(url, {"Authorization": "Bearer wrong-token"}).status == 401
    assert get(url + "?token=wrong-token").status == 401
    assert get(url, {"Authorization": f"Basic {exposed.token}"}).status == 401


def test_requests_with_the_token_are_served(exposed, ui_home):
    url = f"http://127.0.0.1:{exposed.port}/api/executions"
    assert get(url, {"Authorization": f"Bearer {exposed.token}"}).status == 200
    response = get(f"{url}?token={exposed.token}")
    assert response.status == 200 and len(response.json()) == len(ui_home.ids)
    page = get(f"http://127.0.0.1:{exposed.port}/?token={exposed.token}")
    assert page.status == 200
    # The page's own asset URLs carry the token (a <script src> cannot send a header).
    assert f"/static/common.js?token={exposed.token}".encode() in page.body


def test_a_given_token_is_required_even_on_loopback(ui_home):
    with serving(ui_home.path, token="s3cret") as server:
        url = f"http://127.0.0.1:{server.port}/api/executions"
        assert get(url).status == 401
        assert get(url, {"Authorization": "Bearer s3cret"}).status == 200


def test_loopback_server_refuses_other_host_names(ui_server):
    url = f"http://127.0.0.1:{ui_server.port}/api/executions"
    assert get(url).status == 200
    assert get(url, {"Host": f"localhost:{ui_server.port}"}).status == 200
    assert get(url, {"Host": "attacker.example:80"}).status == 403  # DNS rebinding


def test_responses_carry_restrictive_headers(ui_server):
    response = get(f"http://127.0.0.1:{ui_server.port}/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Python" not in response.headers["Server"]


def test_token_helpers():
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("::1")
    assert auth.is_loopback("localhost") and not auth.is_loopback("0.0.0.0")
    assert not auth.is_loopback("example.org") and not auth.is_loopback("")
    assert auth.resolve_token("127.0.0.1", None) is None
    assert auth.resolve_token("0.0.0.0", "given") == "given"
    with pytest.raises(ValueError):
        auth.resolve_token("0.0.0.0", " ")
    assert auth.request_token("Bearer abc", "") == "abc"
    assert auth.request_token(None, "a=1&token=xyz") == "xyz"
    assert auth.host_is_loopback("[::1]:8265") and auth.host_is_loopback("127.0.0.1:1")
    assert not auth.host_is_loopback("127.0.0.1.evil.example")


def test_cli_serves_off_loopback_with_a_printed_token(ui_home):
    proc = subprocess.Popen(
        cli_command("ui", "--home", ui_home.path, "--host", "0.0.0.0", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=tp_env(),
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "taskpoint ui exited early:\n" + "".join(lines)
            lines.append(line)
            if "serving on" in line:
                break
        match = re.search(r"http://\S+:(\d+)/\?token=(\S+)", lines[-1])
        assert match, lines
        port, token = match.groups()
        assert token in "".join(lines[:-1])  # the generated token is printed on its own too
        url = f"http://127.0.0.1:{port}/api/executions"
        assert get(url).status == 401
        assert get(url, {"Authorization": f"Bearer {token}"}).status == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_help_does_not_import_the_server():
    code = (
        "import sys\n"
        "from taskpoint.cli.app import run_cli\n"
        "assert run_cli(['--help']) == 0\n"
        "assert run_cli(['ui', '--help']) == 0\n"
        "assert 'taskpoint.ui.server' not in sys.modules, 'imported eagerly'\n"
        "assert 'http.server' not in sys.modules, 'imported eagerly'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=tp_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ui" in result.stdout and "--token" in result.stdout
