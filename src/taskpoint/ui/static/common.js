// Shared helpers of the taskpoint pages: the token, API calls, DOM/SVG builders, formatting.
"use strict";

const TP = (() => {
  // A server bound off loopback needs a token: the page was opened with ?token=..., which is
  // kept here, sent as a Bearer header on API calls and appended to links and downloads.
  const token = new URLSearchParams(location.search).get("token");

  // One colour per status, defined once in ui.css (--succeeded, --failed, ...): the pills and
  // swatches use the CSS classes, the SVG charts these values.
  const STATUSES = ["succeeded", "recoverable", "preempted", "lost", "failed", "running",
    "aborted", "interrupted"];
  const rootStyle = getComputedStyle(document.documentElement);
  const STATUS_COLORS = Object.fromEntries(STATUSES.map((s) =>
    [s, rootStyle.getPropertyValue("--" + s).trim() || "#868e96"]));
  const ATTEMPT_STATUSES = STATUSES;

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  async function request(url) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(url, { headers, cache: "no-store" });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        message = (await response.json()).error || message;
      } catch (_) { /* not JSON */ }
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return response;
  }

  async function getJSON(url) {
    return (await request(url)).json();
  }

  // One page of /api/executions: its rows, how many match, how many of each status.
  async function getPage(url) {
    const response = await request(url);
    let counts = {};
    try {
      counts = JSON.parse(response.headers.get("X-Status-Counts") || "{}");
    } catch (_) { /* left empty */ }
    return { rows: await response.json(), total: Number(response.headers.get("X-Total-Count")),
      counts };
  }

  // A piece of an attempt's log: raw bytes (decoded by the caller, who may get a character
  // split across two pieces), where they start and how long the log was.
  async function getLog(url) {
    const response = await request(url);
    return { bytes: new Uint8Array(await response.arrayBuffer()),
      start: Number(response.headers.get("X-Log-Start")),
      size: Number(response.headers.get("X-Log-Size")) };
  }

  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    return append(node, children);
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    return append(node, children);
  }

  function statusPill(status) {
    return el("span", { class: "pill status-" + status, "data-status": status }, status);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    seconds = Math.max(0, seconds);
    if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
    let m = Math.floor(seconds / 60);
    const s = Math.floor(seconds % 60);
    const h = Math.floor(m / 60);
    m %= 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}h${pad(m)}m${pad(s)}s` : `${m}m${pad(s)}s`;
  }

  // "7.20 s", or "7.20 s (ran 3.10 s in 2 driver runs)" when it spans several driver runs: the
  // same shape as the CLI's list and show (duration_s is wall time, running_s the time it ran).
  function took(doc) {
    const wall = duration(doc.duration_s);
    return doc.driver_runs > 1
      ? `${wall} (ran ${duration(doc.running_s)} in ${doc.driver_runs} driver runs)` : wall;
  }

  // "retries 1/3, system 0/3": the retries each budget spent since budgets.from, of how many.
  const BUDGET_LABELS = { retries: "retries", system_retries: "system" };
  function budgets(node) {
    if (!node.budgets) return "";
    return Object.entries(BUDGET_LABELS).filter(([name]) => node.budgets[name])
      .map(([name, label]) => `${label} ${node.budgets[name].spent}/${node.budgets[name].limit}`)
      .join(", ");
  }

  // What an attempt's retry spent, or, for a failed node's last attempt, which budget ran out.
  function retryText(node, a) {
    if (a.budget) return "retried: " + (BUDGET_LABELS[a.budget] || a.budget);
    const last = node.attempts[node.attempts.length - 1];
    if (node.exhausted && last && last.n === a.n) {
      const b = node.budgets && node.budgets[node.exhausted];
      return `no retry left: ${BUDGET_LABELS[node.exhausted] || node.exhausted}` +
        (b ? ` ${b.spent}/${b.limit} spent` : "");
    }
    return "";
  }

  function size(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let i = 0;
    while (value >= 1024 && i < units.length - 1) {
      value /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${value.toFixed(1)} ${units[i]}`;
  }

  function seconds(iso) {
    return iso ? Date.parse(iso) / 1000 : null;
  }

  function clock(t, withMs) {
    if (t === null || t === undefined) return "–";
    const d = new Date(t * 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
  }

  // The "live" indicator: its dot takes the colour of `status` when one is given (an ended
  // execution), else green while updates arrive and red when they fail.
  function setLive(text, ok, status) {
    const live = document.getElementById("live");
    if (!live) return;
    live.textContent = text;
    live.classList.toggle("stale", !ok);
    if (status) live.setAttribute("data-status", status);
    else live.removeAttribute("data-status");
  }

  // Call fn every intervalMs while the tab is visible; fn returns false to stop. A hidden tab
  // is not polled (it resumes at once when shown again); failures back off up to 30 s and are
  // shown; 401 and 404 stop. kick() runs fn now (after the call in flight, if any).
  function poll(fn, intervalMs) {
    let stopped = false;
    let inFlight = false;
    let again = false;
    let failures = 0;
    let timer = null;
    function schedule(ms) {
      clearTimeout(timer);
      timer = setTimeout(tick, ms);
    }
    async function tick() {
      timer = null;
      if (stopped || document.hidden) return;
      if (inFlight) {
        again = true;
        return;
      }
      inFlight = true;
      let go = true;
      try {
        go = (await fn()) !== false;
        failures = 0;
      } catch (error) {
        failures += 1;
        setLive("disconnected: " + error.message, false);
        if (error.status === 401 || error.status === 404) go = false;
      }
      inFlight = false;
      if (!go) stopped = true;
      if (stopped) return;
      const wait = again ? 0 : Math.min(30000, intervalMs * 2 ** Math.max(0, failures - 1));
      again = false;
      schedule(wait);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !stopped && !inFlight && timer === null) schedule(0);
    });
    tick();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
      kick() {
        if (stopped) return;
        if (inFlight) again = true;
        else schedule(0);
      },
    };
  }

  for (const link of document.querySelectorAll("#home-link, #back-link")) {
    link.setAttribute("href", withToken("/"));
  }

  return {
    ATTEMPT_STATUSES, STATUSES, STATUS_COLORS, budgets, clock, duration, el, getJSON, getLog,
    getPage, poll, retryText, seconds, setLive, size, statusPill, svg, token, took, withToken,
  };
})();
