// /ui/executions: GET /executions with the filters of the page's URL (namespace, flow,
// states, labels, time range: Back and a shared link keep them), one page at a time by
// the API's cursor (`after`), states refreshed live; bulk kill and restart
// (POST /executions/{id}/kill|restart for each one selected).

import {
  ApiError, FINAL, STATES, UI, api, clear, confirmAction, duration, enc, every, executionUrl, flowUrl, h, secondsBetween,
  shortId, stateEl, status, timeEl, toast,
} from "../core.js";

const PAGE = 50;
const params = new URLSearchParams(location.search);
const statusLine = document.getElementById("executions-status");
const list = document.getElementById("executions");
const selected = new Set();
const rows = new Map(); // execution id -> {row, data}
let current = [];

// -- the filters, from and to the URL ---------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");
function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function buildFilters() {
  const form = document.getElementById("filters");
  const field = (id, label, control) => h("div", { class: "field" }, h("label", { for: id }, label), control);
  const states = new Set(params.getAll("state"));
  const stateBoxes = h("fieldset", { class: "states" }, h("legend", {}, "States"),
    STATES.map((s) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "state", value: s, checked: states.has(s) }), ` ${s}`)));
  clear(form,
    field("f-namespace", "Namespace", h("input", { id: "f-namespace", name: "namespace", value: params.get("namespace") || "", autocomplete: "off" })),
    field("f-flow", "Flow", h("input", { id: "f-flow", name: "flow_id", value: params.get("flow_id") || "", autocomplete: "off" })),
    field("f-label", "Labels (key:value, space-separated)", h("input", { id: "f-label", name: "label", value: params.getAll("label").join(" "), autocomplete: "off", placeholder: "trigger:nightly" })),
    field("f-after", "Created after", h("input", { id: "f-after", name: "created_after", type: "datetime-local", value: params.get("created_after") ? toLocalInput(params.get("created_after")) : "" })),
    field("f-before", "Created before", h("input", { id: "f-before", name: "created_before", type: "datetime-local", value: params.get("created_before") ? toLocalInput(params.get("created_before")) : "" })),
    stateBoxes,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Filter"), h("a", { class: "button", href: `${UI}/executions` }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    const data = new FormData(form);
    for (const key of ["namespace", "flow_id"]) if (data.get(key)?.trim()) next.set(key, data.get(key).trim());
    for (const s of data.getAll("state")) next.append("state", s);
    for (const label of String(data.get("label") || "").split(/\s+/).filter(Boolean)) next.append("label", label);
    for (const key of ["created_after", "created_before"]) {
      const value = data.get(key);
      if (value) next.set(key, new Date(value).toISOString()); // the URL keeps UTC: a shared link means the same instant
    }
    location.assign(`${UI}/executions${next.toString() ? `?${next}` : ""}`);
  });
}

function apiQuery() {
  const q = new URLSearchParams();
  for (const key of ["namespace", "flow_id", "created_after", "created_before", "after"]) if (params.get(key)) q.set(key, params.get(key));
  for (const key of ["state", "label"]) for (const v of params.getAll(key)) q.append(key, v);
  q.set("limit", params.get("limit") || String(PAGE));
  return q;
}

// -- the table --------------------------------------------------------------------------

let tbody = null;
let selectAll = null;

function buildTable() {
  selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select every execution of this page" });
  selectAll.addEventListener("change", () => {
    for (const e of current) selectAll.checked ? selected.add(e.id) : selected.delete(e.id);
    for (const { row } of rows.values()) row.querySelector("input[type=checkbox]").checked = selectAll.checked;
    updateBulk();
  });
  tbody = h("tbody");
  clear(list, h("table", { class: "grid executions" },
    h("caption", { class: "visually-hidden" }, "Executions, newest first"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, selectAll),
      ["Execution", "Flow", "State", "Tasks", "Created", "Duration", "Labels"].map((t) => h("th", { scope: "col" }, t)))),
    tbody));
}

