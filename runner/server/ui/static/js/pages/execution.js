// /ui/executions/{id}: GET /executions/{id} (polled while it runs), GET
// /executions/{id}/flow (the DAG and input types of the revision it ran), the log stream
// (GET /executions/{id}/logs/stream), GET /executions/{id}/artifacts; buttons POST
// /executions/{id}/kill, /restart (optionally {"from": TASK}) and /resume.

import {
  ApiError, FINAL, api, clear, confirmAction, duration, enc, every, executionUrl, flowUrl, fmtValue, h, mainData,
  secondsBetween, shortId, stateEl, status, taskOf, timeEl, toast,
} from "../core.js";
import { aggregate, renderDag } from "../dag.js";
import { inputForm } from "../form.js";
import { renderGantt } from "../gantt.js";
import { LogView } from "../logs.js";

const { executionId } = mainData();
const statusLine = document.getElementById("execution-status");
const url = new URL(location.href);
let selected = url.searchParams.get("task") || null; // a task id, or a run's node id
let selectedRun = null;
let execution = null;
let flow = null;
let poller = null;
let artifactsShown = null;

const logs = new LogView(document.getElementById("logs"), executionId, {
  onState: () => refresh(),
  onEnd: () => refresh(),
});
if (selected) logs.setTask(selected);

// -- what the execution's task runs say ---------------------------------------------------

// node id -> its attempts (in order), and the latest attempt of each node.
function byNode(runs) {
  const nodes = new Map();
  for (const run of runs) {
    if (!nodes.has(run.task_id)) nodes.set(run.task_id, []);
    nodes.get(run.task_id).push(run);
  }
  for (const attempts of nodes.values()) attempts.sort((a, b) => a.attempt - b.attempt);
  return nodes;
}

function latestOf(nodes) {
  return [...nodes.values()].map((attempts) => attempts[attempts.length - 1]);
}

const secretInputs = () => new Set((flow?.inputs || []).filter((i) => i.type === "secret").map((i) => i.id));

// -- the header -------------------------------------------------------------------------------

function renderHeader() {
  const e = execution;
  document.title = `${e.namespace}.${e.flow_id} ${shortId(e.id)} · runner`;
  clear(document.getElementById("execution-state"), stateEl(e.state));
  clear(document.getElementById("crumb-flow"), h("a", { href: flowUrl(e.namespace, e.flow_id) }, `${e.namespace}.${e.flow_id}`));
  const secrets = secretInputs();
  const inputs = Object.entries(e.inputs || {});
  const labels = Object.entries(e.labels || {});
  const seconds = e.duration_s ?? (e.started_at && !FINAL.has(e.state) ? secondsBetween(e.started_at, null) : null);
  clear(document.getElementById("execution-header"), h("dl", { class: "facts" },
    h("dt", {}, "Flow"), h("dd", {}, h("a", { href: flowUrl(e.namespace, e.flow_id) }, `${e.namespace}.${e.flow_id}`), " ", h("span", { class: "muted small" }, `revision ${e.revision}`)),
    h("dt", {}, "Id"), h("dd", {}, h("code", {}, e.id)),
    h("dt", {}, "State"), h("dd", { id: "state-text" }, stateEl(e.state)),
    h("dt", {}, "Created"), h("dd", {}, timeEl(e.created_at)),
    h("dt", {}, "Started"), h("dd", {}, timeEl(e.started_at)),
    h("dt", {}, "Ended"), h("dd", {}, timeEl(e.ended_at)),
    h("dt", {}, "Duration"), h("dd", {}, duration(seconds)),
    e.labels?.trigger ? [h("dt", {}, "Trigger"), h("dd", {}, e.labels.trigger, e.labels.scheduled_at ? [" at ", timeEl(e.labels.scheduled_at)] : null)] : null,
    labels.length ? [h("dt", {}, "Labels"), h("dd", {}, labels.map(([k, v]) => h("span", { class: "tag" }, `${k}: ${v}`)))] : null,
    h("dt", {}, "Inputs"), h("dd", {}, inputs.length
      ? h("table", { class: "kv" }, h("tbody", {}, inputs.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k),
        h("td", {}, secrets.has(k) && v !== null ? h("span", { class: "secret", title: "a secret: not shown" }, "••••••") : h("code", {}, fmtValue(v)))))))
      : h("span", { class: "muted" }, "none")),
    e.error ? [h("dt", {}, "Error"), h("dd", { class: "error-text" }, e.error)] : null));
}

