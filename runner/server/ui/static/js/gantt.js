// A Gantt timeline of an execution's task runs: one row per task run, each attempt a bar
// (hatched while it waited for a slot, coloured by its state while it ran), so queueing
// and the gaps before retries show as what they are. Bars have a minimum width: a run of
// 5 ms is still a button to click. A task with a matrix gets a group row (its runs' span)
// that opens to show each run; big groups start closed, so 1,000 runs stay one screen.
//
// Hand-written rather than a timeline library: rows of absolutely placed buttons in
// percent of the execution's span are about 150 lines; the libraries (vis-timeline and
// the like) are hundreds of kilobytes and draw one DOM item per bar all the same.

import { duration, esc, localText, utcText } from "./core.js";

const OPEN_UP_TO = 12;
const opened = new Map(); // task id -> open?, kept across renders of one page

const STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];

// runs: the execution's task runs (every attempt). onSelect(nodeId, runId).
export function renderGantt(container, runs, { selected = null, onSelect = null, now = new Date() } = {}) {
  if (!runs.length) {
    container.innerHTML = '<p class="muted">No task has run yet.</p>';
    return;
  }
  const time = (iso) => (iso ? new Date(iso).getTime() : null);
  const nowMs = now.getTime();
  let t0 = Infinity, t1 = -Infinity;
  const nodes = new Map(); // node id -> attempts, in attempt order
  for (const run of runs) {
    const start = time(run.created_at);
    const end = time(run.ended_at) ?? (isOpen(run) ? nowMs : time(run.started_at) ?? start);
    t0 = Math.min(t0, start);
    t1 = Math.max(t1, end);
    if (!nodes.has(run.task_id)) nodes.set(run.task_id, []);
    nodes.get(run.task_id).push(run);
  }
  const span = Math.max(t1 - t0, 1);
  const pct = (ms) => Math.min(((ms - t0) / span) * 100, 99.4).toFixed(3);
  const width = (a, b) => Math.max(((b - a) / span) * 100, 0).toFixed(3);

  // Rows grouped by task, in the order tasks first appeared.
  const groups = new Map();
  for (const [nodeId, attempts] of nodes) {
    attempts.sort((a, b) => a.attempt - b.attempt);
    const task = nodeId.split("[", 1)[0];
    if (!groups.has(task)) groups.set(task, []);
    groups.get(task).push([nodeId, attempts]);
  }

  const rows = [];
  for (const [task, members] of groups) {
    const matrix = members.length > 1 || members[0][0] !== task;
    if (!matrix) {
      rows.push(row(members[0][0], members[0][1], 0));
      continue;
    }
    const open = opened.has(task) ? opened.get(task) : members.length <= OPEN_UP_TO;
    const starts = members.map(([, a]) => time(a[0].created_at));
    const ends = members.map(([, a]) => a.reduce((m, r) => Math.max(m, time(r.ended_at) ?? (isOpen(r) ? nowMs : time(r.created_at))), 0));
    const lo = Math.min(...starts), hi = Math.max(...ends);
    const counts = {};
    for (const [, a] of members) { const s = a[a.length - 1].state; counts[s] = (counts[s] || 0) + 1; }
    const summary = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ");
    const worst = ["RUNNING", "PAUSED", "FAILED", "KILLED", "CREATED", "RETRYING", "WARNING", "SUCCESS", "SKIPPED"].find((s) => counts[s]);
    rows.push(`<div class="g-row g-group${selected === task ? " selected" : ""}" role="row">`
      + `<div class="g-label" role="rowheader"><button type="button" class="g-toggle" data-group="${esc(task)}" aria-expanded="${open}">`
      + `<span aria-hidden="true">${open ? "▾" : "▸"}</span> ${esc(task)} <span class="muted">(${members.length} runs)</span></button></div>`
      + `<div class="g-track" role="cell"><button type="button" class="g-bar g-span state-${esc(worst)}" data-node="${esc(task)}" style="left:${pct(lo)}%;width:${width(lo, hi)}%" `
      + `title="${esc(`${task}: ${members.length} runs, ${summary}; ${duration((hi - lo) / 1000)}`)}" aria-label="${esc(`${task}: ${members.length} runs, ${summary}`)}"></button></div></div>`);
    if (open) for (const [nodeId, attempts] of members) rows.push(row(nodeId, attempts, 1));
  }

  function row(nodeId, attempts, depth) {
    const bars = [];
    let previousEnd = null;
    for (const run of attempts) {
      const created = time(run.created_at), started = time(run.started_at);
      const end = time(run.ended_at) ?? (isOpen(run) ? nowMs : started ?? created);
      if (previousEnd !== null && created > previousEnd) {
        bars.push(`<span class="g-gap" style="left:${pct(previousEnd)}%;width:${width(previousEnd, created)}%" title="${esc(`waited ${duration((created - previousEnd) / 1000)} before attempt ${run.attempt}`)}"></span>`);
      }
      const queuedEnd = started ?? (run.state === "CREATED" ? end : created);
      if (queuedEnd > created) {
        bars.push(`<span class="g-queued" style="left:${pct(created)}%;width:${width(created, queuedEnd)}%" title="${esc(`attempt ${run.attempt} waited ${duration((queuedEnd - created) / 1000)} for a slot`)}"></span>`);
      }
      const from = started ?? created;
      const ran = started ? duration((end - started) / 1000) : "did not run";
      const label = `${nodeId}, attempt ${run.attempt}: ${run.state}, ${ran}${run.exit_code !== null && run.exit_code !== undefined ? `, exit code ${run.exit_code}` : ""}`;
      const title = `${label}\nstarted ${started ? `${localText(run.started_at)} (${utcText(new Date(started))})` : "—"}`;
      bars.push(`<button type="button" class="g-bar state-${esc(run.state)}${run.id === selected ? " selected" : ""}" data-node="${esc(nodeId)}" data-run="${run.id}" `
        + `style="left:${pct(from)}%;width:${width(from, end)}%" title="${esc(title)}" aria-label="${esc(label)}"></button>`);
      previousEnd = end;
    }
    const last = attempts[attempts.length - 1];
    const tries = attempts.length > 1 ? ` <span class="muted">×${attempts.length}</span>` : "";
    return `<div class="g-row${selected === nodeId ? " selected" : ""}${depth ? " g-child" : ""}" role="row">`
      + `<div class="g-label" role="rowheader"><button type="button" class="link" data-node="${esc(nodeId)}" title="${esc(nodeId)}">${esc(nodeId)}</button>${tries}</div>`
      + `<div class="g-track" role="cell" data-state="${esc(last.state)}">${bars.join("")}</div></div>`;
  }

  // The axis: about six ticks at a round step, relative to the first run.
  const seconds = span / 1000;
  const step = STEPS.find((s) => seconds / s <= 6) ?? 86400;
  const ticks = [];
  for (let s = 0; s <= seconds + 1e-9; s += step) {
    const at = t0 + s * 1000;
    ticks.push(`<span class="g-tick" style="left:${pct(at)}%" title="${esc(utcText(new Date(at)))}">+${esc(tickText(s))}</span>`);
  }
  const axis = `<div class="g-row g-axis" role="row"><div class="g-label" role="columnheader">${esc(localText(new Date(t0).toISOString()))}</div><div class="g-track" role="columnheader">${ticks.join("")}</div></div>`;

  const focused = document.activeElement && container.contains(document.activeElement)
    ? focusKey(document.activeElement) : null;
  container.innerHTML = `<div class="gantt" role="table" aria-label="Timeline of task runs">${axis}<div class="g-body">${rows.join("")}</div></div>`;
  if (focused) container.querySelector(focused)?.focus();

  container.onclick = (event) => {
    const toggle = event.target.closest("[data-group]");
    if (toggle) {
      const task = toggle.dataset.group;
      opened.set(task, toggle.getAttribute("aria-expanded") !== "true");
      renderGantt(container, runs, { selected, onSelect, now });
      container.querySelector(`[data-group="${CSS.escape(task)}"]`)?.focus();
      return;
    }
    const target = event.target.closest("[data-node]");
    if (target && onSelect) onSelect(target.dataset.node, target.dataset.run ? Number(target.dataset.run) : null);
  };
}

function tickText(seconds) {
  if (seconds === 0) return "0";
  if (seconds < 60) return `${+seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min${seconds % 60 ? ` ${Math.round(seconds % 60)} s` : ""}`;
  return `${Math.floor(seconds / 3600)} h${seconds % 3600 ? ` ${Math.round((seconds % 3600) / 60)} min` : ""}`;
}

function isOpen(run) {
  return run.state === "RUNNING" || run.state === "CREATED" || run.state === "PAUSED";
}

function focusKey(el) {
  if (el.dataset.group) return `[data-group="${CSS.escape(el.dataset.group)}"]`;
  if (el.dataset.run) return `[data-run="${CSS.escape(el.dataset.run)}"]`;
  if (el.dataset.node) return `.g-label [data-node="${CSS.escape(el.dataset.node)}"]`;
  return null;
}
