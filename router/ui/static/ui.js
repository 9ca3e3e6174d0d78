// Turnout's status page: polls /admin/status with the admin key kept in sessionStorage,
// and draws each group's recent traffic, latency and cache hit ratio on canvases.
"use strict";

const KEY_STORAGE = "turnout.adminKey";
const POLL_MS = Number(new URLSearchParams(location.search).get("interval_ms")) || 2000;
const COLORS = { requests: "#2f6fde", errors: "#c0392b", latency: "#7b4fd6", hits: "#1a7f4b" };
const groupViews = new Map();
let timer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function sum(values) { return values.reduce((a, b) => a + b, 0); }

function fmtMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

function fmtRatio(hits, lookups) {
  return lookups > 0 ? `${Math.round((100 * hits) / lookups)} %` : "–";
}

function fmtTime(seconds) { return new Date(seconds * 1000).toLocaleTimeString(); }

// --- authentication -------------------------------------------------------------------

function showLogin(message) {
  $("status").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("live").textContent = "admin key needed";
  $("live").className = "live";
  $("key").focus();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("key").value.trim());
  $("key").value = "";
  $("login").hidden = true;
  poll();
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  showLogin();
});

// --- polling --------------------------------------------------------------------------

async function poll() {
  clearTimeout(timer);
  const key = sessionStorage.getItem(KEY_STORAGE);
  try {
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const response = await fetch("/admin/status", { headers, cache: "no-store" });
    if (response.status === 401) {
      if (key) sessionStorage.removeItem(KEY_STORAGE);
      const reason = await errorMessage(response);
      showLogin(/no admin key/i.test(reason)
        ? "Turnout has no admin key configured ([server] admin_key): the status is not shown."
        : key ? "That key was refused." : "");
      return; // no polling until a key is entered
    }
    if (!response.ok) throw new Error(`/admin/status answered ${response.status}`);
    const status = await response.json();
    fetchedAt = Date.now();
    render(status);
    $("problem").hidden = true;
    $("live").textContent = "live";
    $("live").className = "live ok";
  } catch (error) {
    $("problem").textContent = `Cannot reach Turnout: ${error.message}`;
    $("problem").hidden = false;
    $("live").textContent = "retrying";
    $("live").className = "live stale";
  }
  timer = setTimeout(poll, POLL_MS);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return String(body?.error?.message || "");
  } catch {
    return "";
  }
}

// --- rendering ------------------------------------------------------------------------

function render(status) {
  $("login").hidden = true;
  $("status").hidden = false;
  $("forget").hidden = false;
  const traffic = status.traffic || { bucket_seconds: 10, start: 0, groups: {}, deployments: {} };
  const deployments = Array.isArray(status.deployments) ? status.deployments : [];
  const groups = [];
  for (const d of deployments) if (!groups.includes(d.group)) groups.push(d.group);
  for (const g of Object.keys(traffic.groups || {})) if (!groups.includes(g)) groups.push(g);

  renderSummary(traffic, deployments);
  const container = $("groups");
  for (const name of groups) {
    let view = groupViews.get(name);
    if (!view) {
      view = makeGroupView(name);
      groupViews.set(name, view);
    }
    container.append(view.root); // keeps the config's order
    updateGroupView(view, traffic, deployments.filter((d) => d.group === name));
  }
  for (const [name, view] of groupViews) {
    if (!groups.includes(name)) { view.root.remove(); groupViews.delete(name); }
  }
  renderCache(status.cache || {});
  $("loaded-at").textContent = status.config_loaded_at ? fmtTime(status.config_loaded_at) : "–";
  $("updated-at").textContent = new Date().toLocaleTimeString();
}

function renderSummary(traffic, deployments) {
  const all = Object.values(traffic.groups || {});
  const total = (field) => sum(all.map((s) => sum(s[field] || [])));
  const minuteBuckets = Math.max(1, Math.round(60 / (traffic.bucket_seconds || 10)));
  const lastMinute = sum(all.map((s) => sum((s.requests || []).slice(-minuteBuckets))));
  const requests = total("requests");
  const windowMin = Math.round(((all[0]?.requests?.length || 90) * (traffic.bucket_seconds || 10)) / 60);
  for (const node of document.querySelectorAll(".window")) node.textContent = `${windowMin} min`;
  $("total-requests").textContent = String(requests);
  $("total-rate").textContent = String(lastMinute);
  $("total-errors").textContent = String(total("errors"));
  $("total-latency").textContent = requests ? fmtMs(total("latency_ms_sum") / requests) : "–";
  $("total-hit-ratio").textContent = fmtRatio(total("cache_hits"), total("cache_lookups"));
  const healthy = deployments.filter((d) => health(d).kind === "ok").length;
  $("total-healthy").textContent = `${healthy} / ${deployments.length}`;
}

