// The execution page: summary, timeline, work over time, failures, and per-node tables with
// each attempt's log. It polls /api/executions/<id> every 2 s while the execution runs (and the
// tab is visible), with the open logs of running attempts, and stops when it ends.
"use strict";

(() => {
  const { el, statusPill, duration, size, clock, seconds, withToken, getJSON, getLog, poll,
    setLive, took, budgets, retryText } = TP;
  const FAILED = new Set(["failed", "recoverable", "preempted", "lost", "aborted", "interrupted"]);
  const LOG_VIEW_CHARS = 1 << 20; // the most of one log kept on the page: its end
  const executionId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const api = "/api/executions/" + encodeURIComponent(executionId);
  const logs = new Map(); // JSON [node key, attempt n] -> the state of that attempt's log panel
  let lastJson = null;

  document.getElementById("crumb-id").textContent = executionId;
  document.title = "taskpoint · " + executionId;

  function field(label, ...value) {
    return el("div", { class: "field" }, el("span", { class: "label" }, label),
      el("span", { class: "value" }, ...value));
  }

  function summary(doc) {
    const started = seconds(doc.started);
    const attempts = doc.nodes.reduce((n, node) => n + node.attempts.length, 0);
    const parts = [
      el("h1", {}, doc.name, " ", statusPill(doc.status)),
      el("div", { class: "fields" },
        field("execution", el("span", { class: "mono" }, doc.id)),
        field("started", clock(started)),
        field("duration", el("span", { class: "duration" }, took(doc)),
          doc.last_seen ? el("span", { class: "muted" },
            ` (until its driver was last seen, ${clock(seconds(doc.last_seen))})`) : null),
        field("nodes", String(doc.nodes.length)),
        field("attempts", String(attempts)),
        field("inputs", el("span", { class: "mono" }, JSON.stringify(doc.inputs))),
        field("storage", el("span", { class: "mono" }, doc.storage))),
    ];
    if (doc.status === "succeeded") {
      // The preview stored when the result was produced (nothing is unpickled to show it).
      parts.push(el("div", { class: "result" }, "result: ",
        el("span", { class: "mono" }, doc.result_preview ?? JSON.stringify(doc.result))));
    } else if (doc.error) {
      const failed = doc.nodes.find((n) => n.key === doc.failed_node);
      const last = failed && failed.attempts[failed.attempts.length - 1];
      const ranOut = failed && last ? retryText(failed, last) : "";
      parts.push(el("div", { class: "error-line" },
        doc.failed_node ? `error in node ${doc.failed_node}: ` : "error: ", doc.error,
        ranOut && !ranOut.startsWith("retried") ? ` (${ranOut})` : ""));
    }
    document.getElementById("summary").replaceChildren(...parts);
  }

  function failures(doc) {
    const open = new Set([...document.querySelectorAll(".failure-card details[open]")]
      .map((d) => d.closest("article").getAttribute("data-key")));
    const cards = [];
    for (const node of doc.nodes) {
      for (const a of node.attempts) {
        if (!FAILED.has(a.status)) continue;
        const key = `${node.key}/${a.n}`;
        const retry = retryText(node, a);
        const ran = `ran ${duration(a.duration_s)}` +
          (a.status === "interrupted" ? " until its driver was last seen" : "");
        cards.push(el("article", { class: "failure-card", "data-status": a.status,
          "data-node": node.key, "data-attempt": a.n, "data-key": key },
        el("header", {}, statusPill(a.status), " ",
          el("strong", {}, node.key), ` · attempt ${a.n}`,
          el("span", { class: "muted" }, ` · ${ran} · started from ` +
            (a.checkpoint_at_start || "scratch") + ", latest checkpoint at end " +
            (a.checkpoint_at_end || "none") + (retry ? ` · ${retry}` : ""))),
        el("div", { class: "error-line" }, a.error || "(no error recorded)"),
        a.traceback ? el("details", { open: open.has(key) }, el("summary", {}, "traceback"),
          el("pre", { class: "traceback" }, a.traceback)) : null));
      }
    }
    if (doc.traceback && !cards.length) {
      cards.push(el("article", { class: "failure-card" }, el("div", { class: "error-line" }, doc.error),
        el("details", {}, el("summary", {}, "traceback"), el("pre", { class: "traceback" }, doc.traceback))));
    }
    document.getElementById("failures").replaceChildren(...(cards.length ? cards
      : [el("p", { class: "muted" }, "No attempt failed.")]));
  }

  // -- attempt logs ----------------------------------------------------------------------------
  // A log is untrusted text: it only ever becomes text nodes (never markup). The first read
  // takes its last LOG_VIEW_CHARS bytes; later reads append from where the last one ended.

  function logState(node, a) {
    const key = JSON.stringify([node.key, a.n]);
    let state = logs.get(key);
    if (!state) {
      const note = el("p", { class: "log-note" });
      const pre = el("pre", { class: "log", tabindex: "0" });
      state = {
        node: node.key, n: a.n, status: a.status, open: false, final: false, busy: false,
        again: false, next: null, size: 0, skipped: 0, shown: 0, error: null, note, pre,
        decoder: new TextDecoder("utf-8"),
        row: el("tr", { class: "log-row", "data-node": node.key, "data-attempt": a.n },
          el("td", { colspan: 9 }, note, pre)),
      };
      logs.set(key, state);
    }
    state.status = a.status;
    return state;
  }

  function logNote(state) {
    let text = "";
    if (state.error) text = "Cannot read this log: " + state.error;
    else if (state.next === null) text = "Loading…";
    else if (state.size === 0) {
      text = state.status === "running" ? "Nothing printed yet." : "This attempt printed nothing.";
    } else if (state.skipped > 0) {
      text = `The first ${size(state.skipped)} of this log are not shown here; ` +
        `taskpoint logs ${executionId} ${state.node} --attempt ${state.n} prints all of it.`;
    }
    state.note.textContent = text;
  }

  function scrolledToEnd(pre) {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 4;
  }

  function appendLog(state, text) {
    const pre = state.pre;
    const atEnd = scrolledToEnd(pre);
    pre.append(text); // a text node: nothing in it is ever parsed as HTML
    state.shown += text.length;
    if (state.shown > LOG_VIEW_CHARS) {
      const all = pre.textContent;
      const kept = all.slice(all.length - LOG_VIEW_CHARS);
      state.skipped += new TextEncoder().encode(all.slice(0, all.length - kept.length)).length;
      pre.textContent = kept;
      state.shown = kept.length;
    }
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  async function readLog(state) {
    const base = `${api}/nodes/${encodeURIComponent(state.node)}/attempts/${state.n}/log`;
    for (let round = 0; round < 64; round++) { // each answer holds at most 1 MiB
      const piece = await getLog(base + (state.next === null ? `?tail=${LOG_VIEW_CHARS}`
        : `?offset=${state.next}`));
      if (state.next === null) state.skipped = piece.start;
      else if (piece.size - piece.start - piece.bytes.length > LOG_VIEW_CHARS) {
        // More was printed since the last read than the page keeps: go to its end at once.
        state.pre.textContent = "";
        state.shown = 0;
        state.decoder = new TextDecoder("utf-8");
        state.next = null;
        continue;
      }
      const text = state.decoder.decode(piece.bytes, { stream: true });
      if (text) appendLog(state, text);
      state.next = piece.start + piece.bytes.length;
      state.size = piece.size;
      if (!piece.bytes.length || state.next >= piece.size) return;
    }
  }

  async function loadLog(state) {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    try {
      do {
        state.again = false;
        try {
          await readLog(state);
          state.error = null;
        } catch (error) {
          state.error = error.message;
        }
        logNote(state);
      } while (state.again && state.open);
    } finally {
      state.busy = false;
    }
  }

  // Called after each poll: open logs of running attempts read what was printed since; an
  // attempt that has ended is read once more, then left alone.
  function refreshLogs() {
    for (const state of logs.values()) {
      if (!state.open) continue;
      const running = state.status === "running";
      if (running || !state.final) {
        state.final = !running;
        loadLog(state);
      }
    }
  }

  function logToggle(node, a) {
    const open = Boolean(logs.get(JSON.stringify([node.key, a.n]))?.open);
    const button = el("button", { type: "button", class: "log-toggle", "data-node": node.key,
      "data-attempt": a.n, "aria-expanded": open ? "true" : "false",
      title: "what this attempt printed (stdout and stderr)" }, open ? "hide log" : "log");
    button.addEventListener("click", () => {
      const state = logState(node, a);
      state.open = !state.open;
      button.setAttribute("aria-expanded", state.open ? "true" : "false");
      button.textContent = state.open ? "hide log" : "log";
      if (!state.open) {
        state.row.remove();
        return;
      }
      button.closest("tr").after(state.row);
      if (state.next === null) logNote(state);
      state.final = state.status !== "running";
      loadLog(state);
    });
    return button;
  }

  function attemptsTable(node) {
    return el("table", { class: "grid attempts", "data-node": node.key },
      el("thead", {}, el("tr", {}, ...["Attempt", "Status", "Started", "Took", "From checkpoint",
        "Latest checkpoint at end", "Retry", "Error", "Log"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...node.attempts.flatMap((a) => {
        const start = seconds(a.started);
        const row = el("tr", { "data-status": a.status, "data-attempt": a.n },
          el("td", { class: "num" }, String(a.n)),
          el("td", {}, statusPill(a.status), Goodput.badge(a)),
          el("td", { class: "mono" }, clock(start, true)),
          el("td", { class: "num" }, a.status === "running" ? "running"
            : duration(a.duration_s)),
          el("td", { class: "mono" }, a.checkpoint_at_start || "–"),
          el("td", { class: "mono" }, a.checkpoint_at_end || "–"),
          el("td", { class: "retry" }, retryText(node, a)),
          el("td", { class: "error-cell", title: a.error || "" }, a.error || ""),
          el("td", {}, logToggle(node, a)));
        const state = logs.get(JSON.stringify([node.key, a.n]));
        if (state) state.status = a.status;
        return state && state.open ? [row, state.row] : [row]; // an open log stays open
      })));
  }

  function damagedList(node) {
    const damaged = node.damaged_checkpoints || [];
    if (!damaged.length) return null;
    return el("ul", { class: "damaged", "data-node": node.key }, ...damaged.map((d) =>
      el("li", { class: "error-line", "data-version": d.id ?? "" },
        d.id ? el("span", { class: "mono" }, d.id) : "listing", " damaged: ", d.reason)));
  }

  function checkpointsTable(doc, node) {
    if (!node.checkpoints.length) {
      return el("p", { class: "muted" }, (node.damaged_checkpoints || []).length
        ? "No usable committed checkpoint is retained for this node."
        : "No committed checkpoint is retained for this node.");
    }
    const base = `${api}/nodes/${encodeURIComponent(node.key)}/checkpoints/`;
    return el("table", { class: "grid checkpoints", "data-node": node.key },
      el("thead", {}, el("tr", {}, ...["Version", "Attempt", "Step", "Kind", "Size", "Files",
        "Created", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...node.checkpoints.map((c) => el("tr", { "data-version": c.id },
        el("td", { class: "mono" }, c.id),
        el("td", { class: "num" }, String(c.attempt)),
        el("td", { class: "num" }, c.step === null ? "–" : String(c.step)),
        el("td", {}, c.kind),
        el("td", { class: "num" }, size(c.size)),
        el("td", { class: "num" }, String(c.files)),
        el("td", { class: "mono" }, clock(seconds(c.created), true)),
        el("td", {}, el("a", { class: "download", href: withToken(base + encodeURIComponent(c.id) + ".tar"),
          download: `${doc.id}-${c.id}.tar` }, "download .tar"))))));
  }

  function nodes(doc) {
    // Open logs move into the new tables: where each one was scrolled to is kept.
    const scrolled = [...logs.values()].filter((s) => s.open)
      .map((s) => [s, s.pre.scrollTop, scrolledToEnd(s.pre)]);
    document.getElementById("nodes").replaceChildren(...doc.nodes.map((node) =>
      el("section", { class: "node", "data-node": node.key },
        el("h3", {}, node.key, " ", statusPill(node.status),
          el("span", { class: "muted" }, ` task ${node.task} · took ${took(node)}`)),
        node.budgets ? el("div", { class: "budgets muted", "data-node": node.key },
          "retry budgets spent: ", budgets(node),
          node.attempts.length > 0 && node.budget_from > node.attempts[0].n
            ? ` (fresh from attempt ${node.budget_from}: the node had failed, then was resumed)`
            : "") : null,
        node.error ? el("div", { class: "error-line" }, node.error) : null,
        node.output_preview != null ? el("div", { class: "result" }, "output: ",
          el("span", { class: "mono output" }, node.output_preview)) : null,
        el("h4", {}, "Attempts"), attemptsTable(node),
        el("h4", {}, "Checkpoints"), checkpointsTable(doc, node), damagedList(node))));
    for (const [state, top, atEnd] of scrolled) {
      state.pre.scrollTop = atEnd ? state.pre.scrollHeight : top;
    }
  }

  function workHint(doc) {
    const hint = document.getElementById("work-hint");
    hint.hidden = !doc.nodes.some(Charts.checkpointed);
    const units = new Set(doc.nodes.filter(Charts.checkpointed).map((n) => n.work.unit));
    const text = units.has("commits")
      ? "Level of the latest committed checkpoint over time. Where a task gives no step, the " +
        "level is the number of checkpoint commits along the resume chain (each retry counts on " +
        "from the checkpoint it resumed). "
      : "Step of the latest committed checkpoint over time. ";
    hint.textContent = text +
      "Red: work since the last commit, lost when an attempt failed; grey: the wait before the " +
      "next attempt; dashed: commits pruned by retention, interpolated.";
  }

  function render(doc) {
    const now = seconds(doc.now);
    summary(doc);
    const axis = Charts.timeline(document.getElementById("timeline"), doc, now);
    Charts.legend(document.getElementById("legend"));
    workHint(doc);
    Charts.workCharts(document.getElementById("work"), doc, axis, now);
    Goodput.render(document.getElementById("goodput"), doc);
    failures(doc);
    nodes(doc);
    document.body.setAttribute("data-status", doc.status);
  }

  poll(async () => {
    const doc = await getJSON(api);
    const { now, ...rest } = doc;
    const json = JSON.stringify(rest);
    if (json !== lastJson || doc.status === "running") {
      lastJson = json;
      render(doc);
    }
    const running = doc.status === "running";
    refreshLogs();
    setLive(running ? `live · updated ${new Date().toLocaleTimeString()}` : doc.status, true,
      doc.status);
    return running;
  }, 2000);
})();
