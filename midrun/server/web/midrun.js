// midrun's debugger in the ComfyUI canvas: the job tray (sidebar), the active job's card
// on the canvas (controls, intermediate previews, paused-here inspection, mid-run edits),
// breakpoints from the node menu, Batch… and Configure & Run. Plain ES modules, no build.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { Breakpoints } from "./lib/breakpoints.js";
import { CanvasOverlay } from "./lib/canvas.js";
import { openBatchDialog, openConfigureDialog } from "./lib/dialogs.js";
import { Edits } from "./lib/edits.js";
import { Store } from "./lib/store.js";
import { Tray } from "./lib/tray.js";
import { loadStyles } from "./lib/ui.js";

const DEMO_TEMPLATE = "/workflow_templates/midrun/demo_txt2img.json";

const store = new Store();
const edits = new Edits(store);
const breakpoints = new Breakpoints(store);
const tray = new Tray(store);
const overlay = new CanvasOverlay(store, edits);

// The frontend's default graph needs models midrun does not have: a new canvas opens
// midrun's demo workflow instead (an explicit graph, such as a file, loads as asked).
function useDemoAsDefault() {
  const load = app.loadGraphData.bind(app);
  app.loadGraphData = async function (graph, ...rest) {
    if (!graph || typeof graph !== "object" || Array.isArray(graph)) {
      try {
        const response = await api.fetchApi(DEMO_TEMPLATE);
        if (response.ok) return load(await response.json(), ...rest);
      } catch (e) {
        console.warn("[midrun] demo workflow unavailable, loading the frontend's default", e);
      }
    }
    return load(graph, ...rest);
  };
}

app.registerExtension({
  name: "midrun.debugger",
  settings: [
    {
      id: "midrun.Preview.EverySteps",
      category: ["midrun", "Previews", "Interval"],
      name: "Intermediate preview every N sampler steps",
      tooltip: "How often a running job decodes and sends a preview of its latents (1 = every step).",
      type: "number",
      defaultValue: 1,
      attrs: { min: 1, max: 100, step: 1 },
    },
  ],
  commands: [
    { id: "midrun.Batch", label: "Batch…", icon: "pi pi-th-large", function: () => openBatchDialog(store) },
    { id: "midrun.ConfigureRun", label: "Configure & Run", icon: "pi pi-sliders-h", function: () => openConfigureDialog(store) },
    { id: "midrun.ShowJobs", label: "Show midrun jobs", icon: "pi pi-list",
      function: () => app.extensionManager.command.execute("Workspace.ToggleSidebarTab.midrun-jobs") },
  ],
  menuCommands: [{ path: ["midrun"], commands: ["midrun.Batch", "midrun.ConfigureRun", "midrun.ShowJobs"] }],
  keybindings: [{ combo: { key: "b", alt: true }, commandId: "midrun.Batch" }],

  async init() {
    useDemoAsDefault();
    loadStyles(new URL("./midrun.css", import.meta.url).href);
  },

  async setup() {
    store.listen(); // before any event arrives: the frontend drops types nobody listens to
    app.extensionManager.registerSidebarTab({
      id: "midrun-jobs",
      icon: "pi pi-list-check",
      title: "Jobs",
      tooltip: "midrun jobs: pause, resume, abort, batches",
      type: "custom",
      render: (element) => tray.mount(element),
    });
    overlay.mount();
    await store.refresh();
  },

  nodeCreated(node) {
    edits.watch(node);
  },

  loadedGraphNode(node) {
    edits.watch(node);
    breakpoints.mark(node);
  },

  getNodeMenuItems(node) {
    return breakpoints.menuItems(node);
  },
});

// For tests and the curious: the extension's state, read-only by convention.
window.midrun = { store, edits, breakpoints, tray, overlay };
