"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright's Python
package; no browser is ever downloaded). Screenshots of both pages go to a temporary folder, and
also to $TASKPOINT_UI_SCREENSHOTS when set (that is how docs/ui-*.png are refreshed)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_support import FLOWS, base_url, get, serving

from support.fixtures import cli_command, tp_env
from support.polling import wait_until

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]

if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is absent (apt-get install -y chromium): browser tests skipped",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright's Python package is missing (pip install playwright)"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        # A persistent context on a fresh --user-data-dir of our own (Playwright passes it).
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    yield page
    page.close()
    assert not problems, problems  # no script error, no CSP violation, no failed request


def save_screenshot(page, folder: Path, name: str) -> Path:
    path = folder / name
    bottom = page.evaluate(
        "Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)"
    )
    clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": bottom + 8}
    page.screenshot(path=str(path), full_page=True, clip=clip, type="png")
    extra = os.environ.get("TASKPOINT_UI_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    return path


def test_executions_page_lists_every_execution_and_filters(
    page, ui_home, ui_server, screenshot_dir
):
    page.goto(base_url(ui_server) + "/")
    for eid in ui_home.ids.values():
        page.wait_for_selector(f'#executions tr[data-id="{eid}"]')
    seed_row = page.locator(f'#executions tr[data-id="{ui_home.ids["seed"]}"]')
    assert seed_row.get_attribute("data-status") == "succeeded"
    assert "example" in seed_row.inner_text()
    assert seed_row.locator("td").nth(5).inner_text() == "3"  # attempts used
    save_screenshot(page, screenshot_dir, "ui-executions.png")

    page.click('button[data-filter="failed"]')
    rows = page.locator("#executions tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-id") == ui_home.ids["pipeline"]
    page.click('button[data-filter="all"]')
    assert rows.count() == len(ui_home.ids)


def test_seed_execution_page_shows_three_attempts_and_checkpoint_ticks(
    page, ui_home, ui_server, screenshot_dir
):
    seed = ui_home.ids["seed"]
    page.goto(f"{base_url(ui_server)}/")
    page.click(f'#executions tr[data-id="{seed}"] a.name')  # navigate like a user
    page.wait_for_url(f"**/executions/{seed}")
    page.wait_for_selector("#timeline .attempt-bar")
    bars = page.locator("#timeline .attempt-bar")
    assert bars.count() == 3
    statuses = [bars.nth(i).get_attribute("data-status") for i in range(3)]
    assert statuses == ["recoverable", "recoverable", "succeeded"]
    fills = [bars.nth(i).locator("rect").get_attribute("fill") for i in range(3)]
    assert fills[0] == fills[1] != fills[2]

    ticks = page.locator("#timeline .tick:not(.pruned)")
    assert [ticks.nth(i).get_attribute("data-version") for i in range(ticks.count())] == [
        "0003-000003",
        "0003-000004",
    ]
    hover = ticks.nth(1).locator("title").text_content()
    for expected in ("0003-000004", "step", "2 B", "attempt 3"):
        assert expected in hover
    pruned = page.locator("#timeline .tick.pruned")
    assert [pruned.nth(i).get_attribute("data-version") for i in range(2)] == [
        "0001-000004",
        "0002-000004",
    ]
    assert page.locator("#work svg.work .failure").count() == 2
    assert page.locator(".failure-card").count() == 2
    assert "Failed at iteration 4" in page.locator(".failure-card").first.inner_text()
    save_screenshot(page, screenshot_dir, "ui-execution.png")


def test_failed_execution_shows_the_traceback(page, ui_home, ui_server):
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['pipeline']}")
    card = page.locator('.failure-card[data-status="failed"]')
    card.locator("summary").click()
    text = card.locator("pre.traceback").inner_text()
    assert "Traceback" in text and "ValueError: cannot crunch 100 rows" in text


def test_download_link_returns_the_version_as_a_tar(page, ui_home, ui_server, tmp_path):
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['seed']}")
    link = page.locator('table.checkpoints tr[data-version="0003-000004"] a.download')
    with page.expect_download() as info:
        link.click()
    saved = tmp_path / "download.tar"
    info.value.save_as(saved)
    with tarfile.open(saved) as tar:
        assert tar.extractfile("0003-000004/data").read() == b"12"


def test_token_is_required_off_loopback_and_kept_by_the_page(page, browser, ui_home):
    with serving(ui_home.path, host="0.0.0.0") as server:
        base = f"http://127.0.0.1:{server.port}"
        refused = browser.new_page()
        try:
            assert refused.goto(base + "/").status == 401
        finally:
            refused.close()
        page.goto(f"{base}/?token={server.token}")
        seed = ui_home.ids["seed"]
        page.wait_for_selector(f'#executions tr[data-id="{seed}"]')
        page.click(f'#executions tr[data-id="{seed}"] a.name')
        page.wait_for_selector("#timeline .attempt-bar")  # API calls sent the Bearer token
        href = page.locator("a.download").first.get_attribute("href")
        assert f"token={server.token}" in href
        data = page.request.get(base + href).body()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            assert tar.extractfile("0003-000003/data").read() == b"11"  # the first link


