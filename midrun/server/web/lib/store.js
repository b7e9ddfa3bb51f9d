// What the page knows about jobs: one entry per job id, filled from GET /api/jobs and kept
// current by the server's events. After a reconnect the whole list is fetched again and
// merged by id, so no job is lost or shown twice. Listeners get a "change" event.
import { api } from "../../../scripts/api.js";
import { client } from "./client.js";
import { EVENT, EVENT_STATE } from "./events.js"; // served from the server's EventKind

export const ENDED = new Set(["completed", "failed", "aborted"]);
export const LIVE = new Set(["running", "pausing", "aborting"]);

const STATUS = { in_progress: "running", pending: "queued", completed: "completed",
                 failed: "failed", cancelled: "aborted" };

export const JOB_EVENTS = [
  ...Object.keys(EVENT_STATE), EVENT.PROGRESS, EVENT.PREVIEW_SAVED, EVENT.BREAKPOINT_HIT,
  EVENT.STEP_REACHED, EVENT.EDITED, EVENT.EDIT_UNDONE, EVENT.EDIT_APPLIED, EVENT.EDIT_REFUSED,
  EVENT.BATCH_PROGRESS, EVENT.PIPELINE_PAUSED, EVENT.PIPELINE_RESUMED, EVENT.LOGPOINT,
];

export class Store extends EventTarget {
  constructor() {
    super();
    this.jobs = new Map();
    this.pipeline = { state: "running", paused_jobs: [], pending: [] };
    this.own = new Set(); // jobs this page queued (ComfyUI routes their messages here)
    this.activeId = null; // the job the canvas shows controls for
    this.batches = new Map(); // batch id -> the server's batch record
    this.connected = true;
    this._pending = null;
  }

  job(id) {
    let entry = this.jobs.get(id);
    if (!entry) {
      entry = { id, state: "queued", step: null, total: null, node: null, batchId: null,
                batchIndex: null, created: Date.now(), output: null, reason: null,
                pausedBy: null, preview: null, hit: null, number: null };
      this.jobs.set(id, entry);
    }
    return entry;
  }

