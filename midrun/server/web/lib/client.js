// midrun's REST API, through the frontend's fetchApi (which adds the base path and the
// user header). Every call resolves to the parsed JSON body or throws an ApiError that
// carries the server's own message, so callers can show the reason to the user.
import { api } from "../../../scripts/api.js";

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await api.fetchApi(path, options);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    const message = (typeof error === "string" ? error : error.message) || text || response.statusText;
    throw new ApiError(response.status, error.type ?? "http_error", message);
  }
  return data;
}

const job = (id) => `/jobs/${encodeURIComponent(id)}`;

export const client = {
  jobs: (limit = 200) => call("GET", `/jobs?limit=${limit}`),
  job: (id) => call("GET", job(id)),
  state: (id) => call("GET", `${job(id)}/state`),
  parameters: (id) => call("GET", `${job(id)}/parameters`),
  previews: (id) => call("GET", `${job(id)}/preview?format=json`),
  previewUrl: (id, step) => api.apiURL(`${job(id)}/preview?step=${step}`),
  pause: (id) => call("POST", `${job(id)}/pause`),
  resume: (id) => call("POST", `${job(id)}/resume`, {}),
  abort: (id, reason) => call("POST", `${job(id)}/abort`, reason ? { reason } : {}),
  step: (id, mode) => call("POST", `${job(id)}/step`, { mode }),
  edit: (id, nodeId, input, value) =>
    call("PUT", `${job(id)}/params`, { node_id: String(nodeId), input, value }),
  undo: (id, editId) => call("DELETE", `${job(id)}/params/${editId}`),
  undoAll: (id) => call("DELETE", `${job(id)}/params`),
  addBreakpoint: (id, spec) => call("POST", `${job(id)}/breakpoints`, spec),
  breakpoints: (id) => call("GET", `${job(id)}/breakpoints`),
  removeBreakpoint: (bpId) => call("DELETE", `/breakpoints/${encodeURIComponent(bpId)}`),
  pipeline: () => call("GET", "/pipeline"),
  pausePipeline: () => call("POST", "/pipeline/pause"),
  resumePipeline: () => call("POST", "/pipeline/resume"),
  saveWorkflow: (name, workflow, defaults) =>
    call("POST", "/workflows", { name, workflow, default_parameters: defaults ?? {} }),
  workflow: (id) => call("GET", `/workflows/${encodeURIComponent(id)}`),
  workflowParameters: (id) => call("GET", `/workflows/${encodeURIComponent(id)}/parameters`),
  execute: (id, parameters) =>
    call("POST", `/workflows/${encodeURIComponent(id)}/execute`, { parameters }),
  batch: (id, body) => call("POST", `/workflows/${encodeURIComponent(id)}/batch`, body),
  getBatch: (id) => call("GET", `/batches/${encodeURIComponent(id)}`),
  stopBatch: (id) => call("POST", `/batches/${encodeURIComponent(id)}/stop`, {}),
};

// The URL of an output image as ComfyUI's /view serves it.
export function viewUrl(image) {
  const q = new URLSearchParams({
    filename: image.filename,
    subfolder: image.subfolder ?? "",
    type: image.type ?? "output",
  });
  return api.apiURL(`/view?${q}`);
}
