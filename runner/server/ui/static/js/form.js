// A form generated from typed inputs (a flow's, or a pause task's): one field per input,
// of the control its type calls for, defaults filled in. Values are sent as the text a
// person would give `runner run -i NAME=VALUE`, so the server checks them exactly as the
// CLI does and its messages (the CLI's, naming the input) are shown next to each field.

import { TIME_ZONE, h } from "./core.js";

const HINTS = {
  int: "a whole number",
  float: "a number",
  array: "comma-separated (a,b,c) or a JSON list",
  json: "any JSON value",
  date: "a date",
  datetime: `a date and time, in your time zone (${TIME_ZONE})`,
  file: "a file to upload",
  secret: "a secret: never shown again",
};

const pad = (n) => String(n).padStart(2, "0");

// "2024-01-31T10:00:00+00:00" -> "2024-01-31T11:00:00" in the browser's zone (for the picker).
function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function arrayText(value) {
  if (!Array.isArray(value)) return value === null || value === undefined ? "" : String(value);
  const simple = value.every((v) => (typeof v === "string" || typeof v === "number") && !String(v).includes(","));
  return simple ? value.join(",") : JSON.stringify(value);
}

// inputs: [{id, type, description, required, default, values, item_type}]
// Returns {element, fields: Map(id -> control), values(): FormData|object, showErrors(details)}.
export function inputForm(inputs, { idPrefix = "input", allowFiles = true } = {}) {
  const fields = new Map();
  const rows = [];
  for (const spec of inputs) {
    const id = `${idPrefix}-${spec.id}`;
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    const control = makeControl(spec, id, allowFiles);
    control.setAttribute("aria-describedby", `${hintId} ${errorId}`);
    control.dataset.input = spec.id;
    control.dataset.type = spec.type;
    fields.set(spec.id, control);
    const hint = [spec.description, HINTS[spec.type]].filter(Boolean).join(" — ");
    const defaultText = spec.type === "file" && spec.default ? `default: ${spec.default}` : "";
    const label = h("label", { for: id },
      spec.id, spec.required && spec.default === null ? h("span", { class: "required", title: "required" }, " *") : null,
      " ", h("span", { class: "type" }, spec.type === "array" && spec.item_type ? `array of ${spec.item_type}` : spec.type));
    const isCheck = spec.type === "bool";
    rows.push(h("div", { class: `field${isCheck ? " check" : ""}`, dataset: { field: spec.id } },
      isCheck ? [control, label] : [label, control],
      h("p", { class: "hint", id: hintId }, [hint, defaultText].filter(Boolean).join(" · ")),
      h("p", { class: "error", id: errorId, hidden: true })));
  }
  const element = h("div", { class: "inputs" }, rows.length ? rows : h("p", { class: "muted" }, "This flow takes no inputs."));

  function entries() {
    const out = [];
    for (const spec of inputs) {
      const control = fields.get(spec.id);
      if (spec.type === "bool") out.push([spec.id, control.checked ? "true" : "false"]);
      else if (spec.type === "file") { if (control.files.length) out.push([spec.id, control.files[0]]); }
      else if (spec.type === "datetime") {
        if (control.value) out.push([spec.id, new Date(control.value).toISOString()]);
      } else if (control.value !== "") out.push([spec.id, control.value]);
    }
    return out;
  }

  return {
    element,
    fields,
    formData() {
      const data = new FormData();
      for (const [name, value] of entries()) data.append(name, value);
      return data;
    },
    object() {
      return Object.fromEntries(entries());
    },
    // Each message naming an input goes next to its field; what is left is returned.
    showErrors(details) {
      for (const [name, control] of fields) {
        control.removeAttribute("aria-invalid");
        const error = document.getElementById(`${idPrefix}-${name}-error`);
        error.hidden = true;
        error.textContent = "";
        control.closest(".field").classList.remove("invalid");
      }
      const rest = [];
      for (const detail of details || []) {
        const text = typeof detail === "string" ? detail : detail.message || JSON.stringify(detail);
        const match = /input '([^']+)'/.exec(text);
        const control = match && fields.get(match[1]);
        if (!control) { rest.push(text); continue; }
        const error = document.getElementById(`${idPrefix}-${match[1]}-error`);
        error.textContent = error.textContent ? `${error.textContent}\n${text}` : text;
        error.hidden = false;
        control.setAttribute("aria-invalid", "true");
        control.closest(".field").classList.add("invalid");
      }
      const first = [...fields.values()].find((c) => c.getAttribute("aria-invalid"));
      first?.focus();
      return rest;
    },
  };
}

function makeControl(spec, id, allowFiles) {
  const base = { id, name: spec.id };
  const value = spec.default;
  switch (spec.type) {
    case "bool":
      return h("input", { ...base, type: "checkbox", checked: value === true });
    case "enum": {
      const options = (spec.values || []).map((v) => h("option", { value: v, selected: v === value }, v));
      if (value === null || value === undefined) options.unshift(h("option", { value: "", selected: true }, spec.required ? "— choose —" : "(none)"));
      return h("select", base, options);
    }
    case "int":
      return h("input", { ...base, type: "text", inputmode: "numeric", value: value ?? "", autocomplete: "off" });
    case "float":
      return h("input", { ...base, type: "text", inputmode: "decimal", value: value ?? "", autocomplete: "off" });
    case "date":
      return h("input", { ...base, type: "date", value: value ?? "" });
    case "datetime":
      return h("input", { ...base, type: "datetime-local", step: "1", value: value ? toLocalInput(value) : "" });
    case "json":
      return h("textarea", { ...base, rows: "3", spellcheck: "false", class: "mono" }, value === null || value === undefined ? "" : JSON.stringify(value, null, 2));
    case "array":
      return h("input", { ...base, type: "text", value: arrayText(value), autocomplete: "off", spellcheck: "false" });
    case "file":
      return allowFiles ? h("input", { ...base, type: "file" }) : h("input", { ...base, type: "text", disabled: true });
    case "secret":
      // A secret default stays on the server: empty means "use it".
      return h("input", { ...base, type: "password", autocomplete: "new-password", value: "", placeholder: value !== null && value !== undefined ? "(default)" : "" });
    default:
      return h("input", { ...base, type: "text", value: value ?? "", autocomplete: "off" });
  }
}
