// The job tray: a sidebar tab listing every job with its state colour, step progress and
// Pause / Resume / Abort; batches grouped with a progress grid, "Stop remaining" and their
// images side by side; the pipeline control and, while it is paused, a banner saying what
// was running and what is pending.
import { client, viewUrl } from "./client.js";
import { button, dialog, el, enlarge, fill, nodeName, toast } from "./ui.js";
import { ENDED } from "./store.js";

const LABEL = { queued: "queued", running: "running", pausing: "pausing…", paused: "paused",
                aborting: "aborting…", aborted: "aborted", completed: "completed", failed: "failed" };

export async function confirmAbort(job) {
  const reason = el("textarea", { rows: 3, placeholder: "Why (optional, kept in the job's record)", name: "reason" });
  const answer = await dialog({
    title: `Abort job #${job.number ?? ""} ${job.id.slice(0, 8)}?`,
    body: [el("p", {}, "The job stops at its next step; results made so far are kept."),
           el("label", {}, "Reason", reason)],
    ok: "Abort job",
    collect: () => ({ reason: reason.value.trim() }),
  });
  if (answer === null) return;
  await act(() => client.abort(job.id, answer.reason || undefined), "Abort");
}

export async function act(call, what) {
  try {
    return await call();
  } catch (e) {
    toast("error", `${what} refused`, e.message);
    return null;
  }
}

export function jobControls(job) {
  const controls = [];
  if (job.state === "running" || job.state === "queued") {
    controls.push(button("Pause", () => act(() => client.pause(job.id), "Pause"), { action: "pause" }));
  }
  if (job.state === "paused") {
    controls.push(button("Resume", () => act(() => client.resume(job.id), "Resume"), { action: "resume", class: "primary" }));
  }
  if (!ENDED.has(job.state) && job.state !== "aborting") {
    controls.push(button("Abort", () => confirmAbort(job), { action: "abort", class: "danger" }));
  }
  return controls;
}

function progress(job) {
  if (!job.total) return null;
  const pct = Math.round((100 * (job.step ?? 0)) / job.total);
  return el("div", { class: "midrun-progress", title: `step ${job.step}/${job.total}` },
    el("div", { class: "bar", style: { width: `${pct}%` } }),
    el("span", {}, `step ${job.step ?? 0}/${job.total}`));
}

function jobRow(job, store) {
  // A finished job's image; an aborted one keeps what it had made (its partial result).
  const caption = job.state === "completed" ? "output" : "partial result";
  const image = ENDED.has(job.state) && job.output
    ? el("img", { class: "midrun-thumb", src: viewUrl(job.output), alt: caption,
                  title: caption, onclick: () => enlarge(viewUrl(job.output), `Job #${job.number} ${caption}`) })
    : null;
  return el("div", { class: `midrun-job state-${job.state}`, dataset: { jobId: job.id, state: job.state } },
    el("div", { class: "midrun-job-head" },
      el("span", { class: "midrun-dot" }),
      el("span", { class: "midrun-job-name", title: job.id }, `#${job.number ?? "?"} · ${job.id.slice(0, 8)}`),
      store.own.has(job.id) ? el("span", { class: "midrun-tag" }, "this tab") : null,
      el("span", { class: "midrun-state" }, LABEL[job.state] ?? job.state)),
    progress(job),
    job.hit && job.state === "paused"
      ? el("div", { class: "midrun-note" }, `stopped at ${nodeName(job.hit.node)} (${job.hit.node})${job.hit.step ? `, step ${job.hit.step}` : ""}`)
      : null,
    job.reason && (job.state === "aborted" || job.state === "aborting")
      ? el("div", { class: "midrun-reason" }, `Reason: ${job.reason}`) : null,
    image,
    el("div", { class: "midrun-job-actions" }, jobControls(job)));
}

function batchCard(batchId, members, store, tray) {
  const record = store.batches.get(batchId);
  if (!record) store.refreshBatch(batchId);
  members.sort((a, b) => (a.batchIndex ?? 0) - (b.batchIndex ?? 0));
  const total = record?.jobs?.length ?? members.length;
  const done = members.filter((j) => ENDED.has(j.state)).length;
  const open = done < total;
  // One cell per job of the batch (the server's record lists them all), in batch order.
  const cells = (record?.jobs ?? members.map((j) => ({ id: j.id, batch_index: j.batchIndex, state: j.state })))
    .map((j) => ({ index: j.batch_index, state: store.jobs.get(j.id)?.state ?? j.state }))
    .sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
  const grid = el("div", { class: "midrun-grid", "aria-label": "batch progress" },
    cells.map((c) => el("span", { class: `cell state-${c.state}`, title: `#${c.index ?? "?"}: ${c.state}` })));
  const stop = open ? button("Stop remaining", async () => {
    const result = await act(() => client.stopBatch(batchId), "Stop");
    if (result) toast("info", "Batch stopped", `${batchId.slice(0, 8)}: jobs not started were aborted`);
  }, { action: "stop-batch", class: "danger" }) : null;
  const compare = button(tray.filter === batchId ? "Show all" : "Compare results",
    () => { tray.filter = tray.filter === batchId ? null : batchId; tray.render(); },
    { action: "compare" });
  return el("div", { class: "midrun-batch", dataset: { batchId } },
    el("div", { class: "midrun-job-head" },
      el("span", { class: "midrun-job-name" }, `Batch ${batchId.slice(0, 8)}`),
      el("span", { class: "midrun-state" }, `${done}/${total} done`)),
    grid,
    el("div", { class: "midrun-job-actions" }, stop, compare),
    el("details", {}, el("summary", {}, "Jobs"), members.map((j) => jobRow(j, store))));
}