def test_pages_update_live_without_reloading(page, browser, tmp_path):
    home, marker = tmp_path / "home", tmp_path / "go"
    with serving(home) as server:
        page.goto(base_url(server) + "/")
        page.wait_for_selector("#empty:not([hidden])")
        page.evaluate("window.__sameDocument = true")
        proc = subprocess.Popen(
            cli_command("--home", home, "run", FLOWS, "waits_for", "--marker", marker),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=tp_env(),
        )
        detail = browser.new_page()
        try:
            row = page.wait_for_selector('#executions tr[data-status="running"]', timeout=20_000)
            detail.goto(f"{base_url(server)}/executions/{row.get_attribute('data-id')}")
            detail.wait_for_selector('#timeline .attempt-bar[data-status="running"]')
            detail.wait_for_selector("#timeline .tick")  # its checkpoints appear as it runs
            marker.write_text("go")
            assert proc.wait(30) == 0, proc.stderr.read()
            page.wait_for_selector('#executions tr[data-status="succeeded"]', timeout=10_000)
            detail.wait_for_selector('#timeline .attempt-bar[data-status="succeeded"]')
            assert detail.locator("#live").inner_text() == "succeeded"  # polling stopped
        finally:
            detail.close()
            if proc.poll() is None:
                proc.kill()
        assert page.evaluate("window.__sameDocument") is True  # polled, never reloaded


def test_interrupted_execution_draws_an_open_ended_attempt(page, ui_home, ui_server):
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['interrupted']}")
    bar = page.wait_for_selector('#timeline .attempt-bar[data-status="interrupted"]')
    assert "open-ended" in bar.query_selector("rect").get_attribute("class")
    assert "end not recorded" in bar.query_selector("title").text_content()
    assert page.locator("#live").inner_text() == "interrupted"  # not polled as running


def test_a_resumed_execution_shows_how_far_each_lost_attempt_got(page, tmp_path):
    home = tmp_path / "home"
    flow = Path(__file__).parents[1] / "faults" / "workflows" / "resumed_flow.py"  # shared

    def killed_after(args: list[str], attempt: int, seq: int) -> str:
        """Run ``taskpoint ARGS``, SIGKILL it once attempt ``attempt`` committed ``seq``."""
        proc = subprocess.Popen(
            cli_command("--home", home, *args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=tp_env(),
        )
        prefix = f"{attempt:04d}-"

        def committed() -> list[Path]:
            found = home.glob("blobs/*/nodes/*/checkpoints/v/*.manifest.json")
            return [
                p for p in found if p.name.startswith(prefix) and p.name >= f"{prefix}{seq:06d}"
            ]

        try:
            found = wait_until(committed, 60, f"attempt {attempt} to commit {seq}", proc=proc)
        finally:
            proc.kill()
            proc.wait(10)
        return found[0].relative_to(home).parts[1]

    eid = killed_after(["run", flow, "counting", "--steps", "14"], 1, 3)
    killed_after(["resume", eid], 2, 3)
    done = subprocess.run(
        cli_command("--home", home, "resume", eid), capture_output=True, text=True, env=tp_env()
    )
    assert done.returncode == 0, done.stderr
    with serving(home) as server:
        doc = get(f"{base_url(server)}/api/executions/{eid}").json()
        attempts = doc["nodes"][0]["attempts"]
        work = doc["nodes"][0]["work"]
        reached = [p["level"] for p in work["points"] if p["kind"] == "end"][:2]
        assert 3 <= reached[0] < reached[1] < 14  # each attempt resumed further on
        page.goto(f"{base_url(server)}/executions/{eid}")
        page.wait_for_selector("#work svg.work .failure")
        assert "in 3 driver runs" in page.locator("#summary .duration").inner_text()
        cards = page.locator('.failure-card[data-status="lost"]')
        assert cards.count() == 2
        for i, attempt in enumerate(attempts[:2]):
            assert f"latest checkpoint at end {attempt['checkpoint_at_end']}" in (
                cards.nth(i).inner_text()
            )
        # Each lost attempt is drawn up to its last commit, pruned by retention since: a hollow
        # point at its level, reached by a dashed interpolation; the next one resumed there.
        assert page.locator("#work svg.work circle.commit.pruned").count() == 2
        assert page.locator("#work svg.work .interp").count() >= 2
        for n, step in enumerate(reached, start=1):
            title = page.locator(f'#work .failure[data-attempt="{n}"] title').text_content()
            assert f"attempt {n + 1} started" in title and f"from step {step}" in title
            assert "committed work not resumed from" not in title
        page.goto(f"{base_url(server)}/")
        row = page.wait_for_selector(f'#executions tr[data-id="{eid}"]')
        assert "in 3 driver runs" in row.query_selector("td.duration").inner_text()