function makeGroupView(name) {
  const requests = el("canvas", { "aria-label": `${name} requests` });
  const latency = el("canvas", { "aria-label": `${name} latency` });
  const hits = el("canvas", { "aria-label": `${name} cache hit ratio` });
  const meta = el("span", { class: "meta" });
  const tbody = el("tbody");
  const legend = (pairs) => el("span", { class: "legend" },
    ...pairs.map(([label, key]) => el("span", {}, el("i", { class: `swatch-${key}` }), label)));
  const root = el("section", { class: "group", "data-group": name },
    el("h2", {}, name, meta),
    el("div", { class: "charts" },
      el("div", { class: "chart" }, el("h3", {}, "requests per bucket "),
        legend([["requests", "requests"], ["errors", "errors"]]), requests),
      el("div", { class: "chart" }, el("h3", {}, "mean latency"), latency),
      el("div", { class: "chart" }, el("h3", {}, "cache hit ratio"), hits)),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["deployment", "provider / model", "health", "attempts",
        "failures", "mean latency", "attempts / failures over time", "details"].map((h) => el("th", {}, h)))),
      tbody));
  return { root, meta, tbody, requests, latency, hits, rows: new Map() };
}

function updateGroupView(view, traffic, deployments) {
  const s = (traffic.groups || {})[view.root.dataset.group] || {};
  const requests = s.requests || [];
  const total = sum(requests);
  view.meta.textContent = `${total} requests · ${fmtRatio(sum(s.cache_hits || []), sum(s.cache_lookups || []))} cache hits`;
  view.meta.dataset.requests = String(total);
  const latency = requests.map((n, i) => (n ? (s.latency_ms_sum[i] || 0) / n : null));
  const ratio = (s.cache_lookups || []).map((n, i) => (n ? (100 * (s.cache_hits[i] || 0)) / n : null));
  drawChart(view.requests, traffic, [
    { values: requests, color: COLORS.requests },
    { values: s.errors || [], color: COLORS.errors },
  ], { format: (v) => String(Math.round(v)) });
  drawChart(view.latency, traffic, [{ values: latency, color: COLORS.latency }], { format: fmtMs });
  drawChart(view.hits, traffic, [{ values: ratio, color: COLORS.hits }],
    { max: 100, format: (v) => `${Math.round(v)} %` });

  for (const d of deployments) {
    let row = view.rows.get(d.id);
    if (!row) {
      row = makeRow(d);
      view.rows.set(d.id, row);
    }
    view.tbody.append(row.tr);
    updateRow(row, d, traffic);
  }
  for (const [id, row] of view.rows) {
    if (!deployments.some((d) => d.id === id)) { row.tr.remove(); view.rows.delete(id); }
  }
}

function makeRow(d) {
  const cells = Array.from({ length: 8 }, () => el("td"));
  const spark = el("canvas", { "aria-label": `${d.id} attempts` });
  cells[6].append(spark);
  const tr = el("tr", { class: "deployment", "data-id": d.id }, ...cells);
  return { tr, cells, spark };
}

const KNOWN_FIELDS = new Set(["id", "group", "provider", "model", "state", "in_flight",
  "latency_estimate", "recent_failures", "rpm_used", "rpm_limit", "tpm_used", "tpm_limit"]);
let fetchedAt = Date.now();

function health(d) {
  const until = cooldownUntil(d);
  const state = String(d.state || "healthy");
  if (until && until > Date.now()) {
    return { kind: "cooling", text: `cooling down, ${Math.ceil((until - Date.now()) / 1000)} s left` };
  }
  if (state === "healthy" || state === "ok") return { kind: "ok", text: "healthy" };
  if (/cool/.test(state)) return { kind: "cooling", text: state.replace(/_/g, " ") };
  return { kind: "down", text: state.replace(/_/g, " ") };
}

// The end of a cooldown, in ms since the epoch: from an absolute `..._until` (Unix
// seconds, ms or a date string) or a relative `cooling_down_for` (seconds left when fetched).
function cooldownUntil(d) {
  for (const [name, value] of Object.entries(d)) {
    if (value === null || value === undefined) continue;
    if (/until/.test(name)) {
      if (typeof value === "number") return value > 1e12 ? value : value * 1000;
      const parsed = Date.parse(value);
      if (!Number.isNaN(parsed)) return parsed;
    } else if (/cool.*_(for|left)$/.test(name) && typeof value === "number") {
      return fetchedAt + value * 1000;
    }
  }
  return null;
}