// -- actions ----------------------------------------------------------------------------------

async function act(path, body, done) {
  try {
    const { data } = await api(`/executions/${enc(executionId)}/${path}`, { method: "POST", body });
    toast(done(data));
    if (data.id && data.id !== executionId) { location.assign(executionUrl(data.id)); return; }
    await refresh();
    logs.reopen();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(error.message, "error");
  }
}

function renderActions() {
  const e = execution;
  const buttons = [];
  if (!FINAL.has(e.state)) {
    buttons.push(h("button", { type: "button", class: "danger", onclick: async () => {
      if (await confirmAction(`Kill execution ${shortId(e.id)}? Its running containers are stopped.`, "Kill")) {
        await act("kill", undefined, (d) => (d.state === "KILLED" ? "Killed." : "Kill requested: it stops at its runner's next heartbeat."));
      }
    } }, "Kill"));
  }
  if (e.state === "FAILED" || e.state === "KILLED") {
    buttons.push(h("button", { type: "button", class: "primary", onclick: () => act("restart", {}, () => "Restarted from where it failed.") }, "Restart"));
  }
  if (e.state === "PAUSED") buttons.push(h("a", { class: "button primary", href: "#resume" }, "Resume…"));
  clear(document.getElementById("execution-actions"), buttons);
  renderResume();
}

function renderResume() {
  const el = document.getElementById("resume");
  if (execution.state !== "PAUSED") { clear(el); el.dataset.shown = ""; return; }
  const paused = latestOf(byNode(execution.task_runs)).filter((r) => r.state === "PAUSED");
  const key = paused.map((r) => r.id).join(",");
  if (el.dataset.shown === key) return;
  el.dataset.shown = key;
  clear(el, paused.map((run) => {
    const task = (flow?.graph || []).find((t) => t.id === taskOf(run.task_id));
    const generated = inputForm(task?.inputs || [], { idPrefix: `resume-${run.id}`, allowFiles: false });
    const error = h("div", { class: "form-error", role: "alert", hidden: true });
    const form = h("form", { class: "card resume", novalidate: true },
      h("h2", {}, `Paused at `, h("code", {}, run.task_id)),
      h("p", {}, "This execution waits to be resumed", run.started_at ? [" since ", timeEl(run.started_at)] : null, "."),
      error, generated.element,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Resume")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      try {
        await api(`/executions/${enc(executionId)}/resume`, { method: "POST", body: { inputs: generated.object(), task: run.task_id } });
        toast(`Resumed ${run.task_id}.`);
        el.dataset.shown = "";
        await refresh();
        logs.reopen();
      } catch (failure) {
        if (!(failure instanceof ApiError)) throw failure;
        const rest = generated.showErrors(failure.details);
        clear(error, h("p", {}, failure.message), rest.map((t) => h("p", {}, t)));
        error.hidden = false;
      }
    });
    return form;
  }));
  el.id = "resume";
}

// -- graph, timeline, task panel ------------------------------------------------------------

function select(nodeOrTask, runId = null) {
  selected = selected === nodeOrTask && runId === null ? null : nodeOrTask;
  selectedRun = runId;
  const next = new URL(location.href);
  if (selected) next.searchParams.set("task", selected); else next.searchParams.delete("task");
  history.replaceState(null, "", next);
  logs.setTask(selected || "");
  renderTasks();
}

