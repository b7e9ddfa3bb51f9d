// What midrun draws over the canvas for the active job: a card under the node it is
// executing (state, step, Pause / Resume / Abort), the live preview labelled as an
// intermediate with the source image beside it, and, where the job stopped, a "paused
// here" outline with Continue / Step over, the node's inputs and outputs, and the edits
// waiting for Resume.
import { app } from "../../../scripts/app.js";
import { client, viewUrl } from "./client.js";
import { button, el, enlarge, fill, graphNode, show } from "./ui.js";
import { act, jobControls } from "./tray.js";
import { ENDED } from "./store.js";

const GAP = 10;

// A node's box on screen, in page pixels.
function screenBox(node) {
  const canvas = app.canvas;
  const rect = canvas.canvas.getBoundingClientRect();
  const ds = canvas.ds;
  const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const x = (node.pos[0] + ds.offset[0]) * ds.scale + rect.left;
  const y = (node.pos[1] - title + ds.offset[1]) * ds.scale + rect.top;
  return { x, y, w: node.size[0] * ds.scale, h: (node.size[1] + title) * ds.scale };
}

export class CanvasOverlay {
  constructor(store, edits) {
    this.store = store;
    this.edits = edits;
    this.layer = el("div", { class: "midrun-layer" });
    this.outline = el("div", { class: "midrun-outline" });
    this.card = el("div", { class: "midrun-card", role: "region", "aria-label": "midrun job" });
    this.layer.append(this.outline, this.card);
    this.inspecting = false;
    this.inspection = null;
    this.sourceUrl = null;
    this._key = "";
    store.addEventListener("change", (e) => this.update(e.detail));
    edits.addEventListener("change", () => this.update({ force: true }));
  }

  mount() {
    document.body.append(this.layer);
    const follow = () => { this.place(); requestAnimationFrame(follow); };
    requestAnimationFrame(follow);
  }

  // Keeps the card and outline on their node while the canvas pans and zooms.
  place() {
    const job = this.job;
    const node = job && graphNode(job.node);
    if (!job || !node || !app.canvas?.canvas) {
      this.layer.hidden = true;
      return;
    }
    this.layer.hidden = false;
    const box = screenBox(node);
    Object.assign(this.outline.style, { left: `${box.x - 4}px`, top: `${box.y - 4}px`,
      width: `${box.w + 8}px`, height: `${box.h + 8}px` });
    this.outline.className = `midrun-outline state-${job.state}`;
    this.outline.hidden = ENDED.has(job.state);
    // Under the node; beside it when that would leave the window.
    const height = this.card.offsetHeight;
    let left = box.x;
    let top = box.y + box.h + GAP;
    if (top + height > window.innerHeight - GAP) {
      left = box.x + box.w + GAP;
      top = Math.max(GAP, Math.min(box.y, window.innerHeight - height - GAP));
    }
    Object.assign(this.card.style, { left: `${left}px`, top: `${top}px` });
  }

  get job() {
    return this.store.active();
  }

  update(detail = {}) {
    const job = this.job;
    if (!job) {
      this.card.replaceChildren();
      this._key = "";
      return;
    }
    if (job.id !== this._jobId || (job.state !== "paused" && this.inspecting)) {
      this.inspecting = false; // the inspector shows one stop of one job
      this.inspection = null;
    }
    this._jobId = job.id;
    // Rebuilt when what it shows changes; the step and the preview change in place, so a
    // button is never replaced under the pointer while a job runs.
    const key = JSON.stringify([job.id, job.state, job.node, job.hit, this.inspecting,
                                this.inspection != null, this.edits.version, Boolean(job.preview),
                                Boolean(job.preview && this.source(job))]);
    if (key !== this._key || detail.force) {
      this._key = key;
      this.render(job);
    }
    this.refresh(job);
  }

  refresh(job) {
    const step = this.card.querySelector(".midrun-step");
    if (step) step.textContent = this.stepText(job);
    const live = this.card.querySelector(".midrun-live");
    if (live && job.preview) {
      const { step: at, total } = job.preview;
      const label = `Intermediate preview · step ${at}/${total ?? "?"}`;
      const image = live.querySelector("img");
      const url = client.previewUrl(job.id, at);
      if (image.getAttribute("src") !== url) image.src = url;
      image.alt = label;
      live.querySelector("figcaption").textContent = label;
    }
  }

  stepText(job) {
    // A step count belongs to the sampler: a stop before another node shows none.
    const atSampler = job.hit ? job.hit.step != null : !job.preview || job.node === job.preview.node;
    return job.total && atSampler ? `step ${job.step ?? 0}/${job.total}` : "";
  }

