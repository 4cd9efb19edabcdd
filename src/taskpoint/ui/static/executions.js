// The executions page: a table refreshed every 2 s from /api/executions, filtered by status.
"use strict";

(() => {
  const { el, statusPill, clock, seconds, took, withToken, getJSON, poll, setLive } = TP;
  const FILTERS = ["all", "running", "succeeded", "failed", "preempted", "aborted", "interrupted"];
  const tbody = document.querySelector("#executions tbody");
  const empty = document.getElementById("empty");
  const filterBar = document.getElementById("filters");
  const rows = new Map(); // id -> { json, tr }
  let filter = statusFromHash();
  let latest = [];

  function statusFromHash() {
    const match = /status=([a-z]+)/.exec(location.hash);
    return match && FILTERS.includes(match[1]) ? match[1] : "all";
  }

  function renderFilters() {
    const counts = {};
    for (const e of latest) counts[e.status] = (counts[e.status] || 0) + 1;
    filterBar.replaceChildren(...FILTERS.map((name) => {
      const count = name === "all" ? latest.length : counts[name] || 0;
      const button = el("button", {
        type: "button",
        class: "filter" + (name === filter ? " active" : ""),
        "data-filter": name,
        "aria-pressed": name === filter ? "true" : "false",
      }, name, el("span", { class: "count" }, String(count)));
      button.addEventListener("click", () => {
        filter = name;
        history.replaceState(null, "", name === "all" ? location.pathname + location.search
          : `${location.pathname}${location.search}#status=${name}`);
        render();
      });
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

  function render() {
    renderFilters();
    const shown = latest.filter((e) => filter === "all" || e.status === filter);
    const seen = new Set();
    for (const e of shown) {
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
    empty.hidden = shown.length > 0;
    empty.textContent = latest.length
      ? `No ${filter} executions.`
      : "No executions recorded yet. Start one with: taskpoint run FILE.py NAME";
  }

  poll(async () => {
    latest = await getJSON("/api/executions?limit=500");
    render();
    const running = latest.filter((e) => e.status === "running").length;
    setLive(`live · ${latest.length} executions` + (running ? `, ${running} running` : "") +
      ` · updated ${new Date().toLocaleTimeString()}`, true);
    return true;
  }, 2000);
})();