function renderTasks() {
  const nodes = byNode(execution.task_runs);
  const latest = latestOf(nodes);
  logs.setTasks([...nodes.keys()]);
  const tasks = flow?.graph || inferGraph(latest);
  const byTask = new Map();
  for (const run of latest) {
    const task = taskOf(run.task_id);
    if (!byTask.has(task)) byTask.set(task, []);
    byTask.get(task).push(run);
  }
  renderDag(document.getElementById("graph"), tasks, {
    selected: selected ? taskOf(selected) : null,
    onSelect: (task) => select(task),
    info: (task) => {
      const runs = byTask.get(task.id) || [];
      if (!runs.length) return { state: "", lines: ["not run"], label: `${task.id}: not run yet` };
      const { state, counts, total } = aggregate(runs);
      const summary = Object.entries(counts).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ");
      const lines = total > 1 ? [`${total} runs: ${summary}`] : [`${state}${runs[0].attempt > 1 ? ` (attempt ${runs[0].attempt})` : ""}`];
      return { state, counts, total, lines, label: `${task.id}: ${total > 1 ? `${total} runs, ${summary}` : state}` };
    },
  });
  renderGantt(document.getElementById("timeline"), execution.task_runs, {
    selected: selectedRun ?? selected,
    onSelect: (node, run) => select(node, run),
    now: new Date(),
  });
  renderTaskPanel(nodes);
}

function inferGraph(latest) {
  const ids = [...new Set(latest.map((r) => taskOf(r.task_id)))];
  return ids.map((id) => ({ id, type: "container", image: null, depends_on: [], matrix: null, group: "tasks" }));
}

function renderTaskPanel(nodes) {
  const panel = document.getElementById("task");
  const title = document.getElementById("task-title");
  if (!selected) {
    title.textContent = "Task";
    clear(panel, h("p", { class: "muted" }, "Choose a task in the graph or the timeline to see its attempts, outputs and logs."));
    return;
  }
  const members = [...nodes.entries()].filter(([node]) => node === selected || taskOf(node) === selected);
  title.textContent = `Task ${selected}`;
  const canRestart = execution.state === "FAILED" || execution.state === "KILLED";
  const restartFrom = canRestart ? h("button", { type: "button", class: "primary", onclick: () =>
    act("restart", { from: taskOf(selected) }, () => `Restarted from ${taskOf(selected)}.`) }, `Restart from ${taskOf(selected)}`) : null;
  if (!members.length) { clear(panel, h("p", { class: "muted" }, "It has not run."), restartFrom); return; }
  if (members.length > 1 || members[0][0] !== selected) {
    const latest = members.map(([, a]) => a[a.length - 1]);
    clear(panel, h("div", { class: "actions" }, restartFrom),
      h("div", { class: "runs-table" }, h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["Run", "State", "Attempts", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, latest.map((run) => h("tr", {},
          h("td", {}, h("button", { type: "button", class: "link", onclick: () => select(run.task_id) }, run.task_id)),
          h("td", {}, stateEl(run.state)),
          h("td", { class: "num" }, String(run.attempt)),
          h("td", {}, duration(run.duration_s ?? secondsBetween(run.started_at, run.ended_at)))))))));
    return;
  }
  const attempts = members[0][1];
  const last = attempts[attempts.length - 1];
  const outputs = Object.entries(last.outputs || {});
  clear(panel,
    h("p", {}, stateEl(last.state), ` attempt ${last.attempt} of ${attempts.length}`, last.exit_code !== null ? `, exit code ${last.exit_code}` : ""),
    last.error ? h("p", { class: "error-text" }, last.error) : null,
    h("div", { class: "actions" }, restartFrom,
      selected !== taskOf(selected) ? h("button", { type: "button", onclick: () => select(taskOf(selected)) }, `All runs of ${taskOf(selected)}`) : null),
    h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, ["Attempt", "State", "Queued", "Started", "Ended", "Duration", "Exit"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, attempts.map((run) => h("tr", { class: run.id === selectedRun ? "selected" : null },
        h("td", { class: "num" }, String(run.attempt)),
        h("td", {}, stateEl(run.state)),
        h("td", {}, run.started_at ? duration(secondsBetween(run.created_at, run.started_at)) : "—"),
        h("td", {}, timeEl(run.started_at)),
        h("td", {}, timeEl(run.ended_at)),
        h("td", {}, duration(run.duration_s ?? (run.started_at && !run.ended_at ? secondsBetween(run.started_at, null) : null))),
        h("td", { class: "num" }, run.exit_code ?? "—"))))),
    outputs.length ? [h("h3", {}, "Outputs"), h("table", { class: "kv" }, h("tbody", {}, outputs.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, h("code", {}, fmtValue(v)))))))] : null);
}

// -- outputs and artifacts --------------------------------------------------------------------

