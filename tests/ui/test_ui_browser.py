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
from ui_support import FLOWS, base_url, fill_home, get, serving

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


def wait_for_rows(page, count: int) -> None:
    """Until the executions table shows ``count`` rows (a function: the pages' CSP forbids the
    eval Playwright would use for a bare expression)."""
    page.wait_for_function(
        "(n) => document.querySelectorAll('#executions tbody tr').length === n", arg=count
    )


def wait_for_live(page, text: str) -> None:
    page.wait_for_function("(t) => document.getElementById('live').textContent === t", arg=text)


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

    page.click('button[data-filter="failed"]')  # the server filters: wait for its answer
    rows = page.locator("#executions tbody tr")
    wait_for_rows(page, 1)
    assert rows.first.get_attribute("data-id") == ui_home.ids["pipeline"]
    assert page.locator('button[data-filter="failed"] .count').inner_text() == "1"
    page.click('button[data-filter="all"]')
    wait_for_rows(page, len(ui_home.ids))


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


def _rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(float(v)) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return r, g, b


def colour_family(css: str) -> str:
    """The family of a computed CSS colour: red, amber, green, magenta, blue or grey."""
    r, g, b = _rgb(css)
    if max(r, g, b) - min(r, g, b) < 40:
        return "grey"
    if g > r and g > b:
        return "green"
    if r > 120 and b > 120 and g < min(r, b) - 60:
        return "magenta"
    if b > r and b > g:
        return "blue"
    if r > 150 and g >= 100 and b < 80:
        return "amber"
    if r > 120 and g < 80 and b < 80:
        return "red"
    return "other"


STATUS_FAMILIES = {
    "succeeded": "green",
    "failed": "red",
    "lost": "red",
    "interrupted": "red",
    "recoverable": "amber",
    "aborted": "amber",
    "preempted": "magenta",
    "running": "blue",
}


def test_every_status_has_its_colour_in_pills_charts_and_the_live_dot(page, ui_home, ui_server):
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['pipeline']}")
    page.wait_for_selector("#timeline .attempt-bar")
    drawn = page.evaluate(
        """(statuses) => Object.fromEntries(statuses.map((s) => {
            const pill = TP.statusPill(s);
            const live = document.createElement("span");
            live.className = "live";
            live.setAttribute("data-status", s);
            document.body.append(pill, live);
            const colours = [getComputedStyle(pill).backgroundColor, TP.STATUS_COLORS[s],
              getComputedStyle(live, "::before").color];
            pill.remove();
            live.remove();
            return [s, colours];
        }))""",
        list(STATUS_FAMILIES),
    )
    for status, family in STATUS_FAMILIES.items():
        pill, chart, dot = drawn[status]
        chart_rgb = page.evaluate(
            "(c) => { const e = document.createElement('i'); e.style.color = c; "
            "document.body.append(e); const v = getComputedStyle(e).color; e.remove(); "
            "return v; }",
            chart,
        )
        assert [colour_family(c) for c in (pill, chart_rgb, dot)] == [family] * 3, (status, drawn)


def test_a_failed_execution_is_drawn_in_red_in_the_list_and_its_page(page, ui_home, ui_server):
    pipeline = ui_home.ids["pipeline"]
    page.goto(base_url(ui_server) + "/")
    pill = page.wait_for_selector(f'#executions tr[data-id="{pipeline}"] .pill')
    assert pill.inner_text() == "failed"
    assert colour_family(pill.evaluate("e => getComputedStyle(e).backgroundColor")) == "red"
    page.goto(f"{base_url(ui_server)}/executions/{pipeline}")
    summary = page.wait_for_selector("#summary h1 .pill")
    assert colour_family(summary.evaluate("e => getComputedStyle(e).backgroundColor")) == "red"
    bar = page.locator('#timeline .attempt-bar[data-status="failed"] rect')
    assert colour_family(bar.evaluate("e => getComputedStyle(e).fill")) == "red"
    wait_for_live(page, "failed")
    dot = page.evaluate("getComputedStyle(document.getElementById('live'), '::before').color")
    assert colour_family(dot) == "red"  # not the green of a live page


def test_a_node_without_checkpoints_gets_a_note_not_a_chart(page, ui_home, ui_server):
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['chatty']}")
    note = page.wait_for_selector('#work .work-note[data-node="chatter#1"]')
    assert "no checkpoint committed" in note.inner_text()
    assert page.locator("#work svg").count() == 0
    assert page.locator("#work-hint").is_hidden()  # nothing charted: no legend of the chart
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['pipeline']}")
    page.wait_for_selector('#work svg.work[data-node="crunch#1"]')  # nodes that commit keep it
    assert page.locator("#work .work-note").count() == 0


