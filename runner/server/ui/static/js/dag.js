// The DAG of a flow's tasks as SVG, laid out by dagre (vendor/dagre.esm.js). One node per
// task: a task with a matrix is one node however many runs it has (their states counted
// in it), which keeps a 1,000-run execution a graph of a few nodes. `errors:` and
// `finally:` tasks are drawn in their own boxes.

import dagre from "../vendor/dagre.esm.js";
import { esc, symbolOf } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_H = 40;
const NODE_H_STATE = 58;
const PAD = 12;

let measurer = null;
function textWidth(text, font) {
  measurer ??= document.createElement("canvas").getContext("2d");
  measurer.font = font;
  return measurer.measureText(text).width;
}

// tasks: [{id, type, image, depends_on, matrix, group}] (the API's `graph`).
// info(task) -> {state, lines: [text], counts: {STATE: n}, label} for each task.
// onSelect(taskId) when a node is clicked or activated with the keyboard.
export function renderDag(container, tasks, { info = () => ({}), selected = null, onSelect = null } = {}) {
  const g = new dagre.graphlib.Graph({ compound: true });
  g.setGraph({ rankdir: "LR", nodesep: 16, ranksep: 40, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  const known = new Set(tasks.map((t) => t.id));
  const details = new Map();
  const withState = tasks.some((t) => info(t).state !== undefined);
  for (const group of ["errors", "finally"]) {
    if (tasks.some((t) => t.group === group)) g.setNode(`group:${group}`, { label: group, cluster: true });
  }
  for (const task of tasks) {
    const d = info(task);
    const lines = d.lines ?? [subtitle(task)];
    details.set(task.id, d);
    const width = Math.max(
      textWidth(task.id, "600 13px system-ui, sans-serif"),
      ...lines.map((line) => textWidth(line, "12px system-ui, sans-serif")),
      80,
    ) + 2 * PAD + (d.state ? 18 : 0);
    g.setNode(task.id, { width: Math.min(width, 320), height: withState ? NODE_H_STATE : NODE_H, task, lines });
    if (task.group !== "tasks") g.setParent(task.id, `group:${task.group}`);
  }
  for (const task of tasks) {
    for (const dep of task.depends_on) if (known.has(dep)) g.setEdge(dep, task.id);
  }
  dagre.layout(g);

  const { width, height } = g.graph();
  const parts = [];
  parts.push(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>`);
  for (const id of g.nodes()) {
    const n = g.node(id);
    if (!n.cluster) continue;
    parts.push(`<g class="cluster"><rect x="${n.x - n.width / 2}" y="${n.y - n.height / 2}" width="${n.width}" height="${n.height}" rx="8"/><text x="${n.x - n.width / 2 + 8}" y="${n.y - n.height / 2 + 13}">${esc(n.label)}</text></g>`);
  }
  for (const e of g.edges()) {
    const points = g.edge(e).points;
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    parts.push(`<path class="edge" d="${d}" marker-end="url(#arrow)"/>`);
  }
  for (const id of g.nodes()) {
    const n = g.node(id);
    if (n.cluster) continue;
    const d = details.get(id);
    const x = n.x - n.width / 2, y = n.y - n.height / 2;
    const state = d.state || "PENDING";
    const label = d.label || `${id}: ${state.toLowerCase()}`;
    const cls = `node${d.state !== undefined ? ` state-${state}` : ""}${id === selected ? " selected" : ""}`;
    parts.push(`<g class="${cls}" data-task="${esc(id)}" transform="translate(${x.toFixed(1)},${y.toFixed(1)})"${onSelect ? ` tabindex="0" role="button" aria-label="${esc(label)}"${id === selected ? ' aria-pressed="true"' : ' aria-pressed="false"'}` : ""}>`);
    parts.push(`<title>${esc(label)}</title>`);
    parts.push(`<rect width="${n.width}" height="${n.height}" rx="6"/>`);
    let textX = PAD;
    if (d.state) {
      parts.push(`<text class="symbol" x="${PAD}" y="20" aria-hidden="true">${symbolOf(d.state)}</text>`);
      textX += 18;
    }
    parts.push(`<text class="title" x="${textX}" y="20">${esc(clip(id, 36))}</text>`);
    n.lines.forEach((line, i) => {
      parts.push(`<text class="sub" x="${textX}" y="${36 + i * 15}">${esc(clip(line, 44))}</text>`);
    });
    if (d.counts && d.total > 1) parts.push(bar(d.counts, d.total, n.width, n.height));
    parts.push("</g>");
  }
  container.innerHTML = `<svg xmlns="${SVG}" class="dag-svg" width="${Math.ceil(width)}" height="${Math.ceil(height)}" viewBox="0 0 ${Math.ceil(width)} ${Math.ceil(height)}" role="group" aria-label="Task graph">${parts.join("")}</svg>`;
  if (onSelect) {
    const svg = container.firstElementChild;
    const pick = (event) => {
      const node = event.target.closest("g.node");
      if (node) onSelect(node.dataset.task);
    };
    svg.addEventListener("click", pick);
    svg.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); pick(event); }
    });
  }
}

function subtitle(task) {
  if (task.type === "pause") return "pause: waits for a resume";
  const runs = task.matrix ? Object.values(task.matrix).reduce((a, v) => a * v.length, 1) : 0;
  const what = task.image || task.type;
  return runs ? `${what} · matrix × ${runs}` : what || "";
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

const ORDER = ["SUCCESS", "WARNING", "RUNNING", "PAUSED", "RETRYING", "CREATED", "FAILED", "KILLED", "SKIPPED"];

function bar(counts, total, width, height) {
  let x = PAD;
  const span = width - 2 * PAD;
  const out = [];
  for (const state of ORDER) {
    const n = counts[state] || 0;
    if (!n) continue;
    const w = (span * n) / total;
    out.push(`<rect class="bar state-${state}" x="${x.toFixed(1)}" y="${height - 8}" width="${w.toFixed(1)}" height="4"/>`);
    x += w;
  }
  return out.join("");
}

// What an execution's node shows, from the latest attempt of each of its runs.
export function aggregate(runs) {
  const counts = {};
  for (const run of runs) counts[run.state] = (counts[run.state] || 0) + 1;
  const precedence = ["RUNNING", "PAUSED", "RETRYING", "FAILED", "KILLED", "CREATED", "WARNING", "SUCCESS", "SKIPPED"];
  let state = precedence.find((s) => counts[s]);
  if (counts.SUCCESS && counts.SKIPPED && !precedence.slice(0, 7).some((s) => counts[s])) state = "SUCCESS";
  return { state, counts, total: runs.length };
}
