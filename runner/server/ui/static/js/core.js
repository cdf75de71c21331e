// What every page shares: the API client (the session cookie plus the page's CSRF
// token), a small element builder, times in the browser's zone with UTC on hover,
// state badges, a confirmation dialog and a status line.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";

export const API = meta("runner-api") || "/api/v1";
export const UI = meta("runner-ui") || "/ui";
const CSRF = meta("runner-csrf");

export class ApiError extends Error {
  constructor(status, error, details) {
    super(error);
    this.status = status;
    this.details = details || [];
  }
}

// One call of the HTTP API. `body`: a plain object (sent as JSON) or a FormData
// (multipart). Errors come back as ApiError with the API's own message and details.
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(API + path, {
    method, headers, body: payload, signal, credentials: "same-origin",
  });
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "the session has ended: log in again", []);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || `${response.status} ${response.statusText}`, data?.details);
  }
  return { status: response.status, data };
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(`${UI}/login?next=${encodeURIComponent(here)}`);
}

// h("a", {href: "/x", class: "y"}, "text", child) -> an element. Attributes starting
// with "on" are listeners; null/false attributes are left out; strings become text.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// -- times ----------------------------------------------------------------------------------

const localFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const localTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
export const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

export function utcText(date) {
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

export function localText(iso, { timeOnly = false } = {}) {
  const date = new Date(iso);
  return (timeOnly ? localTime : localFormat).format(date);
}

// <time datetime="…Z" title="2024-01-31 10:00:00 UTC">31 Jan 2024, 11:00:00</time>
export function timeEl(iso, options = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  return h("time", { datetime: date.toISOString(), title: utcText(date) }, localText(iso, options));
}

export function timeHtml(iso) {
  if (!iso) return '<span class="muted">—</span>';
  const date = new Date(iso);
  return `<time datetime="${date.toISOString()}" title="${utcText(date)}">${esc(localText(iso))}</time>`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  if (m < 60) return s ? `${m} min ${s} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  return `${hours} h ${m % 60} min`;
}

export function secondsBetween(start, end) {
  if (!start) return null;
  const stop = end ? new Date(end) : new Date();
  return Math.max(0, (stop - new Date(start)) / 1000);
}

// -- states -----------------------------------------------------------------------------------

export const FINAL = new Set(["SUCCESS", "FAILED", "KILLED", "WARNING", "CANCELLED", "SKIPPED"]);
const SYMBOL = {
  SUCCESS: "✓", FAILED: "✗", KILLED: "■", WARNING: "!", CANCELLED: "⊘", SKIPPED: "↷",
  RUNNING: "▶", CREATED: "○", QUEUED: "…", PAUSED: "‖", RETRYING: "↻",
};
export const STATES = ["CREATED", "QUEUED", "RUNNING", "PAUSED", "SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"];

export function stateEl(state) {
  return h("span", { class: `state state-${state}` }, h("span", { "aria-hidden": "true" }, SYMBOL[state] || "•"), ` ${state}`);
}

export function stateHtml(state) {
  return `<span class="state state-${esc(state)}"><span aria-hidden="true">${SYMBOL[state] || "•"}</span> ${esc(state)}</span>`;
}

export function symbolOf(state) {
  return SYMBOL[state] || "•";
}

// -- ids and paths ----------------------------------------------------------------------------

export const shortId = (id) => String(id).slice(0, 8);
export const enc = encodeURIComponent;
export const flowPath = (namespace, flowId) => `${enc(namespace)}/${enc(flowId)}`;
export const executionUrl = (id) => `${UI}/executions/${enc(id)}`;
export const flowUrl = (namespace, flowId) => `${UI}/flows/${flowPath(namespace, flowId)}`;

// -- feedback ----------------------------------------------------------------------------------

export function status(el, text, kind = "") {
  el.textContent = text;
  el.className = `status ${kind}`.trim();
  el.hidden = !text;
}

let toastTimer = null;
export function toast(text, kind = "") {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = `toast show ${kind}`.trim();
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, 6000);
}

// A yes/no question in the page's <dialog>: resolves true on Confirm.
export function confirmAction(text, confirmLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// Calls `fn` every `ms` while the page is visible (and once at once); stop() ends it.
export function every(ms, fn) {
  let timer = null, stopped = false, running = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden && !running) {
      running = true;
      try { await fn(); } catch (error) { console.error(error); } finally { running = false; }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  const onVisible = () => { if (!document.hidden && !stopped) { clearTimeout(timer); tick(); } };
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return { stop() { stopped = true; clearTimeout(timer); document.removeEventListener("visibilitychange", onVisible); } };
}

export function mainData() {
  return document.getElementById("main").dataset;
}

// The base task id of a task run's node id: `process[year=2019]` -> `process`.
export const taskOf = (nodeId) => String(nodeId).split("[", 1)[0];

export function fmtValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}
