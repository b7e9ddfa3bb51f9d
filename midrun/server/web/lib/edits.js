// Mid-run editing from the canvas: while the active job is paused, a widget change becomes
// a pending edit on the server (PUT /api/jobs/{id}/params). Each is marked on its widget
// and node ("modified mid-run", old -> new) and listed under the job with Undo and Undo
// all; Resume applies them. A refused edit puts the widget back and shows the server's
// reason.
import { app } from "../../../scripts/app.js";
import { client } from "./client.js";
import { EVENT } from "./events.js";
import { button, dialog, el, graphNode, nodeName, setBadge, show, toast } from "./ui.js";
import { parameterForm } from "./dialogs.js";

const BADGE = "midrunEdit";

export class Edits extends EventTarget {
  constructor(store) {
    super();
    this.store = store;
    this.pending = new Map(); // job id -> [edit records]
    this.known = new Map(); // edit id -> record, kept after Resume for late refusals
    this.version = 0;
    this.applying = false; // set while we write widget values ourselves
    store.addEventListener("change", (e) => {
      const { type, id } = e.detail ?? {};
      if ([EVENT.RESUMED, EVENT.RUNNING, EVENT.COMPLETED, EVENT.ABORTED, EVENT.FAILED].includes(type)
          && this.pending.has(id)) {
        this.pending.delete(id);
        this.changed();
      }
      if (type === EVENT.EDIT_REFUSED) this.refused(e.detail.data ?? {});
    });
  }

  changed() {
    this.version += 1;
    this.markCanvas();
    this.dispatchEvent(new Event("change"));
  }

  // Called for every node the canvas creates: the canvas (classic and Vue nodes) reports
  // each widget change a user makes through node.onWidgetChanged.
  watch(node) {
    if (node.midrunWatched) return;
    node.midrunWatched = true;
    const previous = node.onWidgetChanged;
    const self = this;
    node.onWidgetChanged = function (name, value, old, widget) {
      const result = previous?.apply(this, arguments);
      self.onWidget(this, widget ?? this.widgets?.find((w) => w.name === name), value, old);
      return result;
    };
  }

  // The job whose edits the canvas makes: the active job, if it is paused.
  editable() {
    const job = this.store.active();
    return job && job.state === "paused" ? job : null;
  }

  async onWidget(node, widget, value, old) {
    if (this.applying || !widget || value === old) return;
    const job = this.editable();
    if (!job) return;
    try {
      const result = await client.edit(job.id, node.id, widget.name, value);
      this.take(job.id, result);
    } catch (e) {
      toast("error", `Edit refused: ${node.title ?? node.type} / ${widget.name}`, e.message, 8000);
      this.setWidget(node.id, widget.name, old);
    }
  }

  take(jobId, result) {
    const pending = result.pending ?? (result.edits ?? []).filter((edit) => edit.status === "pending");
    for (const edit of pending) this.known.set(edit.id, edit);
    this.pending.set(jobId, pending);
    this.changed();
  }

  // The run could not take an edit when it resumed: say why and put the widget back.
  refused({ edit_id: editId, reason }) {
    const edit = this.known.get(editId);
    const what = edit ? `${nodeName(edit.node_id)} / ${edit.input_name}` : `edit ${editId}`;
    toast("error", `Edit refused: ${what}`, reason ?? "the run could not take it", 10000);
    if (edit) this.setWidget(edit.node_id, edit.input_name, edit.old);
  }

  async undo(job, edit) {
    try {
      this.take(job.id, await client.undo(job.id, edit.id));
      this.setWidget(edit.node_id, edit.input_name, edit.old);
    } catch (e) {
      toast("error", "Undo refused", e.message);
    }
  }

  async undoAll(job) {
    const edits = [...(this.pending.get(job.id) ?? [])];
    try {
      this.take(job.id, await client.undoAll(job.id));
      for (const edit of edits.reverse()) this.setWidget(edit.node_id, edit.input_name, edit.old);
    } catch (e) {
      toast("error", "Undo refused", e.message);
    }
  }

  setWidget(nodeId, name, value) {
    const node = graphNode(nodeId);
    const widget = node?.widgets?.find((w) => w.name === name);
    if (!widget) return;
    this.applying = true;
    try {
      widget.value = value;
      widget.callback?.(value, app.canvas, node);
    } finally {
      this.applying = false;
    }
    app.graph.setDirtyCanvas(true, true);
  }

  // Widget labels and node badges say which inputs are modified mid-run.
  markCanvas() {
    const job = this.store.active();
    const edits = job ? this.pending.get(job.id) ?? [] : [];
    for (const node of app.graph?.nodes ?? []) {
      const mine = edits.filter((e) => String(e.node_id) === String(node.id));
      for (const widget of node.widgets ?? []) {
        const edit = mine.find((e) => e.input_name === widget.name);
        if (widget.midrunLabel === undefined) widget.midrunLabel = widget.label ?? null;
        widget.label = edit ? `${widget.name} ✎ ${show(edit.old)} → ${show(edit.new)}` : widget.midrunLabel ?? undefined;
      }
      setBadge(node, BADGE, mine.length
        ? { text: `modified mid-run (${mine.length})`, fgColor: "#1b1300", bgColor: "#e3b341" } : null);
    }
    app.graph?.setDirtyCanvas(true, true);
  }

  panel(job) {
    const edits = this.pending.get(job.id) ?? [];
    if (!edits.length) {
      return el("div", { class: "midrun-edits empty" }, "Change a widget now to edit this job; Continue applies it from the next step.");
    }
    return el("div", { class: "midrun-edits" },
      el("div", { class: "midrun-edits-title" }, `Modified mid-run (${edits.length}), applied on Continue`),
      el("ul", {}, edits.map((edit) => el("li", { dataset: { editId: edit.id, input: edit.input_name } },
        el("span", { class: "midrun-modified" }, "modified mid-run"),
        el("span", {}, ` ${nodeName(edit.node_id)} / ${edit.input_name}: `),
        el("span", { class: "old" }, show(edit.old)), " → ", el("span", { class: "new" }, show(edit.new)),
        button("Undo", () => this.undo(job, edit), { action: "undo-edit" })))),
      button("Undo all", () => this.undoAll(job), { action: "undo-all" }));
  }

  // Every parameter of the paused job as a form; changed fields become pending edits.
  async openParameters(job) {
    let params;
    try {
      params = await client.parameters(job.id);
    } catch (e) {
      toast("error", "Parameters", e.message);
      return;
    }
    const form = parameterForm(params, { randomize: false });
    await dialog({
      title: `Parameters of job #${job.number ?? ""} (paused)`,
      body: form.element,
      ok: "Apply as edits",
      wide: true,
      collect: async () => {
        const changes = form.changes();
        let result = null;
        for (const change of changes) {
          result = await client.edit(job.id, change.node_id, change.field, change.value);
          this.setWidget(change.node_id, change.field, change.value);
        }
        if (result) this.take(job.id, result);
        return changes;
      },
    });
  }
}
