// /ui/flows/{namespace}/{flow_id}: GET /flows/{ns}/{id} (source, inputs, graph,
// triggers), GET /executions?namespace=&flow_id= (its latest executions), and a run form
// generated from its typed inputs -> POST /executions/{ns}/{id} (JSON, or multipart when
// a file is uploaded); the answer's 422 details go next to their fields.

import hljs from "../../vendor/highlight.core.min.js";
import yaml from "../../vendor/highlight.yaml.min.js";
import {
  ApiError, UI, api, clear, duration, enc, every, executionUrl, flowPath, h, mainData, shortId, stateEl, status, timeEl, toast,
} from "../core.js";
import { renderDag } from "../dag.js";
import { inputForm } from "../form.js";

hljs.registerLanguage("yaml", yaml);

const { namespace, flowId } = mainData();
const path = flowPath(namespace, flowId);
const statusLine = document.getElementById("flow-status");

function renderSummary(flow) {
  const labels = Object.entries(flow.labels || {});
  clear(document.getElementById("flow-summary"), h("dl", { class: "facts" },
    flow.description ? [h("dt", {}, "Description"), h("dd", {}, flow.description)] : null,
    h("dt", {}, "File"), h("dd", {}, h("code", {}, flow.file)),
    h("dt", {}, "Revision"), h("dd", {}, h("code", {}, flow.revision)),
    labels.length ? [h("dt", {}, "Labels"), h("dd", {}, labels.map(([k, v]) => h("span", { class: "tag" }, `${k}: ${v}`)))] : null,
    h("dt", {}, "Triggers"), h("dd", {}, flow.paused ? h("span", { class: "tag warn" }, "paused") : "active")));
  const toggle = h("button", { type: "button" }, flow.paused ? "Unpause triggers" : "Pause triggers");
  toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    try {
      await api(`/flows/${path}/${flow.paused ? "unpause" : "pause"}`, { method: "POST" });
      await loadFlow();
    } catch (error) { toast(error.message, "error"); } finally { toggle.disabled = false; }
  });
  clear(document.getElementById("flow-actions"), toggle,
    h("a", { class: "button", href: `${UI}/executions?namespace=${enc(namespace)}&flow_id=${enc(flowId)}` }, "All executions"));
}

function renderRunForm(flow) {
  const hasFiles = flow.inputs.some((i) => i.type === "file");
  const generated = inputForm(flow.inputs, { idPrefix: "input" });
  const formError = h("div", { class: "form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Run");
  const form = h("form", { class: "run-form", novalidate: true, enctype: hasFiles ? "multipart/form-data" : null },
    formError, generated.element, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    formError.hidden = true;
    generated.showErrors([]);
    try {
      const body = hasFiles ? generated.formData() : { inputs: generated.object() };
      const { data } = await api(`/executions/${path}`, { method: "POST", body });
      location.assign(executionUrl(data.id));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const rest = generated.showErrors(error.details);
      clear(formError, h("p", {}, error.message), rest.length ? h("ul", {}, rest.map((t) => h("li", {}, t))) : null);
      formError.hidden = false;
      submit.disabled = false;
    }
  });
  clear(document.getElementById("run-form"), form);
}

function renderTriggers(flow) {
  const el = document.getElementById("triggers");
  if (!flow.triggers.length) { clear(el, h("p", { class: "muted" }, "None: it runs when started by hand or through the API.")); return; }
  clear(el, h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Trigger", "Type", "When", "Next times", "State"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, flow.triggers.map((t) => h("tr", {},
      h("td", {}, t.id, t.description ? h("div", { class: "muted small" }, t.description) : null),
      h("td", {}, t.type),
      h("td", {}, t.type === "schedule" ? [h("code", {}, t.cron), ` ${t.timezone || "UTC"}`]
        : t.type === "flow" && t.upstream ? `after ${t.upstream.namespace}.${t.upstream.flow_id} ends ${t.upstream.states.join("/")}`
          : `POST /api/v1/webhooks/${namespace}/${flowId}/KEY`),
      h("td", {}, t.next?.length ? h("ul", { class: "plain" }, t.next.map((n) => h("li", {}, timeEl(n)))) : h("span", { class: "muted" }, "—")),
      h("td", {}, t.disabled ? h("span", { class: "tag warn" }, t.disabled_reason || "disabled") : flow.paused ? "paused" : "active"))))));
}

function renderSource(flow) {
  const code = h("code", { class: "hljs language-yaml" });
  code.innerHTML = hljs.highlight(flow.source, { language: "yaml" }).value;
  const count = flow.source.split("\n").length - (flow.source.endsWith("\n") ? 1 : 0);
  const numbers = h("pre", { class: "line-numbers", "aria-hidden": "true" }, Array.from({ length: count }, (_, i) => i + 1).join("\n"));
  clear(document.getElementById("source"), h("div", { class: "source" }, numbers, h("pre", { tabindex: "0", "aria-label": `Source of ${flow.file}` }, code)));
}

async function loadExecutions() {
  const el = document.getElementById("flow-executions");
  const { data } = await api(`/executions?namespace=${enc(namespace)}&flow_id=${enc(flowId)}&limit=10`);
  if (!data.executions.length) { clear(el, h("p", { class: "muted" }, "No execution yet.")); return; }
  clear(el, h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Execution", "State", "Created", "Duration", "Tasks"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, data.executions.map((e) => h("tr", {},
      h("td", {}, h("a", { href: executionUrl(e.id) }, h("code", {}, shortId(e.id)))),
      h("td", {}, stateEl(e.state)),
      h("td", {}, timeEl(e.created_at)),
      h("td", {}, duration(e.duration_s)),
      h("td", { class: "small" }, Object.entries(e.task_states).map(([s, n]) => `${n} ${s}`).join(", ")))))),
    data.next ? h("p", {}, h("a", { href: `${UI}/executions?namespace=${enc(namespace)}&flow_id=${enc(flowId)}` }, "More executions…")) : null);
}

let shown = null;
async function loadFlow() {
  try {
    const { data: flow } = await api(`/flows/${path}`);
    document.title = `${flow.namespace}.${flow.id} · runner`;
    renderSummary(flow);
    if (shown !== flow.revision) {
      shown = flow.revision;
      renderRunForm(flow);
      renderDag(document.getElementById("graph"), flow.graph);
      renderSource(flow);
    }
    renderTriggers(flow);
    status(statusLine, "");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    status(statusLine, error.message, "error");
    if (error.status === 404) document.querySelectorAll("main section, .columns").forEach((el) => { el.hidden = true; });
  }
}

await loadFlow();
every(5000, loadExecutions);