def test_the_log_panel_shows_each_attempts_output_as_text(page, ui_home, ui_server):
    from ui_flows import MARKUP

    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['chatty']}")
    toggle = page.wait_for_selector('button.log-toggle[data-attempt="1"]')
    toggle.click()
    log = page.locator('tr.log-row[data-attempt="1"] pre.log')
    log.wait_for()
    page.wait_for_function(
        "() => document.querySelector('tr.log-row[data-attempt=\"1\"] pre.log').textContent"
        ".includes('déjà vu')"
    )
    text = log.text_content()
    assert text.splitlines() == [*(f"attempt 1 line {i}" for i in range(40)), MARKUP]
    # The markup is text: no element was made from it, no handler ran.
    assert log.locator("img, b").count() == 0
    assert page.evaluate("document.body.dataset.owned") is None
    assert toggle.get_attribute("aria-expanded") == "true"

    page.click('button.log-toggle[data-attempt="2"]')
    second = page.locator('tr.log-row[data-attempt="2"] pre.log')
    second.wait_for()
    page.wait_for_function(
        "() => document.querySelector('tr.log-row[data-attempt=\"2\"] pre.log').textContent"
        ".includes('attempt 2 line 39')"
    )
    assert "attempt 1" not in second.text_content()
    page.click('button.log-toggle[data-attempt="1"]')  # collapses
    assert page.locator('tr.log-row[data-attempt="1"]').count() == 0
    assert page.locator('tr.log-row[data-attempt="2"]').count() == 1


def test_a_running_attempts_log_grows_on_the_page_and_stops_with_it(page, tmp_path):
    home, marker = tmp_path / "home", tmp_path / "go"
    proc = subprocess.Popen(
        cli_command("--home", home, "run", FLOWS, "waits_for", "--marker", marker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=tp_env(),
    )
    try:
        with serving(home) as server:
            page.goto(base_url(server) + "/")
            row = page.wait_for_selector('#executions tr[data-status="running"]', timeout=20_000)
            page.goto(f"{base_url(server)}/executions/{row.get_attribute('data-id')}")
            page.click('button.log-toggle[data-attempt="1"]')
            log = "document.querySelector('tr.log-row pre.log').textContent"
            has = f"(text) => {log}.includes(text)"
            page.wait_for_function(has, arg="committed step 2,", timeout=20_000)
            first = page.evaluate(log)
            more = f"(n) => {log}.split('\\n').length > n"
            page.wait_for_function(more, arg=first.count("\n") + 3, timeout=20_000)
            grown = page.evaluate(log)
            assert grown.startswith(first)  # appended, not reloaded
            # Longer than its panel: it stays scrolled to its end as it grows, across the
            # page's refreshes.
            page.wait_for_function(more, arg=45, timeout=20_000)
            page.wait_for_timeout(2500)
            pre = page.locator("tr.log-row pre.log")
            assert pre.evaluate("p => p.scrollTop") > 0
            assert pre.evaluate("p => p.scrollHeight - p.scrollTop - p.clientHeight") < 4
            marker.write_text("go")
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
            page.wait_for_function(has, arg="found the marker\n", timeout=20_000)
            wait_for_live(page, "succeeded")
            lines = page.evaluate(log).splitlines()
            assert lines[-1] == "found the marker"
            assert len(lines) == len(set(lines))  # nothing read twice
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_an_unknown_execution_page_says_so_and_links_back(browser, ui_home, ui_server):
    page = browser.new_page()  # its own: the 404 itself is reported on the console
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "console",
        lambda m: problems.append(m.text) if "404" not in m.text and m.type == "error" else None,
    )
    try:
        response = page.goto(f"{base_url(ui_server)}/executions/no-such-run")
        assert response.status == 404
        assert page.locator("h1").inner_text() == "Unknown execution"
        assert "no-such-run" in page.locator("#message").inner_text()
        assert page.locator("main").evaluate("e => getComputedStyle(e).paddingLeft") != "0px"
        page.click("#back")  # styled by ui.css, and back to the list
        page.wait_for_selector(f'#executions tr[data-id="{ui_home.ids["seed"]}"]')
    finally:
        page.close()
    assert not problems, problems