  changed(detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail }));
  }

  // The whole list from the server, merged by id (a reconnect calls this).
  async refresh() {
    if (this._pending) return this._pending;
    this._pending = (async () => {
      try {
        const asked = performance.now();
        const [listing, pipeline] = await Promise.all([client.jobs(), client.pipeline()]);
        const seen = new Set();
        for (const item of listing.jobs ?? []) {
          seen.add(item.id);
          this.merge(item, asked);
        }
        for (const id of [...this.jobs.keys()]) {
          const entry = this.jobs.get(id);
          if (!seen.has(id) && !ENDED.has(entry.state)) this.jobs.delete(id); // gone: deleted
        }
        this.pipeline = pipeline;
        this.changed({ refreshed: true });
      } finally {
        this._pending = null;
      }
    })();
    return this._pending;
  }

  // A server record of a job, read at `asked`: an event that came after that is newer
  // than the record's state and progress, which are then left alone.
  merge(item, asked = performance.now()) {
    const entry = this.job(item.id);
    const m = item.midrun ?? {};
    entry.number = item.priority ?? entry.number;
    if (item.preview_output) entry.output = item.preview_output;
    entry.batchId = m.batch_id ?? null;
    entry.batchIndex = m.batch_index ?? null;
    if ((entry.eventAt ?? -1) > asked) return;
    entry.state = m.state ?? STATUS[item.status] ?? entry.state;
    entry.created = item.create_time ?? entry.created;
    entry.pausedBy = m.paused_by ?? null;
    entry.reason = m.reason ?? entry.reason;
    const progress = m.progress ?? {};
    entry.node = progress.node ?? entry.node;
    if (progress.step != null) entry.step = progress.step;
    if (progress.total_steps != null) entry.total = progress.total_steps;
  }

  // One server event (the frontend hands us event.detail).
  onEvent(type, data) {
    const id = data?.job_id;
    if (type === EVENT.PIPELINE_PAUSED || type === EVENT.PIPELINE_RESUMED) {
      client.pipeline().then((p) => { this.pipeline = p; this.changed({ type }); }, () => {});
      return;
    }
    if (type === EVENT.BATCH_PROGRESS) {
      this.refreshBatch(data.batch_id);
      return;
    }
    if (!id) return;
    const entry = this.job(id);
    entry.eventAt = performance.now();
    // Events from different threads or processes can cross: a request's "pausing" or
    // "aborting" may come after the worker's "paused" or "aborted". An ended job stays
    // ended, and a late "pausing" does not undo "paused".
    const stale = ENDED.has(entry.state) || (type === EVENT.PAUSING && entry.state === "paused");
    if (EVENT_STATE[type] && !stale) entry.state = EVENT_STATE[type];
    if (type === EVENT.PAUSING && data.by) entry.pausedBy = data.by;
    if (type === EVENT.RESUMED) entry.hit = null;
    if (type === EVENT.ABORTED || type === EVENT.ABORTING) entry.reason = data.reason ?? entry.reason;
    if (type === EVENT.PROGRESS) {
      entry.step = data.step;
      entry.total = data.total_steps;
      entry.node = data.node_id;
      if (entry.state === "queued") entry.state = "running";
    }
    if (type === EVENT.PREVIEW_SAVED) {
      entry.preview = { step: data.step, total: data.total_steps, node: data.node_id };
      entry.firstPreview ??= entry.preview;
    }
    if (type === EVENT.BREAKPOINT_HIT || type === EVENT.STEP_REACHED) {
      entry.hit = { node: data.node_id, step: data.step, kind: type.slice(7) };
      entry.node = data.node_id;
    }
    if (ENDED.has(entry.state) || type === EVENT.QUEUED) {
      // The listing holds outputs and batch membership: read this job back.
      const asked = performance.now();
      client.job(id).then((item) => { this.merge(item, asked); this.changed({ type, id }); }, () => {});
    }
    if (entry.batchId && ENDED.has(entry.state)) this.refreshBatch(entry.batchId);
    this.changed({ type, id, data });
  }

  async refreshBatch(batchId) {
    if (!batchId) return;
    try {
      this.batches.set(batchId, await client.getBatch(batchId));
      this.changed({ type: "batch", batchId });
    } catch {
      /* a batch of another user */
    }
  }

  // The newest job this page queued that has not ended, else the newest live one.
  active() {
    if (this.activeId && this.jobs.has(this.activeId) && !ENDED.has(this.jobs.get(this.activeId).state)) {
      return this.jobs.get(this.activeId);
    }
    const open = [...this.jobs.values()].filter((j) => !ENDED.has(j.state) && j.state !== "queued");
    open.sort((a, b) => (this.own.has(b.id) - this.own.has(a.id)) || b.created - a.created);
    return open[0] ?? null;
  }

  sorted() {
    return [...this.jobs.values()].sort((a, b) => b.created - a.created);
  }

  // Jobs this page queues are known from the moment /prompt answers.
  trackQueued() {
    const queue = api.queuePrompt.bind(api);
    api.queuePrompt = async (...args) => {
      const result = await queue(...args);
      const id = result?.prompt_id;
      if (id) {
        this.own.add(id);
        this.job(id).number = result.number ?? null;
        this.changed({ type: "queued-here", id });
      }
      return result;
    };
  }

  listen() {
    this.trackQueued();
    for (const type of JOB_EVENTS) api.addEventListener(type, (e) => this.onEvent(type, e.detail));
    api.addEventListener("execution_start", (e) => {
      const id = e.detail?.prompt_id;
      if (id) { this.own.add(id); this.activeId = id; this.job(id); this.changed({ type: "start", id }); }
    });
    api.addEventListener("promptQueued", () => this.refresh());
    api.addEventListener("reconnecting", () => { this.connected = false; this.changed({ type: "disconnected" }); });
    api.addEventListener("reconnected", () => { this.connected = true; this.refresh(); });
  }
}
