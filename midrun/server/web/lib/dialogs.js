// Batch… and Configure & Run: both run the canvas workflow through midrun's workflows API.
// The canvas workflow is saved server-side once per shape (its id kept in the graph's
// extra data), so its last-used parameters (default_parameters) pre-fill the next form.
import { app } from "../../../scripts/app.js";
import { client } from "./client.js";
import { el, dialog, toast } from "./ui.js";

const SEED_FIELDS = new Set(["seed", "noise_seed"]);
const EXTRA_KEY = "midrun";
const SEED_MAX = Number.MAX_SAFE_INTEGER;

function fingerprint(prompt) {
  // The workflow's shape: node types and links, not widget values (those are parameters).
  const shape = Object.entries(prompt).sort(([a], [b]) => a.localeCompare(b)).map(([id, node]) => [
    id, node.class_type,
    Object.entries(node.inputs ?? {}).filter(([, v]) => Array.isArray(v)).sort(),
  ]);
  return JSON.stringify(shape);
}

function title() {
  const workflow = app.extensionManager?.workflow?.activeWorkflow;
  return workflow?.filename ?? workflow?.path ?? "canvas workflow";
}

// The saved workflow standing for the canvas graph (saved again when its shape changed).
export async function ensureSaved() {
  const { output } = await app.graphToPrompt();
  const extra = (app.graph.extra[EXTRA_KEY] ??= {});
  const shape = fingerprint(output);
  if (extra.workflow_id && extra.shape === shape) {
    try {
      await client.workflow(extra.workflow_id);
      return { id: extra.workflow_id, prompt: output };
    } catch {
      /* deleted, or another server: save it again */
    }
  }
  const saved = await client.saveWorkflow(title().slice(0, 200), output);
  extra.workflow_id = saved.id;
  extra.shape = shape;
  return { id: saved.id, prompt: output };
}

// A form for a list of parameters ({node_id, field, label, type, value, options, min, max}).
export function parameterForm(params, { randomize = true } = {}) {
  const fields = [];
  const rows = params.map((param) => {
    const id = `midrun-${param.node_id}-${param.field}`;
    let input;
    if (param.options) {
      input = el("select", { id }, param.options.map((o) => el("option", { value: o, selected: o === param.value }, o)));
    } else if (param.type === "STRING" || typeof param.value === "string") {
      input = el("textarea", { id, rows: param.multiline || String(param.value).length > 40 ? 3 : 1 });
      input.value = param.value ?? "";
    } else if (param.type === "BOOLEAN" || typeof param.value === "boolean") {
      input = el("input", { id, type: "checkbox", checked: Boolean(param.value) });
    } else {
      input = el("input", { id, type: "number", value: param.value, min: param.min, max: param.max,
                            step: param.step ?? (param.type === "INT" ? 1 : "any") });
    }
    input.dataset.node = param.node_id;
    input.dataset.field = param.field;
    fields.push({ param, input });
    const extra = randomize && SEED_FIELDS.has(param.field)
      ? el("button", { type: "button", class: "midrun-btn", "data-action": "randomize",
                       onclick: () => { input.value = String(Math.floor(Math.random() * SEED_MAX)); } }, "Randomize")
      : null;
    const limits = param.min != null || param.max != null
      ? el("small", {}, `${param.min ?? "−∞"} … ${param.max ?? "∞"}`) : null;
    return el("div", { class: "midrun-field" },
      el("label", { for: id }, param.label ?? `${param.node_id}.${param.field}`),
      el("div", { class: "midrun-field-input" }, input, extra, limits));
  });
  const read = ({ param, input }) => {
    if (input.type === "checkbox") return input.checked;
    if (input.type === "number") {
      if (input.value.trim() === "" || !Number.isFinite(Number(input.value))) {
        throw new Error(`${param.label ?? param.field} needs a number`);
      }
      return Number(input.value);
    }
    return input.value;
  };
  return {
    element: el("div", { class: "midrun-form" }, rows),
    values: () => Object.fromEntries(fields.map((f) => [`${f.param.node_id}.${f.param.field}`, read(f)])),
    changes: () => fields.map((f) => ({ ...f.param, value: read(f) })).filter((c, i) => c.value !== fields[i].param.value),
  };
}

// The canvas workflow, saved, with its parameters (their last-used values); null after
// telling the user why not.
async function savedWithParameters(what) {
  try {
    const saved = await ensureSaved();
    return { saved, params: await client.workflowParameters(saved.id) };
  } catch (e) {
    toast("error", what, e.message);
    return null;
  }
}