function renderOutputs() {
  const latest = latestOf(byNode(execution.task_runs)).filter((r) => r.outputs && Object.keys(r.outputs).length);
  const el = document.getElementById("outputs");
  if (!latest.length) { clear(el, h("p", { class: "muted" }, "No task has set outputs.")); return; }
  clear(el, h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Task", "Output", "Value"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, latest.flatMap((run) => Object.entries(run.outputs).map(([k, v]) => h("tr", {},
      h("td", {}, run.task_id), h("th", { scope: "row" }, k), h("td", {}, h("code", {}, fmtValue(v)))))))));
}

async function renderArtifacts() {
  const el = document.getElementById("artifacts");
  const { data } = await api(`/executions/${enc(executionId)}/artifacts`);
  if (!data.artifacts.length) { clear(el, h("p", { class: "muted" }, "No artifacts.")); return; }
  const size = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);
  clear(el, h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["File", "Task", "Size", "SHA-256", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, data.artifacts.map((a) => h("tr", {},
      h("td", {}, h("code", {}, a.path)), h("td", {}, a.task_id), h("td", { class: "num" }, size(a.size)),
      h("td", {}, h("code", { title: a.sha256 }, a.sha256.slice(0, 12))),
      h("td", {}, h("a", { href: a.url, download: a.path.split("/").pop() }, `Download ${a.path.split("/").pop()}`)))))));
}

// -- loading ------------------------------------------------------------------------------------

let refreshing = null;
let drawn = "";
async function refresh(loading = null) {
  refreshing ??= (async () => {
    try {
      const asked = performance.now();
      const { data } = await (loading ?? api(`/executions/${enc(executionId)}`));
      fetchMs = performance.now() - asked;
      const wasFinal = execution && FINAL.has(execution.state);
      execution = data;
      // An ended execution that did not change is not drawn again (its timeline does not
      // move any more, and a redraw would take the bar from under a pointer).
      const signature = `${data.state}|${data.task_runs.map((r) => `${r.id}:${r.state}`).join(",")}`;
      const same = FINAL.has(data.state) && signature === drawn;
      drawn = signature;
      if (!same) {
        renderHeader();
        renderActions();
        renderTasks();
        renderOutputs();
      }
      status(statusLine, "");
      // Artifacts are copied out as task runs end: read them at first, then once it ended.
      const key = FINAL.has(data.state) ? `${data.state}:${data.task_runs.length}` : "running";
      if (artifactsShown !== key) {
        artifactsShown = key;
        renderArtifacts().catch((error) => status(statusLine, error.message, "error"));
      }
      if (!FINAL.has(data.state) && wasFinal) logs.reopen();
      schedule();
    } catch (error) {
      if (error instanceof ApiError) status(statusLine, error.message, "error");
      else throw error;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// Fast while it runs (but never more than a fifth of the time on fetching: an execution
// of thousands of task runs is a big document), slow once it has ended or paused (someone
// may restart or resume it elsewhere).
let fetchMs = 0;
function schedule() {
  const running = Math.max(1500, Math.ceil((fetchMs * 5) / 500) * 500);
  const ms = FINAL.has(execution.state) || execution.state === "PAUSED" ? 10000 : running;
  if (poller?.ms === ms) return;
  poller?.stop();
  let first = true;
  poller = every(ms, () => (first ? (first = false) : refresh()));
  poller.ms = ms;
}

// Everything at once: the log stream (its lines are kept until drawn), the execution and
// the flow it ran (whose input types say which inputs are secrets: the header waits for
// it, so they are masked from the start).
try {
  logs.start();
  const loading = api(`/executions/${enc(executionId)}`);
  flow = await api(`/executions/${enc(executionId)}/flow`).then((r) => r.data, (error) => {
    if (error instanceof ApiError && error.status !== 401) return null; // drawn from the task runs
    throw error;
  });
  await refresh(loading);
  if (execution) document.getElementById("main").dataset.ready = "true";
  else {
    logs.stop(); // no such execution: the status line says why (the API's 404 message)
    document.querySelectorAll("main section, #execution-header").forEach((el) => { el.hidden = true; });
  }
} catch (error) {
  if (error instanceof ApiError) status(statusLine, error.message, "error");
  else throw error;
}
