// kto console: polls the operator's JSON API every 2 s and renders with textContent only (never HTML from
// data). The CSRF token lives in this page's memory; the session cookie is HttpOnly.
"use strict";

const POLL_MS = 2000;
const state = { csrf: null, namespace: null, namespaces: [], timer: null, chartMetric: null, run: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function show(id, visible) { $(id).hidden = !visible; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(path, options) {
  const init = { method: "GET", credentials: "same-origin", headers: {}, ...(options || {}) };
  if (init.method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (state.csrf) init.headers["X-CSRF-Token"] = state.csrf;
    init.body = JSON.stringify(init.body || {});
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/api/session") resume();
  if (!response.ok) throw new ApiError(response.status, body.error || response.statusText);
  return body;
}

function age(seconds) {
  if (seconds == null) return "";
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function localTime(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

function nsPath(suffix) { return `/api/namespaces/${encodeURIComponent(state.namespace)}${suffix}`; }

// --- session ---------------------------------------------------------------------------------------------

function signedIn(session) {
  state.csrf = session.csrf;
  state.namespaces = session.namespaces;
  if (!state.namespaces.includes(state.namespace)) state.namespace = state.namespaces[0] || null;
  $("user").textContent = session.user;
  const select = $("namespace");
  select.replaceChildren(...state.namespaces.map((ns) => el("option", { value: ns }, ns)));
  select.value = state.namespace || "";
  show("whoami", true);
  show("signin", false);
  $("signout").hidden = Boolean(session.oauthProxy);
  route();
}

function signedOut(message) {
  state.csrf = null;
  state.generation = (state.generation || 0) + 1;  // a refresh still running schedules no other
  clearTimeout(state.timer);
  show("whoami", false);
  show("overview", false);
  show("run-page", false);
  show("signin", true);
  $("signin-error").textContent = message || "";
}

// A session that ended (expired, signed out elsewhere, another user behind the oauth-proxy): ask again; behind
// the proxy its forwarded token signs in by itself, otherwise the sign-in form shows.
async function resume() {
  try {
    signedIn(await call("/api/session"));
  } catch (err) {
    signedOut(err.status === 401 ? "" : err.message);
  }
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    const session = await call("/api/session", { method: "POST", body: { token: $("token").value.trim() } });
    $("token").value = "";
    signedIn(session);
  } catch (err) {
    $("signin-error").textContent = err.message;
  }
}

async function signOut() {
  try { await call("/api/signout", { method: "POST" }); } catch (err) { /* signed out either way */ }
  signedOut("signed out");
}

// --- overview --------------------------------------------------------------------------------------------

function renderPower(power, error, permission) {
  show("power-missing", !power);
  show("power-panel", Boolean(power));
  if (!power) {
    $("power-missing").textContent = error || "No PowerSchedule in this namespace: the platform has no switch.";
    return;
  }
  const button = $("power-button");
  button.textContent = power.on ? "ON" : "OFF";
  button.classList.toggle("on", power.on);
  button.dataset.target = power.on ? "off" : "on";
  button.title = permission.allowed ? `switch the platform ${button.dataset.target}` : permission.reason;
  button.disabled = !permission.allowed || button.classList.contains("busy");
  $("power-denied").textContent = permission.allowed ? "" : permission.reason;
  $("power-state").textContent = power.state || "(not reconciled yet)";
  $("power-reason").textContent = power.reason;
  $("power-message").textContent = power.message;
  $("next-on").textContent = localTime(power.nextOn);
  $("next-off").textContent = localTime(power.nextOff);
  $("power-deferred").textContent = power.deferredBy.length ? `sleep deferred by ${power.deferredBy.join(", ")}` : "";
  const waking = $("waking");
  waking.hidden = power.waking.length === 0;
  waking.replaceChildren(el("li", { class: "title" }, "waking:"),
    ...power.waking.map((step) => el("li", { class: step.state, title: `${step.kind}: ${step.state}` }, step.name)));
  $("workloads").tBodies[0].replaceChildren(...power.workloads.map((w) => el("tr", { "data-name": w.name },
    el("td", {}, w.name), el("td", {}, w.kind),
    el("td", { class: "replicas" }, w.kind === "CronJob" ? (w.suspended ? "suspended" : "active")
      : `${w.replicas} (${w.readyReplicas})`),
    el("td", { class: "saved" }, w.savedReplicas ?? (w.savedSuspend ? "active" : "")),
    el("td", {}, w.asleep ? "asleep" : w.ready ? "ready" : "starting"))));
}

function progressCell(row) {
  if (!row.progress) return el("td", { class: "progress" });
  const bar = el("progress", { max: row.progress.epochs, value: row.progress.epoch });
  return el("td", { class: "progress" }, bar, ` epoch ${row.progress.epoch} of ${row.progress.epochs}`);
}

function renderRuns(runs, error, permission) {
  $("runs-error").textContent = error || "";
  $("cancel-denied").textContent = permission.allowed ? "" : `Cancel disabled: ${permission.reason}`;
  $("runs-table").tBodies[0].replaceChildren(...(runs || []).map((row) => {
    const cancel = el("button", { type: "button", class: "cancel", title: permission.reason || "cancel this run" },
      row.cancelRequested ? "cancelling" : "Cancel");
    cancel.disabled = !row.cancellable || !permission.allowed;
    cancel.addEventListener("click", () => cancelRun(row.name, cancel));
    const detail = row.reason || row.message ? el("div", { class: "reason" }, row.reason,
      row.message ? el("div", { class: "message" }, row.message) : "") : "";
    return el("tr", { "data-name": row.name, "data-phase": row.phase },
      el("td", {}, el("a", { href: `#/run/${encodeURIComponent(row.name)}` }, row.name)),
      el("td", { class: `phase phase-${row.phase}` }, row.phase, detail),
      progressCell(row),
      el("td", {}, row.primaryMetric),
      el("td", { title: row.created }, age(row.ageSeconds)),
      el("td", {}, mlflowLink(row.mlflowUrl)),
      el("td", {}, cancel));
  }));
}

async function refreshOverview() {
  const data = await call(nsPath("/overview"));
  renderPower(data.power, data.powerError, data.permissions.switchPower);
  renderRuns(data.runs, data.runsError, data.permissions.cancelRun);
  show("overview", true);
}

async function switchPower() {
  const button = $("power-button");
  button.classList.add("busy");
  button.disabled = true;
  try {
    await call(nsPath("/power"), { method: "POST", body: { state: button.dataset.target } });
    $("power-denied").textContent = "";
  } catch (err) {
    $("power-denied").textContent = err.message;
  } finally {
    button.classList.remove("busy");
  }
  await refresh();
}

async function cancelRun(name, button) {
  button.disabled = true;
  try {
    await call(nsPath(`/runs/${encodeURIComponent(name)}/cancel`), { method: "POST" });
    $("error").textContent = "";
  } catch (err) {
    $("error").textContent = `Cancel ${name}: ${err.message}`;
    $("run-denied").textContent = err.message;
  }
  await refresh();
}

// --- a run's page ----------------------------------------------------------------------------------------

function rows(tbody, pairs) {
  tbody.replaceChildren(...pairs.map(([key, value]) => el("tr", {}, el("th", {}, key), el("td", {}, value))));
}

function renderParams(params, editable) {
  const tbody = $("run-params").tBodies[0];
  if (tbody.dataset.run === state.run && tbody.children.length) return; // keep the user's edits
  tbody.dataset.run = state.run;
  tbody.replaceChildren(...Object.entries(params).map(([key, value]) => {
    const input = el("input", { class: "param", name: key, value: String(value), "data-type": typeof value });
    input.disabled = !editable;
    return el("tr", {}, el("th", {}, key), el("td", {}, input));
  }));
}

function editedParams() {
  const out = {};
  for (const input of $("run-params").querySelectorAll("input.param")) {
    const type = input.dataset.type;
    const raw = input.value;
    if (type === "number" && raw.trim() !== "" && !Number.isNaN(Number(raw))) out[input.name] = Number(raw);
    else if (type === "boolean" && (raw === "true" || raw === "false")) out[input.name] = raw === "true";
    else out[input.name] = raw;
  }
  return out;
}

function renderChart(metric, points) {
  const chart = $("chart");
  if (!points.length) { chart.replaceChildren(el("p", { class: "note" }, "no history yet")); return; }
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  const [w, h, pad] = [400, 180, 30];
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${metric} by step`);
  const steps = points.map((p) => p.step), values = points.map((p) => p.value);
  const [s0, s1] = [Math.min(...steps), Math.max(...steps)];
  let [v0, v1] = [Math.min(...values), Math.max(...values)];
  if (v0 === v1) { v0 -= 0.5; v1 += 0.5; }
  const x = (s) => pad + (s1 === s0 ? (w - 2 * pad) / 2 : ((s - s0) / (s1 - s0)) * (w - 2 * pad));
  const y = (v) => h - pad - ((v - v0) / (v1 - v0)) * (h - 2 * pad);
  const svgEl = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  svg.append(
    svgEl("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, stroke: "#999" }),
    svgEl("line", { x1: pad, y1: pad, x2: pad, y2: h - pad, stroke: "#999" }),
    svgEl("polyline", { fill: "none", stroke: "#1d5fa8", "stroke-width": 2,
      points: points.map((p) => `${x(p.step).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") }),
    ...points.map((p) => svgEl("circle", { cx: x(p.step).toFixed(1), cy: y(p.value).toFixed(1), r: 3, fill: "#1d5fa8" },
      undefined)),
    svgEl("text", { x: 2, y: pad, "font-size": 10 }, v1.toPrecision(3)),
    svgEl("text", { x: 2, y: h - pad, "font-size": 10 }, v0.toPrecision(3)),
    svgEl("text", { x: pad, y: h - 8, "font-size": 10 }, `step ${s0}`),
    svgEl("text", { x: w - pad, y: h - 8, "font-size": 10, "text-anchor": "end" }, `step ${s1}`));
  chart.replaceChildren(svg);
}

async function refreshRun() {
  const data = await call(nsPath(`/runs/${encodeURIComponent(state.run)}`));
  const run = data.run, perms = data.permissions;
  $("run-name").textContent = run.name;
  $("run-phase").textContent = run.phase;
  $("run-phase").className = `phase-${run.phase}`;
  $("run-reason").textContent = run.reason;
  $("run-message").textContent = run.message;
  show("run-progress", Boolean(run.progress));
  if (run.progress) {
    $("run-progress").value = run.progress.percent;
    $("run-epochs").textContent = `epoch ${run.progress.epoch} of ${run.progress.epochs}`;
  } else {
    $("run-epochs").textContent = "";
  }
  $("run-links").replaceChildren(`image ${run.image} · experiment ${run.experiment} `,
    mlflowLink(run.mlflowUrl),
    run.modelVersion ? ` · model version ${run.modelVersion}` : "");
  $("run-cancel").disabled = !run.cancellable || !perms.cancelRun.allowed;
  $("run-again").disabled = !perms.createRun.allowed;
  $("run-denied").textContent = [perms.cancelRun, perms.createRun].filter((p) => !p.allowed)
    .map((p) => p.reason).filter((r, i, all) => all.indexOf(r) === i).join("; ");
  renderParams(run.parameters, perms.createRun.allowed);
  rows($("run-metrics").tBodies[0], Object.entries(run.metrics).map(([k, v]) => [k, Number(v).toPrecision(4)]));
  $("run-conditions").tBodies[0].replaceChildren(...run.conditions.map((c) => el("tr", {},
    el("td", {}, c.type), el("td", {}, c.status), el("td", {}, c.reason), el("td", { class: "message" }, c.message),
    el("td", {}, localTime(c.lastTransitionTime)))));
  const select = $("chart-metric");
  const keys = Object.keys(run.metrics);
  if (select.dataset.keys !== keys.join(",")) {
    select.dataset.keys = keys.join(",");
    select.replaceChildren(...keys.map((k) => el("option", { value: k }, k)));
  }
  state.chartMetric = keys.includes(state.chartMetric) ? state.chartMetric : run.chartMetric;
  select.value = state.chartMetric || "";
  if (state.chartMetric) {
    const history = await call(nsPath(`/runs/${encodeURIComponent(state.run)}/history?metric=${encodeURIComponent(state.chartMetric)}`));
    renderChart(history.metric, history.points);
  } else {
    renderChart("", []);
  }
  show("run-page", true);
}

async function runAgain() {
  $("run-result").textContent = "";
  try {
    const created = await call(nsPath(`/runs/${encodeURIComponent(state.run)}/rerun`),
      { method: "POST", body: { parameters: editedParams() } });
    $("run-result").textContent = `created ${created.name}`;
    location.hash = `#/run/${encodeURIComponent(created.name)}`;
  } catch (err) {
    $("run-result").textContent = err.message;
  }
}

// --- routing and polling ---------------------------------------------------------------------------------

async function refresh() {
  if (!state.csrf || !state.namespace) return;
  try {
    if (state.run) await refreshRun(); else await refreshOverview();
    $("error").textContent = "";
  } catch (err) {
    if (err.status !== 401) $("error").textContent = err.message;
  }
}

// A link only to an http(s) page: the URL comes from a run's status, which its author can write.
function mlflowLink(url) {
  return url && /^https?:\/\//i.test(url)
    ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, "MLflow run") : "";
}

function route() {
  const match = location.hash.match(/^#\/run\/(.+)$/);
  state.run = match ? decodeURIComponent(match[1]) : null;
  show("overview", false);
  show("run-page", false);
  clearTimeout(state.timer);
  poll();
}

// The next refresh starts once this one has ended: a slow API server never gets requests piling up.
async function poll() {
  const generation = state.generation = (state.generation || 0) + 1;
  await refresh();
  if (generation === state.generation) state.timer = setTimeout(poll, POLL_MS);
}

async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("power-button").addEventListener("click", switchPower);
  $("run-cancel").addEventListener("click", () => cancelRun(state.run, $("run-cancel")));
  $("run-again").addEventListener("click", runAgain);
  $("chart-metric").addEventListener("change", (e) => { state.chartMetric = e.target.value; refresh(); });
  $("namespace").addEventListener("change", (e) => { state.namespace = e.target.value; route(); });
  window.addEventListener("hashchange", () => { if (state.csrf) route(); });
  await resume();
}

document.addEventListener("DOMContentLoaded", start);
