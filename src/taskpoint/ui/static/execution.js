// The execution page: summary, timeline, work over time, failures, and per-node tables.
// It polls /api/executions/<id> every 2 s while the execution runs, and stops when it ends.
"use strict";

(() => {
  const { el, statusPill, duration, size, clock, seconds, withToken, getJSON, poll, setLive,
    took, budgets, retryText } = TP;
  const FAILED = new Set(["failed", "recoverable", "preempted", "lost", "aborted", "interrupted"]);
  const executionId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const api = "/api/executions/" + encodeURIComponent(executionId);
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

  function attemptsTable(node) {
    return el("table", { class: "grid attempts", "data-node": node.key },
      el("thead", {}, el("tr", {}, ...["Attempt", "Status", "Started", "Took", "From checkpoint",
        "Latest checkpoint at end", "Retry", "Error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...node.attempts.map((a) => {
        const start = seconds(a.started);
        return el("tr", { "data-status": a.status, "data-attempt": a.n },
          el("td", { class: "num" }, String(a.n)),
          el("td", {}, statusPill(a.status)),
          el("td", { class: "mono" }, clock(start, true)),
          el("td", { class: "num" }, a.status === "running" ? "running"
            : duration(a.duration_s)),
          el("td", { class: "mono" }, a.checkpoint_at_start || "–"),
          el("td", { class: "mono" }, a.checkpoint_at_end || "–"),
          el("td", { class: "retry" }, retryText(node, a)),
          el("td", { class: "error-cell", title: a.error || "" }, a.error || ""));
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
  }

  function workHint(doc) {
    const units = new Set(doc.nodes.map((n) => n.work.unit));
    const hint = units.has("commits")
      ? "Level of the latest committed checkpoint over time. Where a task gives no step, the " +
        "level is the number of checkpoint commits along the resume chain (each retry counts on " +
        "from the checkpoint it resumed). "
      : "Step of the latest committed checkpoint over time. ";
    document.getElementById("work-hint").textContent = hint +
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
    setLive(running ? `live · updated ${new Date().toLocaleTimeString()}` : doc.status, true);
    return running;
  }, 2000);
})();