function details(d) {
  const parts = [];
  if (typeof d.in_flight === "number") parts.push(`in flight: ${d.in_flight}`);
  if (typeof d.latency_estimate === "number") {
    parts.push(`latency estimate: ${fmtMs(d.latency_estimate * 1000)}`);
  }
  for (const unit of ["rpm", "tpm"]) {
    if (d[`${unit}_limit`]) parts.push(`${unit}: ${d[`${unit}_used`] ?? 0} / ${d[`${unit}_limit`]}`);
  }
  const failures = d.recent_failures;
  const count = Array.isArray(failures) ? failures.length : failures;
  if (typeof count === "number" && count > 0) parts.push(`recent failures: ${count}`);
  for (const [name, value] of Object.entries(d)) {
    if (KNOWN_FIELDS.has(name) || /until|cool.*_(for|left)$/.test(name) || value === null
      || typeof value === "object") continue;
    parts.push(`${name.replace(/_/g, " ")}: ${typeof value === "number" ? +value.toFixed(3) : value}`);
  }
  return parts;
}

function lastFailure(d) {
  const failures = d.recent_failures;
  if (!Array.isArray(failures) || failures.length === 0) return "";
  const last = failures[failures.length - 1];
  return typeof last === "object" && last !== null ? String(last.reason ?? "") : String(last);
}

function updateRow(row, d, traffic) {
  const s = (traffic.deployments || {})[d.id] || {};
  const attempts = sum(s.attempts || []);
  const h = health(d);
  const badge = el("span", { class: `badge ${h.kind === "ok" ? "" : h.kind}` }, h.text);
  row.cells[0].textContent = d.id;
  row.cells[1].textContent = `${d.provider || "?"} / ${d.model || "–"}`;
  row.cells[2].replaceChildren(badge);
  row.cells[3].textContent = String(attempts);
  row.cells[3].dataset.attempts = String(attempts);
  row.cells[4].textContent = String(sum(s.failures || []));
  row.cells[5].textContent = attempts ? fmtMs(sum(s.latency_ms_sum || []) / attempts) : "–";
  drawChart(row.spark, traffic, [
    { values: s.attempts || [], color: COLORS.requests },
    { values: s.failures || [], color: COLORS.errors },
  ], { bare: true });
  const extra = el("span", { class: "extra" }, details(d).join(" · ") || "–");
  const reason = lastFailure(d);
  if (reason) extra.title = `last failure: ${reason}`;
  row.cells[7].replaceChildren(extra);
}

function renderCache(cache) {
  const items = [];
  const add = (name, value) => {
    const shown = /ratio/.test(name) && typeof value === "number"
      ? `${Math.round(value * 100)} %` : String(value);
    items.push(el("dt", {}, name.replace(/_/g, " ")), el("dd", {}, shown));
  };
  for (const [name, value] of Object.entries(cache)) {
    if (value === null || value === undefined) continue;
    if (typeof value !== "object") { add(name, value); continue; }
    if (Array.isArray(value)) continue;
    for (const [key, inner] of Object.entries(value)) {
      if (inner !== null && typeof inner !== "object") add(`${name} ${key}`, inner);
    }
  }
  $("cache").replaceChildren(...items);
}

// --- charts ---------------------------------------------------------------------------

function drawChart(canvas, traffic, series, options = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 260;
  const height = canvas.clientHeight || 120;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const pad = options.bare ? { l: 1, r: 1, t: 2, b: 2 } : { l: 44, r: 6, t: 8, b: 18 };
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const count = Math.max(...series.map((s) => s.values.length), 2);
  const peak = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const max = options.max || (peak > 0 ? peak * 1.15 : 1);
  const x = (i) => pad.l + (plotW * i) / (count - 1);
  const y = (v) => pad.t + plotH - (plotH * v) / max;

  if (!options.bare) {
    ctx.strokeStyle = "#e3e6eb";
    ctx.fillStyle = "#667085";
    ctx.font = "10px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (const fraction of [0, 0.5, 1]) {
      const value = max * fraction;
      ctx.beginPath();
      ctx.moveTo(pad.l, y(value) + 0.5);
      ctx.lineTo(width - pad.r, y(value) + 0.5);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(options.format ? options.format(value) : String(value), pad.l - 4, y(value) + 3);
    }
    const minutes = Math.round((count * (traffic.bucket_seconds || 10)) / 60);
    ctx.textAlign = "left";
    ctx.fillText(`−${minutes} min`, pad.l, height - 4);
    ctx.textAlign = "right";
    ctx.fillText("now", width - pad.r, height - 4);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(i), y(v));
      else { ctx.moveTo(x(i), y(v)); drawing = true; }
    });
    ctx.stroke();
    ctx.fillStyle = s.color;
    s.values.forEach((v, i) => {
      const alone = (j) => s.values[j] === null || s.values[j] === undefined;
      if (v !== null && v !== undefined && alone(i - 1) && alone(i + 1)) {
        ctx.fillRect(x(i) - 1.5, y(v) - 1.5, 3, 3);
      }
    });
  }
}

poll();
