// Breakpoints from the node context menu. They live in the node's properties
// ("midrun.breakpoints", saved with the workflow); the server reads them from the canvas
// workflow each time it is queued, and a job already running gets them at once.
import { app } from "../../../scripts/app.js";
import { client } from "./client.js";
import { dialog, el, setBadge, toast } from "./ui.js";
import { ENDED } from "./store.js";

const PROPERTY = "midrun.breakpoints";
const BADGE = "midrunBreakpoint";

export function breakpointsOf(node) {
  const list = node.properties?.[PROPERTY];
  return Array.isArray(list) ? list : [];
}

function describe(spec) {
  if (spec.position === "step") return spec.step ? `break at step ${spec.step}` : "break on each step";
  if (spec.condition) return `break if ${spec.condition}`;
  return "breakpoint";
}

export class Breakpoints {
  constructor(store) {
    this.store = store;
  }

  menuItems(node) {
    const has = breakpointsOf(node).length > 0;
    return [
      null,
      has ? { content: "Remove breakpoint", callback: () => this.remove(node) }
          : { content: "Add breakpoint", callback: () => this.add(node, { position: "before" }) },
      { content: "Condition…", callback: () => this.askCondition(node) },
      { content: "Break at step…", callback: () => this.askStep(node) },
    ];
  }

  async askCondition(node) {
    const input = el("input", { type: "text", name: "condition", placeholder: "e.g. step >= 10 or cfg > 6" });
    const condition = await dialog({
      title: `Break at ${node.title ?? node.type} when…`,
      body: [el("p", { class: "midrun-hint" }, "An expression over the node's inputs and step; the job pauses before the node, or on a step, when it is true."),
             input],
      ok: "Set breakpoint",
      collect: () => {
        if (!input.value.trim()) throw new Error("Write a condition, e.g. step >= 10");
        return input.value.trim();
      },
    });
    if (condition) await this.add(node, /\bstep\b/.test(condition) ? { position: "step", condition } : { condition });
  }

  async askStep(node) {
    const input = el("input", { type: "number", name: "step", min: 1, value: 8 });
    const step = await dialog({
      title: `Break ${node.title ?? node.type} at sampler step…`,
      body: input,
      ok: "Set breakpoint",
      collect: () => {
        const n = Number(input.value);
        if (!Number.isInteger(n) || n < 1) throw new Error("A step is a whole number from 1");
        return n;
      },
    });
    if (step) await this.add(node, { position: "step", step });
  }

  async add(node, spec) {
    node.properties ??= {};
    node.properties[PROPERTY] = [...breakpointsOf(node), spec];
    this.mark(node);
    const job = this.liveJob();
    if (job) {
      try {
        await client.addBreakpoint(job.id, { ...spec, node_id: String(node.id) });
      } catch (e) {
        toast("warn", "Breakpoint kept for the next run", `The running job refused it: ${e.message}`);
      }
    }
    toast("info", "Breakpoint set", `${node.title ?? node.type}: ${describe(spec)}`, 3000);
  }

  async remove(node) {
    node.properties[PROPERTY] = [];
    this.mark(node);
    const job = this.liveJob();
    if (!job) return;
    try {
      const set = await client.breakpoints(job.id);
      await Promise.all(set.filter((bp) => bp.node_id === String(node.id) && bp.job_id === job.id)
        .map((bp) => client.removeBreakpoint(bp.id)));
    } catch (e) {
      toast("warn", "Breakpoint", `The running job kept it: ${e.message}`);
    }
  }

  liveJob() {
    const job = this.store.active();
    return job && this.store.own.has(job.id) && !ENDED.has(job.state) ? job : null;
  }

  // A red badge over each node that has breakpoints.
  mark(node) {
    const list = breakpointsOf(node);
    setBadge(node, BADGE, list.length ? {
      text: `● ${list.length === 1 ? describe(list[0]) : `${list.length} breakpoints`}`,
      fgColor: "#ffffff", bgColor: "#b62324",
    } : null);
    app.graph?.setDirtyCanvas(true, true);
  }
}