function comparison(batchId, store) {
  const members = [...store.jobs.values()].filter((j) => j.batchId === batchId)
    .sort((a, b) => (a.batchIndex ?? 0) - (b.batchIndex ?? 0));
  const record = store.batches.get(batchId);
  const used = new Map((record?.jobs ?? []).map((j) => [j.id, j.parameters_used ?? {}]));
  return el("div", { class: "midrun-compare", "data-batch": batchId },
    el("div", { class: "midrun-compare-title" }, `Batch ${batchId.slice(0, 8)} side by side`),
    el("div", { class: "midrun-compare-row" }, members.map((j) => el("figure", { dataset: { jobId: j.id } },
      j.output ? el("img", { src: viewUrl(j.output), alt: `job ${j.batchIndex}`,
                             onclick: () => enlarge(viewUrl(j.output), `Batch item ${j.batchIndex}`) })
               : el("div", { class: `midrun-placeholder state-${j.state}` }, LABEL[j.state]),
      el("figcaption", {}, `#${j.batchIndex ?? "?"} ${describe(used.get(j.id))}`)))));
}

function describe(params) {
  if (!params) return "";
  return Object.entries(params).filter(([k]) => /seed|cfg|text|steps/.test(k))
    .map(([k, v]) => `${k.split(".").pop()}=${typeof v === "string" ? v.slice(0, 24) : v}`).join(" ");
}

function pipelineBar(store) {
  const paused = store.pipeline.state === "paused";
  const toggle = button(paused ? "Resume pipeline" : "Pause pipeline", async () => {
    const result = await act(() => (paused ? client.resumePipeline() : client.pausePipeline()), "Pipeline");
    if (result) { store.pipeline = result; store.changed({ type: "pipeline" }); }
  }, { action: paused ? "resume-pipeline" : "pause-pipeline", class: paused ? "primary" : "" });
  const banner = paused ? el("div", { class: "midrun-banner", role: "status" },
    el("strong", {}, "Pipeline paused"),
    el("div", {}, `Was running: ${names(store.pipeline.paused_jobs) || "nothing"}`),
    el("div", {}, `Pending: ${names(store.pipeline.pending) || "nothing"}`)) : null;
  return [el("div", { class: "midrun-toolbar" }, toggle,
    store.connected ? null : el("span", { class: "midrun-offline" }, "reconnecting…")), banner];
}

function names(list) {
  return (list ?? []).map((j) => (typeof j === "string" ? j : j.id ?? j.job_id ?? "")).filter(Boolean)
    .map((id) => id.slice(0, 8)).join(", ");
}

export class Tray {
  constructor(store) {
    this.store = store;
    this.root = null;
    this.filter = null; // a batch id: its results side by side
    this._queued = false;
    store.addEventListener("change", () => this.schedule());
  }

  mount(container) {
    this.root = el("div", { class: "midrun-tray" });
    this._key = "";
    container.replaceChildren(this.root);
    this.store.refresh();
    this.render();
  }

  updateProgress() {
    for (const row of this.root.querySelectorAll(".midrun-job")) {
      const job = this.store.jobs.get(row.dataset.jobId);
      const bar = row.querySelector(".midrun-progress");
      if (!job?.total || !bar) continue;
      bar.querySelector(".bar").style.width = `${Math.round((100 * (job.step ?? 0)) / job.total)}%`;
      bar.querySelector("span").textContent = `step ${job.step ?? 0}/${job.total}`;
    }
  }

  schedule() {
    if (this._queued || !this.root?.isConnected) return;
    this._queued = true;
    requestAnimationFrame(() => { this._queued = false; this.render(); });
  }

  // Rebuilt when the list changes; step progress alone is updated in place, so buttons
  // are not replaced under the pointer while jobs run.
  render() {
    if (!this.root) return;
    const store = this.store;
    const key = JSON.stringify([this.filter, store.connected, store.pipeline,
      store.sorted().map((j) => [j.id, j.state, j.hit, j.reason, j.output?.filename, j.batchId,
                                 j.number, Boolean(j.total)]),
      [...store.batches.values()].map((b) => [b.id, b.jobs?.length])]);
    if (key === this._key) {
      this.updateProgress();
      return;
    }
    this._key = key;
    const batches = new Map();
    const rows = [];
    for (const job of store.sorted()) {
      if (job.batchId) {
        if (!batches.has(job.batchId)) { batches.set(job.batchId, []); rows.push(["batch", job.batchId]); }
        batches.get(job.batchId).push(job);
      } else {
        rows.push(["job", job]);
      }
    }
    const filterSelect = el("select", { class: "midrun-filter", "aria-label": "Show results of",
      onchange: (e) => { this.filter = e.target.value || null; this.render(); } },
      el("option", { value: "" }, "All jobs"),
      [...batches.keys()].map((id) => el("option", { value: id, selected: id === this.filter }, `Batch ${id.slice(0, 8)}`)));
    fill(this.root,
      el("div", { class: "midrun-tray-title" }, el("span", {}, "midrun jobs"), filterSelect),
      pipelineBar(store),
      this.filter ? comparison(this.filter, store) : null,
      rows.length ? null : el("div", { class: "midrun-empty" }, "No jobs yet. Run the workflow to start one."),
      rows.filter(([kind, item]) => !this.filter || (kind === "batch" && item === this.filter))
        .map(([kind, item]) => (kind === "batch" ? batchCard(item, batches.get(item), store, this) : jobRow(item, store))));
  }
}