export async function openConfigureDialog(store) {
  const found = await savedWithParameters("Configure & Run");
  if (!found) return;
  const { saved, params } = found;
  const form = parameterForm(params);
  const job = await dialog({
    title: "Configure & Run",
    body: [el("p", { class: "midrun-hint" }, "Pre-filled with the parameters this workflow last ran with."), form.element],
    ok: "Run",
    wide: true,
    collect: () => client.execute(saved.id, form.values()),
  });
  if (job) {
    store.own.add(job.id);
    store.activeId = job.id;
    store.refresh();
    toast("success", "Queued", `Job #${job.number} with the parameters recorded`);
  }
}

function numeric(params) {
  return params.filter((p) => !p.options && (p.type === "INT" || p.type === "FLOAT" || typeof p.value === "number"));
}

export async function openBatchDialog(store) {
  const found = await savedWithParameters("Batch");
  if (!found) return;
  const { saved, params } = found;
  const seed = params.find((p) => SEED_FIELDS.has(p.field));
  // Free text fields (prompts first), not lists such as the sampler's name.
  const texts = params.filter((p) => !p.options && (p.type === "STRING" || typeof p.value === "string"))
    .sort((a, b) => Boolean(b.multiline) - Boolean(a.multiline));
  const count = el("input", { type: "number", name: "count", min: 1, max: 20, value: 4 });
  const strategy = el("select", { name: "seed-mode" },
    ["increment", "random", "fixed"].map((m) => el("option", { value: m }, m)));
  const promptField = el("select", { name: "prompt-field" },
    texts.map((p) => el("option", { value: `${p.node_id}.${p.field}` }, p.label)));
  const prompts = el("textarea", { name: "prompts", rows: 3, placeholder: "One prompt per line; jobs cycle through them" });
  const sweepField = el("select", { name: "sweep-field" }, el("option", { value: "" }, "(no sweep)"),
    numeric(params).filter((p) => !SEED_FIELDS.has(p.field))
      .map((p) => el("option", { value: `${p.node_id}.${p.field}` }, p.label)));
  const sweep = ["start", "stop", "step"].map((n) => el("input", { type: "number", name: `sweep-${n}`, step: "any", placeholder: n }));
  const body = [
    el("div", { class: "midrun-field" }, el("label", {}, "Count (1–20)"), count),
    seed ? el("div", { class: "midrun-field" }, el("label", {}, `Seed (${seed.label})`), strategy) : null,
    texts.length ? el("div", { class: "midrun-field" }, el("label", {}, "Prompt list for"), promptField, prompts) : null,
    el("div", { class: "midrun-field" }, el("label", {}, "Sweep"), sweepField, el("div", { class: "midrun-row" }, sweep)),
  ];
  const batch = await dialog({
    title: "Batch…",
    body,
    ok: "Queue batch",
    collect: () => {
      const n = Number(count.value);
      if (!Number.isInteger(n) || n < 1 || n > 20) throw new Error("Count is a whole number from 1 to 20");
      const variations = [];
      if (seed) {
        variations.push({ type: "seed", node_id: seed.node_id, field: seed.field, mode: strategy.value,
                          start: Number(seed.value) || 0, batch_seed: Math.floor(Math.random() * 2 ** 31) });
      }
      const lines = prompts.value.split("\n").map((l) => l.trim()).filter(Boolean);
      if (lines.length) {
        const [node_id, field] = split(promptField.value);
        variations.push({ type: "cycle", node_id, field, values: lines });
      }
      if (sweepField.value) {
        const [start, stop, step] = sweep.map((i) => Number(i.value));
        if (![start, stop, step].every(Number.isFinite) || step === 0 || sweep.some((i) => i.value === "")) {
          throw new Error("A sweep needs numbers start, stop and a step other than 0");
        }
        const [node_id, field] = split(sweepField.value);
        variations.push({ type: "sweep", node_id, field, start, stop, step });
      }
      return client.batch(saved.id, { count: n, variations });
    },
  });
  if (batch) {
    store.batches.set(batch.id, batch);
    for (const job of batch.jobs ?? []) store.own.add(job.id);
    store.refresh();
    toast("success", "Batch queued", `${batch.total_count ?? batch.jobs?.length} jobs`);
  }
}

function split(key) {
  const at = key.lastIndexOf(".");
  return [key.slice(0, at), key.slice(at + 1)];
}