  render(job) {
    const paused = job.state === "paused";
    const where = paused
      ? (job.hit ? `Paused here · ${job.hit.kind === "breakpoint_hit" ? "breakpoint" : "stepped"}` : "Paused here")
      : ({ running: "Running", pausing: "Pausing at the next step…", queued: "Queued",
           aborting: "Aborting…" }[job.state] ?? job.state);
    const controls = paused
      ? [button("Continue", () => act(() => client.resume(job.id), "Continue"), { action: "continue", class: "primary" }),
         button("Step over", () => act(() => client.step(job.id, "over"), "Step over"), { action: "step-over" }),
         button(this.inspecting ? "Hide inspector" : "Inspect", () => this.toggleInspect(job), { action: "inspect" }),
         button("Parameters…", () => this.edits.openParameters(job), { action: "parameters" }),
         ...jobControls(job).filter((b) => b.dataset.action === "abort")]
      : jobControls(job);
    this.card.className = `midrun-card state-${job.state}`;
    this.card.dataset.jobId = job.id;
    this.card.dataset.state = job.state;
    fill(this.card,
      el("div", { class: "midrun-card-head" },
        el("span", { class: "midrun-dot" }),
        el("strong", { class: "midrun-where" }, where),
        el("span", { class: "midrun-step" }, this.stepText(job)),
        el("span", { class: "midrun-job-name" }, `#${job.number ?? "?"}`)),
      el("div", { class: "midrun-card-actions" }, controls),
      this.previews(job),
      paused ? this.edits.panel(job) : null,
      paused && this.inspecting ? this.inspector(job) : null);
  }

  // The live preview (its image and label kept current by refresh) beside the source.
  previews(job) {
    if (!job.preview) return null;
    const source = this.source(job);
    const open = (e) => enlarge(e.target.src, e.target.alt);
    return el("div", { class: "midrun-previews" },
      source ? el("figure", { class: "midrun-source" },
        el("img", { src: source.url, alt: source.label, onclick: open }),
        el("figcaption", {}, source.label)) : null,
      el("figure", { class: "midrun-live" }, el("img", { onclick: open }), el("figcaption")));
  }

  // The img2img input when the workflow loads one, else the job's first preview.
  source(job) {
    const loader = (app.graph?.nodes ?? []).find((n) => n.type === "LoadImage" && n.mode === 0);
    const image = loader?.widgets?.find((w) => w.name === "image")?.value;
    if (image) {
      const [filename, subfolder] = String(image).split("/").reverse();
      return { url: viewUrl({ filename, subfolder: subfolder ?? "", type: "input" }), label: "Source image" };
    }
    const first = job.firstPreview;
    if (!first || first.step === job.preview.step) return null;
    return { url: client.previewUrl(job.id, first.step), label: `First preview · step ${first.step}/${first.total ?? "?"}` };
  }

  async toggleInspect(job) {
    this.inspecting = !this.inspecting;
    if (this.inspecting) {
      const [state, params, detail] = await Promise.all([
        client.state(job.id), client.parameters(job.id), client.job(job.id)]);
      this.inspection = { state, params, prompt: detail.workflow?.prompt ?? {} };
    }
    this.update({ force: true });
  }

  inspector(job) {
    if (!this.inspection) return el("div", { class: "midrun-inspector" }, "Loading…");
    const { state, params, prompt } = this.inspection;
    const nodeId = state.node ?? job.node;
    const spec = prompt[nodeId] ?? { inputs: {} };
    const rows = Object.entries(spec.inputs ?? {}).map(([name, value]) => {
      const linked = Array.isArray(value) && value.length === 2 && typeof value[0] === "string";
      const param = params.find((p) => p.node_id === nodeId && p.field === name);
      const text = linked
        ? `← ${prompt[value[0]]?._meta?.title ?? prompt[value[0]]?.class_type ?? value[0]} (output ${value[1]})`
        : show(param ? param.value : value);
      return el("tr", {}, el("th", {}, name), el("td", {}, text));
    });
    const outputs = state.outputs?.[nodeId];
    return el("div", { class: "midrun-inspector", "data-node": nodeId },
      el("div", { class: "midrun-inspector-title" }, `${spec._meta?.title ?? spec.class_type ?? "Node"} (${nodeId}) · ${state.position ?? ""}${state.step ? ` step ${state.step}/${state.total_steps}` : ""}`),
      el("table", {}, el("caption", {}, "Inputs"), rows),
      el("table", {}, el("caption", {}, "Outputs"),
        outputs ? Object.entries(outputs).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, show(v))))
                : el("tr", {}, el("td", {}, state.position === "before" ? "not run yet" : "none recorded"))));
  }
}