def test_the_list_pages_and_the_search_box_filters(page, ui_home, ui_server):
    every = [r["id"] for r in get(f"{base_url(ui_server)}/api/executions").json()]
    assert len(every) > 4
    page.goto(f"{base_url(ui_server)}/#limit=4")
    rows = page.locator("#executions tbody tr")
    page.wait_for_selector(f'#executions tr[data-id="{every[3]}"]')
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == every[:4]
    assert page.locator("#range").inner_text() == f"1\N{EN DASH}4 of {len(every)}"
    assert page.locator("#newer").is_disabled()

    page.click("#older")
    page.wait_for_selector(f'#executions tr[data-id="{every[4]}"]')
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == every[4:8]
    assert page.locator("#older").is_disabled() == (len(every) <= 8)
    assert "offset=4" in page.evaluate("location.hash")
    page.click("#newer")
    page.wait_for_selector(f'#executions tr[data-id="{every[0]}"]')

    page.fill("#search", "broken")  # a part of a workflow's name
    wait_for_rows(page, 1)
    assert rows.first.get_attribute("data-id") == ui_home.ids["pipeline"]
    page.fill("#search", ui_home.ids["seed"][:8])  # an id prefix
    page.wait_for_selector(f'#executions tr[data-id="{ui_home.ids["seed"]}"]')
    wait_for_rows(page, 1)
    page.fill("#search", "preempted")  # a status
    page.wait_for_selector(f'#executions tr[data-id="{ui_home.ids["inline"]}"]')
    wait_for_rows(page, 1)
    page.fill("#search", "no such thing")
    page.wait_for_selector("#empty:not([hidden])")
    assert "match" in page.locator("#empty").inner_text()
    page.fill("#search", "")
    page.wait_for_selector(f'#executions tr[data-id="{every[3]}"]')
    assert rows.count() == 4  # back to the first page of everything


def test_the_list_is_not_polled_while_the_tab_is_hidden(page, ui_server):
    calls: list[str] = []
    page.on("request", lambda r: calls.append(r.url) if "/api/executions" in r.url else None)
    page.goto(base_url(ui_server) + "/")
    page.wait_for_selector("#executions tbody tr")
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    page.wait_for_timeout(2500)  # a poll in flight may still land
    before = len(calls)
    page.wait_for_timeout(4500)
    assert len(calls) == before  # no polling while hidden
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    page.wait_for_timeout(1000)
    assert len(calls) > before  # and at once again when shown
    assert all("limit=50" in url and "offset=0" in url for url in calls)  # one page only


def test_the_goodput_section_draws_where_each_nodes_time_went(page, ui_home, ui_server):
    page.goto(f"{base_url(ui_server)}/executions/{ui_home.ids['training']}")
    row = page.wait_for_selector('#goodput svg.goodput .goodput-row[data-node="train#1"]')
    ettr = float(row.get_attribute("data-ettr"))
    assert 0 < ettr < 1
    parts = page.locator('#goodput .goodput-row[data-node="train#1"] rect.part')
    drawn = {parts.nth(i).get_attribute("data-part") for i in range(parts.count())}
    assert {"productive", "lost", "restore"} <= drawn
    assert f"ETTR {ettr:.3f}" in page.locator("#goodput .goodput-summary").inner_text()
    rows = page.locator("#goodput table.ledger tbody tr")
    assert rows.count() == 3
    lost = page.locator('#goodput table.ledger tr[data-attempt="2"] td')
    assert lost.nth(4).inner_text() == "?"  # its start: the SIGKILLed attempt could not report
    assert page.locator("#goodput .resume-warning").count() == 0


def test_an_attempt_that_restarted_from_scratch_is_marked(page, tmp_path):
    runs = {"forgets": (FLOWS, "forgets", ["--steps", "4"], 0)}
    home = fill_home(tmp_path / "home", runs, interrupted=False)
    with serving(home.path) as server:
        page.goto(f"{base_url(server)}/executions/{home.ids['forgets']}")
        warning = page.wait_for_selector('#goodput .resume-warning[data-attempt="2"]')
        text = warning.inner_text()
        assert "restarted from scratch" in text and "0001-000003 (step 3)" in text
        badge = page.locator('table.attempts tr[data-attempt="2"] .restart-badge')
        assert badge.count() == 1 and "0001-000003" in badge.get_attribute("title")
        assert page.locator('table.attempts tr[data-attempt="1"] .restart-badge').count() == 0
