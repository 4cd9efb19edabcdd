// The goodput ledger of the execution page (the figures of `taskpoint show`, defined in
// engine/goodput.py): per node a bar of where its time went (productive, set-up, restore, save
// stalls, work lost, waits between attempts) with its ETTR, per attempt what it loaded and
// cost, and a warning for each attempt that restarted from scratch.
"use strict";

const Goodput = (() => {
  const { el, svg, duration } = TP;
  const W = 1000;
  const LABEL = 180;
  const RIGHT = 110; // room for the ETTR
  // The parts of a node's time, in the order drawn; class names carry the colours (ui.css).
  const PARTS = [
    ["productive", "productive", (g) => g.productive_s],
    ["setup", "start and set-up", (g) => Math.max(0, g.setup_s - g.restore_s)],
    ["restore", "restore", (g) => g.restore_s],
    ["stall", "save stalls", (g) => g.stall_s],
    ["lost", "work lost", (g) => g.work_lost_s],
    ["wait", "between attempts", (g) => g.wait_s],
  ];

  function ettrText(g) {
    return g.ettr === null || g.ettr === undefined ? "–" : g.ettr.toFixed(3);
  }

  function bars(doc) {
    const nodes = doc.nodes.filter((n) => n.attempts.length && n.goodput);
    const rowH = 30;
    const height = Math.max(1, nodes.length) * rowH + 6;
    const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, class: "goodput", role: "img",
      "aria-label": "where each node's time went" });
    nodes.forEach((node, i) => {
      const g = node.goodput;
      const y = 3 + i * rowH;
      const row = svg("g", { class: "goodput-row", "data-node": node.key,
        "data-ettr": g.ettr === null ? "" : g.ettr });
      row.appendChild(svg("text", { x: 8, y: y + rowH / 2 + 4, class: "node-label" },
        node.key.length > 24 ? node.key.slice(0, 23) + "…" : node.key));
      const parts = PARTS.map(([cls, label, f]) => [cls, label, Math.max(0, f(g) || 0)]);
      const total = Math.max(g.time_s, parts.reduce((s, p) => s + p[2], 0), 1e-9);
      let x = LABEL;
      for (const [cls, label, value] of parts) {
        if (value <= 0) continue;
        const width = (value / total) * (W - LABEL - RIGHT);
        row.appendChild(svg("rect", { x, y: y + 6, width: Math.max(1, width), height: rowH - 12,
          class: "part " + cls, "data-part": cls },
        svg("title", { text: `${node.key} · ${label}: ${duration(value)} ` +
          `(${((value / total) * 100).toFixed(1)} % of ${duration(g.time_s)})` })));
        x += width;
      }
      row.appendChild(svg("text", { x: W - RIGHT + 10, y: y + rowH / 2 + 4, class: "ettr" },
        `ETTR ${ettrText(g)}`));
      root.appendChild(row);
    });
    return root;
  }

  function legend() {
    return el("div", { class: "legend" }, ...PARTS.map(([cls, label]) =>
      el("span", { class: "legend-item" }, el("span", { class: "swatch part-" + cls }), label)));
  }

  function figure(value, measured) {
    if (value === null || value === undefined) return measured ? "–" : "?";
    return duration(value);
  }

  function table(doc) {
    const rows = [];
    for (const node of doc.nodes) {
      for (const a of node.attempts) {
        const l = a.ledger;
        if (!l) continue;
        const loaded = l.loaded_version
          ? l.loaded_version + (l.loaded_step === null ? "" : ` (step ${l.loaded_step})`)
          : l.measured ? "none" : "?";
        rows.push(el("tr", { "data-node": node.key, "data-attempt": a.n,
          "data-restarted": l.resume_warning ? "true" : "false" },
        el("td", {}, node.key), el("td", { class: "num" }, String(a.n)),
        el("td", {}, TP.statusPill(a.status), badge(a)),
        el("td", { class: "mono" }, loaded),
        el("td", { class: "num" }, figure(l.start_s, l.measured)),
        el("td", { class: "num" }, figure(l.restore_s, l.measured)),
        el("td", { class: "num" }, figure(l.first_step_s, l.measured)),
        el("td", { class: "num" }, figure(l.stall_s, l.measured)),
        el("td", { class: "num lost-cell" }, figure(l.work_lost_s, true)),
        el("td", { class: "num" }, duration(l.productive_s))));
      }
    }
    return el("table", { class: "grid ledger" },
      el("thead", {}, el("tr", {}, ...["Node", "Attempt", "Status", "Loaded", "Start",
        "Restore", "First step", "Save stall", "Work lost", "Productive"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows));
  }

  // A warning mark for an attempt that restarted from scratch (its reason on hover).
  function badge(a) {
    const why = a.ledger && a.ledger.resume_warning;
    if (!why) return null;
    return el("span", { class: "restart-badge", title: "restarted from scratch: " + why },
      "restarted from scratch");
  }

  function warnings(doc) {
    const items = [];
    for (const node of doc.nodes) {
      for (const a of node.attempts) {
        const why = a.ledger && a.ledger.resume_warning;
        if (why) {
          items.push(el("li", { class: "resume-warning", "data-node": node.key,
            "data-attempt": a.n }, el("strong", {}, `${node.key} attempt ${a.n}`),
          " restarted from scratch: ", why));
        }
      }
    }
    return items.length ? el("ul", { class: "resume-warnings" }, ...items) : null;
  }

  function render(container, doc) {
    const g = doc.goodput;
    if (!doc.nodes.some((n) => n.attempts.length) || !g) {
      container.replaceChildren(el("p", { class: "muted" }, "No attempt ran yet."));
      return;
    }
    const summary = el("p", { class: "goodput-summary", "data-ettr": g.ettr ?? "" },
      el("strong", {}, `ETTR ${ettrText(g)}`),
      ` · productive ${duration(g.productive_s)} of ${duration(g.time_s)} · work lost ` +
      `${duration(g.work_lost_s)} · restore ${duration(g.restore_s)} · save stalls ` +
      `${duration(g.stall_s)} · between attempts ${duration(g.wait_s)}`);
    container.replaceChildren(...[warnings(doc), summary,
      el("div", { class: "chart" }, bars(doc)), legend(), table(doc)].filter(Boolean));
  }

  return { badge, render };
})();
