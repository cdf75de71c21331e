// The live log of an execution: the API's Server-Sent Events stream, every line kept and
// shown (filtered by task, stream and a search), ending exactly at the stream's `end`
// event, which the server sends once the execution has ended and every line was sent.
// The browser's EventSource reconnects by itself after a network error, with the id of
// the last line it got (Last-Event-ID): no line is lost or shown twice.

import { API, enc, esc, h, taskOf } from "./core.js";

const pad = (n, w = 2) => String(n).padStart(w, "0");
function clock(iso) {
  const d = new Date(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export class LogView {
  constructor(container, executionId, { onEnd = null, onState = null } = {}) {
    this.executionId = executionId;
    this.onEnd = onEnd;
    this.onState = onState;
    this.lines = [];
    this.seen = new Set();
    this.lastId = null;
    this.task = "";
    this.stream = "";
    this.search = "";
    this.follow = true;
    this.ended = false;
    this.pending = [];
    this.source = null;
    this.build(container);
  }

  build(container) {
    const id = (name) => `logs-${name}`;
    this.taskSelect = h("select", { id: id("task"), onchange: () => this.setTask(this.taskSelect.value) },
      h("option", { value: "" }, "All tasks"));
    this.streamSelect = h("select", { id: id("stream"), onchange: () => { this.stream = this.streamSelect.value; this.redraw(); } },
      h("option", { value: "" }, "stdout and stderr"), h("option", { value: "stdout" }, "stdout"), h("option", { value: "stderr" }, "stderr"));
    this.searchInput = h("input", { id: id("search"), type: "search", placeholder: "Search the lines", autocomplete: "off" });
    let searchTimer = null;
    this.searchInput.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { this.search = this.searchInput.value; this.redraw(); }, 150);
    });
    this.followButton = h("button", { type: "button", "aria-pressed": "true", onclick: () => this.setFollow(!this.follow) }, "Follow");
    this.downloadButton = h("button", { type: "button", onclick: () => this.download() }, "Download");
    this.state = h("p", { class: "log-status", role: "status", "aria-live": "polite" }, "Connecting…");
    this.view = h("div", { class: "log-view", role: "log", "aria-label": "Log lines", tabindex: "0" });
    this.view.addEventListener("scroll", () => {
      const atBottom = this.view.scrollHeight - this.view.scrollTop - this.view.clientHeight < 24;
      if (this.follow && !atBottom && !this.autoScrolling) this.setFollow(false);
      if (!this.follow && atBottom && this.userScrolled) this.setFollow(true);
      this.userScrolled = true;
    });
    container.replaceChildren(
      h("div", { class: "toolbar" },
        h("label", { for: id("task") }, "Task"), this.taskSelect,
        h("label", { for: id("stream") }, "Stream"), this.streamSelect,
        h("label", { for: id("search"), class: "visually-hidden" }, "Search"), this.searchInput,
        this.followButton, this.downloadButton),
      this.state,
      this.view,
    );
  }

  // The task ids the select offers: "" (all), each task, and each run of a matrix task.
  setTasks(nodeIds) {
    const current = this.taskSelect.value;
    const tasks = new Map();
    for (const node of nodeIds) {
      const task = taskOf(node);
      if (!tasks.has(task)) tasks.set(task, []);
      if (node !== task) tasks.get(task).push(node);
    }
    const options = [h("option", { value: "" }, "All tasks")];
    for (const [task, runs] of tasks) {
      options.push(h("option", { value: task }, runs.length ? `${task} (all ${runs.length} runs)` : task));
      for (const run of runs) options.push(h("option", { value: run }, `  ${run}`));
    }
    this.taskSelect.replaceChildren(...options);
    this.taskSelect.value = [...this.taskSelect.options].some((o) => o.value === current) ? current : this.task;
  }

  setTask(task) {
    this.task = task || "";
    if (this.taskSelect.value !== this.task) {
      if (![...this.taskSelect.options].some((o) => o.value === this.task)) this.taskSelect.append(h("option", { value: this.task }, this.task));
      this.taskSelect.value = this.task;
    }
    this.redraw();
  }

  setFollow(on) {
    this.follow = on;
    this.followButton.setAttribute("aria-pressed", String(on));
    this.followButton.textContent = on ? "Follow" : "Follow (off)";
    if (on) this.scrollDown();
  }

  start() {
    this.ended = false;
    const after = this.lastId !== null ? `?after=${this.lastId}` : "";
    const source = new EventSource(`${API}/executions/${enc(this.executionId)}/logs/stream${after}`, { withCredentials: true });
    this.source = source;
    source.addEventListener("line", (event) => {
      const line = JSON.parse(event.data);
      if (this.seen.has(line.id)) return;
      this.seen.add(line.id);
      this.lastId = line.id;
      this.lines.push(line);
      this.pending.push(line);
      this.schedule();
    });
    source.addEventListener("state", (event) => {
      const { state } = JSON.parse(event.data);
      this.setStatus(`Streaming (${state})…`);
      this.onState?.(state);
    });
    source.addEventListener("end", (event) => {
      source.close();
      this.source = null;
      this.ended = true;
      const { state } = JSON.parse(event.data);
      this.flush();
      this.endState = state;
      this.setStatus();
      this.onEnd?.(state, this.lines.length);
    });
    source.addEventListener("open", () => this.setStatus("Streaming…"));
    source.addEventListener("error", () => {
      if (this.ended) return;
      if (source.readyState === EventSource.CLOSED) this.setStatus("The log stream failed: reload the page to try again.", "error");
      else this.setStatus("Reconnecting…");
    });
  }

  // After a restart or a resume the execution runs again: follow its new lines.
  reopen() {
    if (this.source) return;
    this.start();
  }

  stop() {
    this.source?.close();
    this.source = null;
  }

  setStatus(text, kind = "") {
    const shown = this.view.childElementCount;
    const total = this.lines.length;
    const lines = (n) => `${n} line${n === 1 ? "" : "s"}`;
    const counts = shown === total ? lines(total) : `${shown} of ${lines(total)} shown`;
    const what = text || (this.ended ? `Ended (${this.endState}): every line received.` : "Streaming…");
    this.state.textContent = `${what} ${counts}`;
    this.state.className = `log-status ${kind}`.trim();
    this.view.dataset.total = String(total);
    this.view.dataset.shown = String(shown);
    this.view.dataset.ended = String(this.ended);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = null; this.flush(); });
  }

  matches(line) {
    if (this.task && line.task_id !== this.task && taskOf(line.task_id) !== this.task) return false;
    if (this.stream && line.stream !== this.stream) return false;
    if (this.search && !line.line.toLowerCase().includes(this.search.toLowerCase())) return false;
    return true;
  }

  flush() {
    if (this.frame) { cancelAnimationFrame(this.frame); this.frame = null; }
    const batch = this.pending;
    this.pending = [];
    const html = [];
    for (const line of batch) if (this.matches(line)) html.push(this.lineHtml(line));
    if (html.length) {
      this.autoScrolling = true;
      this.view.insertAdjacentHTML("beforeend", html.join(""));
      if (this.follow) this.scrollDown();
      this.autoScrolling = false;
    }
    this.setStatus(this.ended ? "" : "Streaming…");
  }

  redraw() {
    this.pending = [];
    const html = [];
    for (const line of this.lines) if (this.matches(line)) html.push(this.lineHtml(line));
    this.view.innerHTML = html.join("");
    if (!html.length) this.view.innerHTML = "";
    if (this.follow) this.scrollDown();
    this.setStatus(this.ended ? "" : "Streaming…");
  }

  scrollDown() {
    this.autoScrolling = true;
    this.view.scrollTop = this.view.scrollHeight;
    requestAnimationFrame(() => { this.autoScrolling = false; });
  }

  lineHtml(line) {
    let text = esc(line.line);
    if (this.search) {
      const needle = esc(this.search).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      text = text.replace(new RegExp(needle, "gi"), (m) => `<mark>${m}</mark>`);
    }
    const err = line.stream === "stderr";
    return `<div class="log-line${err ? " stderr" : ""}" data-id="${line.id}"><time datetime="${esc(line.time)}" title="${esc(line.time)}">${clock(line.time)}</time>`
      + `<span class="log-task" title="${esc(line.task_id)}">${esc(line.task_id)}</span>`
      + `<span class="log-stream" title="${line.stream}">${err ? "err" : "out"}</span><span class="log-text">${text}</span></div>`;
  }

  download() {
    const rows = this.lines.filter((l) => this.matches(l)).map((l) => `${l.time}\t${l.task_id}\t${l.stream}\t${l.line}`);
    const blob = new Blob([rows.join("\n") + (rows.length ? "\n" : "")], { type: "text/plain" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `execution-${this.executionId.slice(0, 8)}${this.task ? `-${this.task.replace(/[^\w.-]+/g, "_")}` : ""}.log` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
}
