// The executions page: one page of /api/executions (newest first), filtered by status and a
// search text, refreshed every 2 s while the tab is visible (only the page shown is fetched).
// The view (status, q, offset, limit) lives in the URL's hash: a reload shows the same page.
"use strict";

(() => {
  const { el, statusPill, clock, seconds, took, withToken, getPage, poll, setLive } = TP;
  const FILTERS = ["all", "running", "succeeded", "failed", "preempted", "aborted", "interrupted"];
  const DEFAULT_LIMIT = 50;
  const MAX_LIMIT = 200;
  const MAX_QUERY = 200;
  const tbody = document.querySelector("#executions tbody");
  const empty = document.getElementById("empty");
  const filterBar = document.getElementById("filters");
  const search = document.getElementById("search");
  const pager = document.getElementById("pager");
  const newer = document.getElementById("newer");
  const older = document.getElementById("older");
  const range = document.getElementById("range");
  const rows = new Map(); // id -> { json, tr }
  const view = viewFromHash();
  let latest = { rows: [], total: 0, counts: {} };
  let typing = null;

  function viewFromHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const status = p.get("status");
    const limit = parseInt(p.get("limit"), 10);
    const offset = parseInt(p.get("offset"), 10);
    return {
      status: FILTERS.includes(status) ? status : "all",
      q: (p.get("q") || "").slice(0, MAX_QUERY),
      limit: limit >= 1 && limit <= MAX_LIMIT ? limit : DEFAULT_LIMIT,
      offset: offset > 0 ? offset : 0,
    };
  }

  function saveView() {
    const p = new URLSearchParams();
    if (view.status !== "all") p.set("status", view.status);
    if (view.q) p.set("q", view.q);
    if (view.offset) p.set("offset", String(view.offset));
    if (view.limit !== DEFAULT_LIMIT) p.set("limit", String(view.limit));
    const hash = p.toString();
    history.replaceState(null, "", location.pathname + location.search + (hash ? "#" + hash : ""));
  }

  function apiUrl() {
    const p = new URLSearchParams({ limit: String(view.limit), offset: String(view.offset) });
    if (view.status !== "all") p.set("status", view.status);
    if (view.q.trim()) p.set("q", view.q.trim());
    return "/api/executions?" + p;
  }

  function changeView(change) {
    Object.assign(view, change);
    saveView();
    renderFilters();
    poller.kick();
  }

  function renderFilters() {
    const counts = latest.counts;
    const all = Object.values(counts).reduce((a, b) => a + b, 0);
    filterBar.replaceChildren(...FILTERS.map((name) => {
      const count = name === "all" ? all : counts[name] || 0;
      const button = el("button", {
        type: "button",
        class: "filter" + (name === view.status ? " active" : ""),
        "data-filter": name,
        "aria-pressed": name === view.status ? "true" : "false",
      }, name, el("span", { class: "count" }, String(count)));
      button.addEventListener("click", () => changeView({ status: name, offset: 0 }));
      return button;
    }));
  }

  function rowFor(e) {
    const href = withToken("/executions/" + encodeURIComponent(e.id));
    const inputs = e.inputs === null || e.inputs === undefined ? "" : JSON.stringify(e.inputs);
    const tr = el("tr", { "data-id": e.id, "data-status": e.status },
      el("td", {}, statusPill(e.status)),
      el("td", {}, el("a", { href, class: "name" }, e.name)),
      el("td", { class: "mono" }, el("a", { href }, e.id)),
      el("td", { class: "mono", title: e.started || "" }, clock(seconds(e.started || e.created))),
      el("td", { class: "num duration" }, took(e)),
      el("td", { class: "num" }, String(e.attempts)),
      el("td", { class: "inputs mono", title: inputs }, inputs));
    tr.addEventListener("click", (event) => {
      if (event.target.tagName !== "A") location.href = href;
    });
    return tr;
  }

  function emptyText() {
    const anyRecorded = Object.values(latest.counts).some((n) => n > 0);
    const which = view.status === "all" ? "" : view.status + " ";
    if (view.q.trim()) return `No ${which}executions match “${view.q.trim()}”.`;
    if (!anyRecorded) return "No executions recorded yet. Start one with: taskpoint run FILE.py NAME";
    return `No ${which}executions.`;
  }

  function render() {
    renderFilters();
    const seen = new Set();
    for (const e of latest.rows) {
      const json = JSON.stringify(e);
      let entry = rows.get(e.id);
      if (!entry || entry.json !== json) {
        const tr = rowFor(e);
        if (entry) entry.tr.replaceWith(tr);
        entry = { json, tr };
        rows.set(e.id, entry);
      }
      seen.add(e.id);
      tbody.appendChild(entry.tr); // moves existing rows into order: no flicker, no reload
    }
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.tr.remove();
        rows.delete(id);
      }
    }
    empty.hidden = latest.rows.length > 0;
    empty.textContent = emptyText();
    pager.hidden = latest.total === 0;
    const first = latest.rows.length ? view.offset + 1 : 0;
    range.textContent = `${first}–${view.offset + latest.rows.length} of ${latest.total}`;
    newer.disabled = view.offset === 0;
    older.disabled = view.offset + latest.rows.length >= latest.total;
  }

  newer.addEventListener("click", () =>
    changeView({ offset: Math.max(0, view.offset - view.limit) }));
  older.addEventListener("click", () => changeView({ offset: view.offset + view.limit }));
  search.value = view.q;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => changeView({ q: search.value.slice(0, MAX_QUERY), offset: 0 }), 250);
  });
  window.addEventListener("hashchange", () => {
    Object.assign(view, viewFromHash());
    search.value = view.q;
    renderFilters();
    poller.kick();
  });

  const poller = poll(async () => {
    const url = apiUrl();
    const page = await getPage(url);
    if (url !== apiUrl()) return true; // the view changed meanwhile: fetched again at once
    if (!page.rows.length && view.offset > 0 && page.total > 0) {
      // Past the last page (executions were deleted, or a filter narrowed the list).
      changeView({ offset: Math.floor((page.total - 1) / view.limit) * view.limit });
      return true;
    }
    latest = page;
    render();
    const running = page.counts.running || 0;
    setLive(`live · ${page.total} executions` + (running ? `, ${running} running` : "") +
      ` · updated ${new Date().toLocaleTimeString()}`, true);
    return true;
  }, 2000);
})();
