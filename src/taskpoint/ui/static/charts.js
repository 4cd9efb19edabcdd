// Inline-SVG charts of the execution page: the attempt timeline and the work-over-time chart.
// Both share one time axis (same x for the same instant), so a failure lines up across them.
"use strict";

const Charts = (() => {
  const { svg, STATUS_COLORS, duration, size, clock, seconds } = TP;
  const W = 1000; // viewBox width; the SVG scales to the page width
  const LABEL = 180; // left column for node labels
  const RIGHT = 16;

  function axisFor(doc, now) {
    const times = [seconds(doc.started), seconds(doc.ended)];
    for (const node of doc.nodes) {
      for (const a of node.attempts) times.push(seconds(a.started), seconds(a.ended));
      for (const c of node.checkpoints) times.push(seconds(c.created));
    }
    if (doc.status === "running") times.push(now);
    const known = times.filter((t) => t !== null && isFinite(t));
    const t0 = known.length ? Math.min(...known) : now;
    let t1 = known.length ? Math.max(...known) : now + 1;
    if (t1 - t0 < 0.001) t1 = t0 + 0.001;
    const span = (t1 - t0) * 1.02;
    const x = (t) => LABEL + ((t - t0) / span) * (W - LABEL - RIGHT);
    return { t0, t1: t0 + span, x };
  }

  function niceStep(span, count) {
    const raw = span / count;
    const base = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (base * m >= raw) return base * m;
    return base * 10;
  }

  function timeAxis(axis, top, bottom) {
    const g = svg("g", { class: "axis" });
    const step = niceStep(axis.t1 - axis.t0, 8);
    for (let k = 0; axis.t0 + k * step <= axis.t1 + 1e-9; k++) {
      const x = axis.x(axis.t0 + k * step);
      g.appendChild(svg("line", { x1: x, x2: x, y1: top, y2: bottom, class: "gridline" }));
      const anchor = k === 0 ? "start" : x > W - RIGHT - 30 ? "end" : "middle";
      g.appendChild(svg("text", { x, y: top - 6, "text-anchor": anchor, class: "tick-label" },
        k === 0 ? clock(axis.t0).slice(11) : "+" + duration(k * step)));
    }
    return g;
  }

  // When an attempt ended: recorded, or now while running; unknown when its driver died
  // unrecorded (then up to its last sign of life, drawn open-ended: its driver's last
  // heartbeat or its last checkpoint commit).
  function attemptEnd(node, a, now) {
    const end = seconds(a.ended);
    if (end !== null) return end;
    if (a.status === "running") return now;
    const own = node.checkpoints.filter((c) => c.attempt === a.n).map((c) => seconds(c.created));
    return Math.max(seconds(a.started) + (a.duration_s || 0), ...own);
  }

  function attemptTitle(node, a) {
    const start = seconds(a.started);
    const end = seconds(a.ended);
    const lines = [
      `${node.key} · attempt ${a.n} · ${a.status}`,
      `${clock(start, true)} → ${end ? clock(end, true) : a.status === "running" ? "running"
        : "end not recorded"}` +
        (end ? ` (${duration(a.duration_s)})` : ""),
      `started from checkpoint ${a.checkpoint_at_start || "none (from scratch)"}`,
      `latest checkpoint at end ${a.checkpoint_at_end || "none"}`,
    ];
    const retry = TP.retryText(node, a);
    if (retry) lines.push(retry);
    if (a.error) lines.push(a.error);
    return lines.join("\n");
  }

  function checkpointTick(x, y, h, c, node) {
    const title = `checkpoint ${c.id}\nstep ${c.step === null ? "– (none given)" : c.step}` +
      ` · ${size(c.size)} · ${c.kind}\nattempt ${c.attempt} · created ` +
      clock(seconds(c.created), true);
    return svg("g", { class: "tick", "data-version": c.id, "data-node": node.key },
      svg("title", { text: title }),
      svg("rect", { x: x - 4, y, width: 8, height: h, class: "hit" }),
      svg("line", { x1: x, x2: x, y1: y, y2: y + h, class: "tick-line" }),
      svg("circle", { cx: x, cy: y, r: 2.8, class: "tick-head" }));
  }

  function prunedTick(x, y, h, a, node) {
    const title = `checkpoint ${a.checkpoint_at_end}\ncommitted by attempt ${a.n} ` +
      (a.last_commit ? `at ${clock(seconds(a.last_commit), true)}\npruned by retention`
        : `no later than ${clock(seconds(a.ended), true)}\npruned by retention: step, size ` +
          "and time unknown");
    return svg("g", { class: "tick pruned", "data-version": a.checkpoint_at_end,
      "data-node": node.key },
    svg("title", { text: title }),
    svg("rect", { x: x - 4, y, width: 8, height: h, class: "hit" }),
    svg("line", { x1: x, x2: x, y1: y, y2: y + h, class: "tick-line" }),
    svg("circle", { cx: x, cy: y, r: 2.8, class: "tick-head" }));
  }

  function timeline(container, doc, now) {
    const axis = axisFor(doc, now);
    const rowH = 38;
    const top = 26;
    const height = top + Math.max(1, doc.nodes.length) * rowH + 6;
    const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, class: "timeline", role: "img",
      "aria-label": "attempts and checkpoints over time" });
    root.appendChild(timeAxis(axis, top, height - 4));
    doc.nodes.forEach((node, i) => {
      const y = top + i * rowH;
      const row = svg("g", { class: "node-row", "data-node": node.key });
      row.appendChild(svg("rect", { x: 0, y, width: W, height: rowH, class: i % 2 ? "band odd" : "band" }));
      row.appendChild(svg("text", { x: 8, y: y + rowH / 2 + 4, class: "node-label" },
        svg("title", { text: `${node.key} (${node.task}) · ${node.status}` }),
        node.key.length > 24 ? node.key.slice(0, 23) + "…" : node.key));
      const retained = new Set(node.checkpoints.map((c) => c.id));
      for (const a of node.attempts) {
        const x0 = axis.x(seconds(a.started));
        const end = attemptEnd(node, a, now);
        const openEnded = a.ended === null && a.status !== "running";
        const width = Math.max(3, axis.x(end) - x0);
        const bar = svg("g", { class: "attempt-bar", "data-status": a.status, "data-attempt": a.n,
          "data-node": node.key },
        svg("title", { text: attemptTitle(node, a) }),
        svg("rect", { x: x0, y: y + 9, width, height: rowH - 18, rx: 3,
          fill: STATUS_COLORS[a.status] || "#adb5bd", class: "bar" + (a.status === "running" ? " running" : "") +
            (openEnded ? " open-ended" : "") }));
        if (width > 16) {
          bar.appendChild(svg("text", { x: x0 + 5, y: y + rowH / 2 + 4, class: "bar-label" }, String(a.n)));
        }
        row.appendChild(bar);
        const end_id = a.checkpoint_at_end;
        if (end_id && !retained.has(end_id) && end_id.startsWith(String(a.n).padStart(4, "0") + "-")) {
          const at = seconds(a.last_commit) ?? end;
          row.appendChild(prunedTick(axis.x(at), y + 4, rowH - 8, a, node));
        }
      }
      for (const c of node.checkpoints) {
        row.appendChild(checkpointTick(axis.x(seconds(c.created)), y + 4, rowH - 8, c, node));
      }
      root.appendChild(row);
    });
    container.replaceChildren(root);
    return axis;
  }

  function legend(container) {
    const items = TP.ATTEMPT_STATUSES.map((s) => TP.el("span", { class: "legend-item" },
      TP.el("span", { class: "swatch status-" + s }), s));
    items.push(TP.el("span", { class: "legend-item" }, TP.el("span", { class: "tick-swatch" }),
      "checkpoint commit"));
    items.push(TP.el("span", { class: "legend-item" },
      TP.el("span", { class: "tick-swatch pruned" }), "commit pruned by retention"));
    container.replaceChildren(...items);
  }

  // -- work over time ------------------------------------------------------------------------

  function levelLabel(v) {
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function workPanel(node, axis, now) {
    const work = node.work;
    const known = work.points.filter((p) => p.level !== null);
    const top = 26;
    const plotH = 100;
    const bottom = top + plotH;
    const height = bottom + 22;
    const maxLevel = Math.max(1, ...known.map((p) => p.level));
    const y = (l) => bottom - (l / maxLevel) * plotH;
    const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, class: "work", role: "img",
      "data-node": node.key, "aria-label": `work over time of ${node.key}` });
    root.appendChild(timeAxis(axis, top, bottom));
    const unit = work.unit === "step" ? "step" : "commits";
    root.appendChild(svg("text", { x: 8, y: top + 12, class: "node-label" }, node.key));
    root.appendChild(svg("text", { x: 8, y: top + 28, class: "unit-label" },
      unit === "step" ? "checkpoint step" : "checkpoint commits"));
    for (const l of [0, maxLevel / 2, maxLevel]) {
      root.appendChild(svg("line", { x1: LABEL, x2: W - RIGHT, y1: y(l), y2: y(l), class: "gridline" }));
      root.appendChild(svg("text", { x: LABEL - 6, y: y(l) + 4, "text-anchor": "end",
        class: "tick-label" }, levelLabel(l)));
    }
    for (const f of work.failures) root.appendChild(failureMarks(f, axis, y, top, bottom, unit));
    const byAttempt = new Map();
    for (const p of work.points) {
      if (!byAttempt.has(p.attempt)) byAttempt.set(p.attempt, []);
      byAttempt.get(p.attempt).push(p);
    }
    for (const points of byAttempt.values()) {
      for (let i = 1; i < points.length; i++) {
        const p = points[i - 1];
        const q = points[i];
        if (p.level === null || q.level === null) continue;
        const x1 = axis.x(p.t);
        const x2 = axis.x(q.t);
        if (q.pruned_before > 0) {
          root.appendChild(svg("line", { x1, y1: y(p.level), x2, y2: y(q.level), class: "interp" },
            svg("title", { text: `${q.pruned_before} commit(s) of attempt ${q.attempt} pruned by ` +
              "retention: their times are unknown, the line is interpolated" })));
        } else {
          root.appendChild(svg("path", { d: `M${x1},${y(p.level)}H${x2}V${y(q.level)}`,
            class: "level" }));
        }
      }
      for (const p of points) root.appendChild(workPoint(p, axis, y, unit));
    }
    return root;
  }

  function workPoint(p, axis, y, unit) {
    if (p.level === null || p.kind === "end") return svg("g", {});
    const cx = axis.x(p.t);
    const cy = y(p.level);
    if (p.kind === "start") {
      const text = `attempt ${p.attempt} starts from ` +
        (p.version ? `checkpoint ${p.version} (${unit} ${levelLabel(p.level)})` : "scratch");
      return svg("rect", { x: cx - 3.5, y: cy - 3.5, width: 7, height: 7, class: "resume",
        transform: `rotate(45 ${cx} ${cy})` }, svg("title", { text }));
    }
    const text = `checkpoint ${p.version} · ${unit} ${levelLabel(p.level)}` +
      (p.size !== undefined && p.size !== null ? ` · ${size(p.size)}` : "") +
      `\nattempt ${p.attempt} · ` + clock(p.t, true) +
      (p.pruned ? "\npruned by retention since (its time and level are recorded)" : "");
    return svg("circle", { cx, cy, r: 3.5, class: "commit" + (p.pruned ? " pruned" : ""),
      "data-version": p.version }, svg("title", { text }));
  }

  function failureMarks(f, axis, y, top, bottom, unit) {
    const g = svg("g", { class: "failure", "data-attempt": f.attempt, "data-status": f.status });
    const x = axis.x(f.t);
    const lines = [`attempt ${f.attempt} ended ${f.status} at ${clock(f.t, true)}`];
    if (f.uncommitted_s !== null) {
      lines.push(`work since its last commit, lost: ${duration(f.uncommitted_s)}`);
      g.appendChild(svg("rect", { x: axis.x(f.t - f.uncommitted_s), y: top,
        width: Math.max(1, x - axis.x(f.t - f.uncommitted_s)), height: bottom - top, class: "lost" }));
    } else if (f.uncommitted_max_s !== null) {
      lines.push(`work since its last commit, lost: at most ${duration(f.uncommitted_max_s)} ` +
        "(its last commits were pruned)");
      // Only a bound is known: a thin strip along the axis, not a full-height band.
      g.appendChild(svg("rect", { x: axis.x(f.t - f.uncommitted_max_s), y: bottom - 6,
        width: Math.max(1, x - axis.x(f.t - f.uncommitted_max_s)), height: 6,
        class: "lost maybe" }));
    }
    if (f.resumed_at !== null) {
      const xr = axis.x(f.resumed_at);
      lines.push(`attempt ${f.next_attempt} started ${duration(f.resumed_at - f.t)} later from ` +
        `${unit} ${f.resumed_level === null ? "?" : levelLabel(f.resumed_level)}`);
      g.appendChild(svg("rect", { x, y: top, width: Math.max(1, xr - x), height: bottom - top,
        class: "idle" }));
      if (f.lost_level) {
        lines.push(`committed work not resumed from: ${levelLabel(f.lost_level)} ${unit}`);
        g.appendChild(svg("line", { x1: xr, x2: xr, y1: y(f.level), y2: y(f.resumed_level),
          class: "drop" }));
      }
    }
    const cy = f.level === null ? bottom : y(f.level);
    g.appendChild(svg("path", { d: `M${x - 4},${cy - 4}L${x + 4},${cy + 4}M${x - 4},${cy + 4}L${x + 4},${cy - 4}`,
      class: "cross", stroke: STATUS_COLORS[f.status] || "#e03131" }));
    const nearEnd = x > W - RIGHT - 110;
    g.appendChild(svg("text", { x: nearEnd ? x - 8 : x + 6, y: Math.max(top + 10, cy - 8),
      "text-anchor": nearEnd ? "end" : "start", class: "failure-label" },
    `#${f.attempt} ${f.status}`));
    g.insertBefore(svg("title", { text: lines.join("\n") }), g.firstChild);
    return g;
  }

  // Whether a node ever had a checkpoint: one retained (usable or damaged), or one its attempts'
  // records name (since pruned). A node without any gets a one-line note, not an empty chart.
  function checkpointed(node) {
    return node.checkpoints.length > 0 || (node.damaged_checkpoints || []).length > 0 ||
      node.work.points.some((p) => p.version);
  }

  function workNote(node) {
    const yet = node.status === "running" ? " yet" : "";
    return TP.el("p", { class: "work-note", "data-node": node.key },
      TP.el("strong", {}, node.key), `: no checkpoint committed${yet}, so there is no work ` +
      "over time to draw" + (node.attempts.length > 1 ? " (each attempt started from scratch)." : "."));
  }

  function workCharts(container, doc, axis, now) {
    const panels = doc.nodes.filter((n) => n.attempts.length)
      .map((n) => checkpointed(n) ? workPanel(n, axis, now) : workNote(n));
    container.replaceChildren(...panels);
  }

  return { checkpointed, legend, timeline, workCharts };
})();
