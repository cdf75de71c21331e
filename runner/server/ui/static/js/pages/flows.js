// /ui/flows: GET /flows -> every flow with its namespace, description, last execution,
// triggers and their next times, and a switch that pauses its triggers
// (POST /flows/{ns}/{id}/pause|unpause); the files that cannot be used, with their problems.

import { ApiError, api, clear, every, executionUrl, flowPath, flowUrl, h, shortId, stateEl, status, timeEl, toast } from "../core.js";

const table = document.getElementById("flows");
const statusLine = document.getElementById("flows-status");
const invalidSection = document.getElementById("invalid");
const invalidList = document.getElementById("invalid-files");

function triggerItem(trigger) {
  const parts = [h("strong", {}, trigger.id), " ", h("span", { class: "tag" }, trigger.type)];
  if (trigger.type === "schedule") {
    parts.push(" ", h("code", {}, trigger.cron), ` ${trigger.timezone || "UTC"}`);
    if (trigger.next?.length) parts.push(h("span", { class: "next" }, " · next ", timeEl(trigger.next[0])));
  } else if (trigger.type === "flow" && trigger.upstream) {
    const up = trigger.upstream;
    parts.push(` after ${up.namespace}.${up.flow_id} (${(up.states || []).join(", ")})`);
  } else if (trigger.type === "webhook") {
    parts.push(" POST /api/v1/webhooks/…");
  }
  if (trigger.disabled) parts.push(" ", h("span", { class: "tag warn" }, trigger.disabled_reason || "disabled"));
  return h("li", {}, parts);
}

function pauseSwitch(flow) {
  const button = h("button", {
    type: "button", role: "switch", class: "switch", "aria-checked": String(!flow.paused),
    "aria-label": `Triggers of ${flow.namespace}.${flow.id}`,
    title: flow.paused ? "Paused: its triggers do not fire" : "Active: its triggers fire",
  }, h("span", { class: "knob", "aria-hidden": "true" }), flow.paused ? "Paused" : "Active");
  button.addEventListener("click", async () => {
    button.disabled = true;
    const action = button.getAttribute("aria-checked") === "true" ? "pause" : "unpause";
    try {
      const { data } = await api(`/flows/${flowPath(flow.namespace, flow.id)}/${action}`, { method: "POST" });
      toast(`${flow.namespace}.${flow.id}: triggers ${data.paused ? "paused" : "active"}`);
      await load();
    } catch (error) {
      toast(error.message, "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function render(data) {
  const flows = [...data.flows].sort((a, b) => a.namespace.localeCompare(b.namespace) || a.id.localeCompare(b.id));
  if (!flows.length) {
    clear(table, h("p", { class: "muted" }, "No flow yet: put flow files in the server's flows folder."));
  } else {
    const rows = flows.map((flow) => h("tr", { dataset: { flow: `${flow.namespace}.${flow.id}` } },
      h("td", {}, flow.namespace),
      h("td", {}, h("a", { href: flowUrl(flow.namespace, flow.id) }, flow.id),
        flow.description ? h("div", { class: "muted small" }, flow.description) : null),
      h("td", {}, flow.last_execution
        ? [stateEl(flow.last_execution.state), " ", h("a", { href: executionUrl(flow.last_execution.id) }, shortId(flow.last_execution.id)), h("div", { class: "small" }, timeEl(flow.last_execution.created_at))]
        : h("span", { class: "muted" }, "never run")),
      h("td", {}, flow.triggers.length ? h("ul", { class: "plain" }, flow.triggers.map(triggerItem)) : h("span", { class: "muted" }, "none")),
      h("td", { class: "num" }, String(flow.tasks)),
      h("td", {}, pauseSwitch(flow))));
    clear(table, h("table", { class: "grid" },
      h("caption", { class: "visually-hidden" }, "Flows"),
      h("thead", {}, h("tr", {}, ["Namespace", "Flow", "Last execution", "Triggers", "Tasks", "Triggers on"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)));
  }
  invalidSection.hidden = !data.invalid.length;
  clear(invalidList, data.invalid.map((file) => h("div", { class: "invalid-file card" },
    h("h3", {}, h("code", {}, file.file)),
    h("ul", { class: "problems" }, file.problems.map((p) => h("li", {}, h("code", {}, p.text)))))));
  status(statusLine, `${flows.length} flow${flows.length === 1 ? "" : "s"}${data.invalid.length ? `, ${data.invalid.length} invalid file${data.invalid.length === 1 ? "" : "s"}` : ""}`);
}

async function load() {
  try {
    const { data } = await api("/flows");
    render(data);
  } catch (error) {
    if (error instanceof ApiError) status(statusLine, error.message, "error");
    else throw error;
  }
}

every(10000, load);