function cells(e) {
  const labels = Object.entries(e.labels || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}: ${v}`));
  const tasks = Object.entries(e.task_states || {}).map(([s, n]) => h("span", { class: `count state-${s}`, title: s }, `${n} ${s.toLowerCase()}`));
  const seconds = e.duration_s ?? (FINAL.has(e.state) ? null : secondsBetween(e.started_at, null));
  return [
    h("td", {}, h("a", { href: executionUrl(e.id) }, h("code", {}, shortId(e.id)))),
    h("td", {}, h("a", { href: flowUrl(e.namespace, e.flow_id) }, `${e.namespace}.${e.flow_id}`)),
    h("td", { class: "state-cell" }, stateEl(e.state)),
    h("td", { class: "small" }, tasks),
    h("td", {}, timeEl(e.created_at)),
    h("td", {}, duration(seconds)),
    h("td", { class: "small" }, labels),
  ];
}

function makeRow(e) {
  const box = h("input", { type: "checkbox", "aria-label": `Select execution ${shortId(e.id)}`, checked: selected.has(e.id) });
  box.addEventListener("change", () => { box.checked ? selected.add(e.id) : selected.delete(e.id); updateBulk(); });
  return h("tr", { dataset: { id: e.id, state: e.state } }, h("td", {}, box), cells(e));
}

// Rows are updated in place (a checkbox keeps its focus and its tick); new ones are added
// in order, gone ones removed.
function render(executions) {
  current = executions;
  const keep = new Set(executions.map((e) => e.id));
  for (const [id, { row }] of rows) if (!keep.has(id)) { row.remove(); rows.delete(id); }
  let before = tbody.firstChild;
  for (const e of executions) {
    let entry = rows.get(e.id);
    const signature = JSON.stringify([e.state, e.task_states, e.duration_s, e.labels, FINAL.has(e.state) ? 0 : Math.floor(Date.now() / 1000)]);
    if (!entry) {
      entry = { row: makeRow(e), signature };
      rows.set(e.id, entry);
    } else if (entry.signature !== signature) {
      const [, ...old] = entry.row.children;
      const fresh = cells(e);
      old.forEach((cell, i) => cell.replaceWith(fresh[i]));
      entry.row.dataset.state = e.state;
      entry.signature = signature;
    }
    if (entry.row !== before) tbody.insertBefore(entry.row, before);
    before = entry.row.nextSibling;
  }
  if (!executions.length) status(statusLine, params.get("after") ? "No more executions." : "No execution matches these filters.");
}

// -- pages --------------------------------------------------------------------------------

function renderPager(next) {
  const pager = document.getElementById("pager");
  const page = Number(params.get("page") || "1");
  const first = new URLSearchParams(params);
  first.delete("after");
  first.delete("page");
  const following = new URLSearchParams(params);
  if (next) { following.set("after", next); following.set("page", String(page + 1)); }
  clear(pager,
    page > 1 ? h("a", { class: "button", href: `${UI}/executions${first.toString() ? `?${first}` : ""}` }, "« Newest") : null,
    h("span", { class: "muted" }, ` Page ${page} `),
    next ? h("a", { class: "button", href: `${UI}/executions?${following}`, rel: "next" }, "Next page »") : null);
}

// -- bulk actions -------------------------------------------------------------------------

const killButton = h("button", { type: "button", class: "danger", disabled: true }, "Kill selected");
const restartButton = h("button", { type: "button", disabled: true }, "Restart selected");
const selectedCount = h("span", { class: "muted", "aria-live": "polite" });

function updateBulk() {
  const n = selected.size;
  killButton.disabled = restartButton.disabled = n === 0;
  selectedCount.textContent = n ? `${n} selected` : "";
  if (selectAll) selectAll.checked = current.length > 0 && current.every((e) => selected.has(e.id));
}

async function bulk(action, verb) {
  const ids = [...selected];
  if (!ids.length) return;
  if (!(await confirmAction(`${verb} ${ids.length} execution${ids.length === 1 ? "" : "s"}?`, verb))) return;
  const failures = [];
  let done = 0;
  const queue = [...ids];
  const worker = async () => {
    for (let id = queue.shift(); id; id = queue.shift()) {
      try {
        await api(`/executions/${enc(id)}/${action}`, { method: "POST", body: action === "restart" ? {} : undefined });
        done += 1;
        selected.delete(id);
      } catch (error) {
        failures.push(`${shortId(id)}: ${error.message}`);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  toast(`${verb}: ${done} done${failures.length ? `; ${failures.length} refused — ${failures.join("; ")}` : ""}`, failures.length ? "error" : "");
  for (const { row } of rows.values()) row.querySelector("input[type=checkbox]").checked = selected.has(row.dataset.id);
  updateBulk();
  await refresh();
}

killButton.addEventListener("click", () => bulk("kill", "Kill"));
restartButton.addEventListener("click", () => bulk("restart", "Restart"));

// -- loading ------------------------------------------------------------------------------

async function refresh() {
  try {
    const { data } = await api(`/executions?${apiQuery()}`);
    if (!tbody) buildTable();
    render(data.executions);
    renderPager(data.next);
    if (data.executions.length) status(statusLine, `${data.executions.length} execution${data.executions.length === 1 ? "" : "s"} on this page${data.next ? "" : " (the last page)"}`);
    updateBulk();
  } catch (error) {
    if (error instanceof ApiError) status(statusLine, error.message, "error");
    else throw error;
  }
}

buildFilters();
clear(document.getElementById("bulk"), killButton, restartButton, selectedCount);
every(3000, refresh);
