// Small DOM helpers shared by the tray, the canvas overlays and the dialogs.
import { app } from "../../../scripts/app.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A node of the workflow's graph by the id a job names it with, and what to call it.
export function graphNode(id) {
  return id == null ? null : app.graph?.getNodeById?.(Number(id)) ?? null;
}

export function nodeName(id) {
  const node = graphNode(id);
  return node ? node.title ?? node.type : `node ${id}`;
}

// Sets or clears (options null) one kind of midrun badge on a node; `kind` marks ours
// among the node's badges so each kind is replaced, never stacked.
export function setBadge(node, kind, options) {
  node.badges = (node.badges ?? []).filter((b) => !b[kind]);
  if (options && window.LGraphBadge) {
    const badge = new window.LGraphBadge(options);
    const make = () => badge;
    make[kind] = true;
    node.badges.push(make);
  }
}

// Replaces a node's children; arrays are flattened and null/false left out.
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return node;
}

export function button(label, onclick, extra = {}) {
  return el("button", { type: "button", class: `midrun-btn ${extra.class ?? ""}`, onclick,
                        title: extra.title, "data-action": extra.action, disabled: extra.disabled }, label);
}

export function toast(severity, summary, detail, life = 6000) {
  const manager = app.extensionManager?.toast;
  if (manager?.add) manager.add({ severity, summary, detail, life });
  else console.info(`[midrun] ${summary}: ${detail}`);
}

// A value as a short, readable text (prompts are cut, numbers keep their digits).
export function show(value) {
  if (typeof value === "string") return value.length > 40 ? `"${value.slice(0, 37)}…"` : `"${value}"`;
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(+value.toFixed(4));
  return JSON.stringify(value);
}

// A modal dialog; resolves with what `collect` returns on OK, or null when cancelled.
export function dialog({ title, body, ok = "OK", collect = () => true, wide = false }) {
  return new Promise((resolve) => {
    const error = el("div", { class: "midrun-dialog-error", role: "alert" });
    const close = (value) => { backdrop.remove(); document.removeEventListener("keydown", onKey, true); resolve(value); };
    const submit = async () => {
      try {
        const value = await collect();
        if (value !== undefined) close(value);
      } catch (e) {
        error.textContent = e.message;
      }
    };
    const onKey = (e) => {
      if (e.key === "Escape") { e.stopPropagation(); close(null); }
    };
    const box = el("div", { class: `midrun-dialog${wide ? " wide" : ""}`, role: "dialog", "aria-label": title },
      el("h3", {}, title), el("div", { class: "midrun-dialog-body" }, body), error,
      el("div", { class: "midrun-dialog-actions" },
        button("Cancel", () => close(null), { action: "cancel" }),
        button(ok, submit, { class: "primary", action: "ok" })));
    const backdrop = el("div", { class: "midrun-backdrop", onclick: (e) => { if (e.target === backdrop) close(null); } }, box);
    document.addEventListener("keydown", onKey, true);
    document.body.append(backdrop);
    box.querySelector("input, textarea, select")?.focus();
  });
}

// An image shown large above everything; a click anywhere closes it.
export function enlarge(src, caption) {
  const layer = el("div", { class: "midrun-lightbox", onclick: () => layer.remove() },
    el("figure", {}, el("img", { src, alt: caption }), el("figcaption", {}, caption)));
  document.body.append(layer);
}

export function loadStyles(href) {
  if (document.querySelector(`link[data-midrun-styles]`)) return;
  document.head.append(el("link", { rel: "stylesheet", href, "data-midrun-styles": "1" }));
}
