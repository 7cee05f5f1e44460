// Frontend extension: draws what DTS / SDVG did on the node that ran.
//
// The server sends STATS_EVENT (see nodes/glue/stats_events.py) to the page that queued the prompt when a DTS or
// SDVG node finishes. The page remembers, for each prompt it queues, the workflow tab it came from and the class type
// of each node id; the statistics land only on that workflow's node with that id and type (held back while another
// tab is on screen). The panel is a canvas-drawn widget appended to that node; the last statistics are stored in the
// node's `properties`, which ComfyUI saves with the workflow, so the panel comes back after a page reload. A node of a
// prompt that failed or was interrupted before it reported keeps its panel marked as from an earlier run.
// Everything that can be computed without a canvas lives in stats_panel_model.js (tested with Node).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  PANEL_LAYOUT,
  PANEL_MIN_WIDTH,
  PANEL_WIDGET_NAME,
  PROPERTY_KEY,
  STATS_EVENT,
  nodeMatches,
  nodesWithoutFreshStats,
  normalizePayload,
  panelDrawOps,
  panelHeight,
  panelModel,
  panelTooltip,
  parseNodeLocator,
  promptRecord,
  readStoredStats,
  routeStats,
  staleRecord,
  storedStatsRecord,
} from "./stats_panel_model.js";

/** prompt id -> promptRecord(...) of the prompts this page queued and that have not ended. */
const records = new Map();
/** workflow -> [{nodeId, type, update}] held while that workflow is not on screen. */
const pending = new Map();
/** [handler, event] for prompt ids not known yet: the queue request that will name them is still in flight. */
let inFlight = 0;
let orphans = [];

/** The workflow tab on screen (the frontend's workflow store); null where the frontend has none. */
function activeWorkflow() {
  return app.extensionManager?.workflow?.activeWorkflow ?? app.workflowManager?.activeWorkflow ?? null;
}

/** The node a unique id names, following subgraph ids ("12:5") from the root graph; null when gone. */
function findNode(uniqueId) {
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const id of parseNodeLocator(uniqueId)) {
    if (!graph) return null;
    node = graph.getNodeById(id) ?? graph.getNodeById(Number(id));
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

function drawOps(ctx, ops) {
  ctx.save();
  for (const op of ops) {
    if (op.op === "rect") {
      ctx.fillStyle = op.fill;
      ctx.fillRect(op.x, op.y, op.w, op.h);
      if (op.stroke) {
        ctx.strokeStyle = op.stroke;
        ctx.lineWidth = 1;
        ctx.strokeRect(op.x + 0.5, op.y + 0.5, op.w - 1, op.h - 1);
      }
    } else if (op.op === "text") {
      ctx.fillStyle = op.color;
      ctx.font = op.font;
      ctx.textAlign = op.align;
      ctx.textBaseline = "alphabetic";
      ctx.fillText(op.text, op.x, op.y);
    }
  }
  ctx.restore();
}

function currentModel(node) {
  const record = readStoredStats(node.properties);
  return record ? panelModel(record.kind, record.stats, { stale: !!record.stale }) : null;
}

/** Vue nodes hand a canvas widget a box of its own; on frontend 1.58 that box is 12 px short of its cell's right
 * edge (its -mx-3 margins shift it left but its width stays the cell's), so the panel stopped short of the other
 * widgets. Widen the box to the cell's content edge; a box that already reaches it is left alone. */
function reachCellEnd(canvas) {
  const box = canvas.parentElement;
  const cell = box?.parentElement;
  if (!box || !cell || !box.offsetWidth) return;
  const boxRect = box.getBoundingClientRect();
  const scale = boxRect.width / box.offsetWidth; // the canvas's zoom
  const style = getComputedStyle(cell);
  const end = cell.getBoundingClientRect().right -
    ((parseFloat(style.paddingRight) || 0) + (parseFloat(style.borderRightWidth) || 0)) * scale;
  const gap = (end - boxRect.right) / scale;
  if (gap < 1) return;
  const extra = (Number(box.dataset.speculativeVideoWiden) || 0) + gap;
  box.dataset.speculativeVideoWiden = String(extra);
  box.style.width = `calc(100% + ${Math.round(extra)}px)`;
}

/** Add the panel widget once; it reads the node's stored statistics every time it is drawn. */
function ensurePanel(node) {
  let widget = node.widgets?.find((w) => w.name === PANEL_WIDGET_NAME);
  if (!widget) {
    widget = node.addCustomWidget({
      name: PANEL_WIDGET_NAME,
      type: "speculative_video_stats",
      value: "",
      // Neither in the workflow's widgets_values nor in the prompt sent to the server.
      serialize: false,
      options: { serialize: false },
      draw(ctx, drawnNode, width, y) {
        const model = currentModel(drawnNode);
        if (!model) return;
        // Vue nodes hand this widget a canvas of its own, already inside the node's padding: no margin there.
        const ownCanvas = !!this.triggerDraw && !!ctx.canvas && ctx.canvas !== app.canvas?.canvas;
        if (ownCanvas) reachCellEnd(ctx.canvas); // redrawn at the new width by the frontend's resize observer
        drawOps(ctx, panelDrawOps(model, width, y, ownCanvas ? { ...PANEL_LAYOUT, margin: 0 } : PANEL_LAYOUT).ops);
        this.tooltip = panelTooltip(model); // the classic canvas shows a widget's tooltip on hover
        // Vue nodes draw this widget on a canvas of its own (triggerDraw is their redraw hook): its title is the
        // hover text there. The classic canvas is shared by every node and keeps its own.
        if (ownCanvas) ctx.canvas.title = this.tooltip;
      },
      computeSize(width) {
        const model = currentModel(node);
        const nodeWidth = width ?? node.size?.[0] ?? PANEL_MIN_WIDTH;
        return [nodeWidth, model ? panelHeight(model, nodeWidth) : 0];
      },
    });
  }
  // Grow the node so that the panel is visible; never shrink what the user sized.
  const width = Math.max(node.size[0], PANEL_MIN_WIDTH);
  const needed = node.computeSize([width, node.size[1]]);
  node.setSize([width, Math.max(node.size[1], needed[1])]);
  node.setDirtyCanvas?.(true, true);
  widget.triggerDraw?.(); // Vue nodes redraw a canvas widget only when asked
  return widget;
}

/** Store `update(old record)` in the node's properties, if the node on screen is the one the prompt ran. */
function applyUpdate({ nodeId, type, update }) {
  const node = findNode(nodeId);
  if (!nodeMatches(node, type)) return; // deleted, or replaced by a node of another type since the prompt was queued
  const record = update(readStoredStats(node.properties));
  if (!record) return;
  // Wrapped as a graph change so that ComfyUI's change tracker records it: the workflow is marked modified and
  // its persisted copy (restored on page reload) includes the statistics.
  app.canvas?.emitBeforeChange?.();
  try {
    node.properties ??= {};
    node.properties[PROPERTY_KEY] = record;
    ensurePanel(node);
  } finally {
    app.canvas?.emitAfterChange?.();
  }
  (app.rootGraph ?? app.graph)?.setDirtyCanvas?.(true, true);
}

/** Calls of app.loadGraphData under way (a tab switch, a template, a reload's restore). */
let graphLoads = 0;

/** The frontend is switching or loading a workflow tab: the graph may already hold the new tab's nodes while the
 * store still names the old tab (seen on frontend 1.49, a statistics event landing mid-switch). */
function switchingTabs() {
  return graphLoads > 0 || !!app.extensionManager?.workflow?.isBusy;
}

function trackGraphLoads() {
  const original = app.loadGraphData;
  if (typeof original !== "function" || original.speculativeVideoWrapped) return;
  const wrapped = async function (...args) {
    graphLoads += 1;
    try {
      return await original.apply(this, args);
    } finally {
      graphLoads -= 1;
      if (pending.size) setTimeout(flushPending, 0);
    }
  };
  wrapped.speculativeVideoWrapped = true;
  app.loadGraphData = wrapped;
}

/** Apply now if the prompt's workflow is on screen, else when it is shown again. */
function deliver(workflow, item) {
  if (workflow === activeWorkflow() && !switchingTabs()) {
    applyUpdate(item);
    return;
  }
  if (!pending.has(workflow)) pending.set(workflow, []);
  pending.get(workflow).push(item);
}

function flushPending() {
  if (switchingTabs()) return;
  const workflow = activeWorkflow();
  const items = pending.get(workflow);
  if (!items) return;
  pending.delete(workflow);
  for (const item of items) applyUpdate(item);
}

function onStats(event) {
  const payload = normalizePayload(event.detail);
  if (!payload) return;
  const record = records.get(payload.promptId);
  if (!record && inFlight > 0) {
    orphans.push([onStats, event]);
    return;
  }
  const route = routeStats(payload, record, activeWorkflow());
  if (route.action === "drop") return;
  record.received.add(payload.node);
  const fresh = storedStatsRecord(payload);
  deliver(record.workflow, { nodeId: route.nodeId, type: route.type, update: () => fresh });
}

/** The prompt failed or was interrupted: its pack nodes that did not report keep an older panel, marked so. */
function onRunFailed(event) {
  const promptId = event.detail?.prompt_id;
  const record = records.get(promptId);
  if (!record && inFlight > 0) {
    orphans.push([onRunFailed, event]); // a run can fail before the page has the reply that names its prompt
    return;
  }
  if (!record) return;
  records.delete(promptId);
  for (const { nodeId, type } of nodesWithoutFreshStats(record)) {
    deliver(record.workflow, { nodeId, type, update: (old) => (old ? staleRecord(old) : null) });
  }
}

function onCached(event) {
  const record = records.get(event.detail?.prompt_id);
  if (!record && inFlight > 0) {
    orphans.push([onCached, event]);
    return;
  }
  for (const id of event.detail?.nodes ?? []) record?.cached.add(String(id));
}

/** Remember, for each prompt this page queues, its workflow tab and node types (api.queuePrompt(number, {output,
 * workflow}, options) in every frontend tested returns the server's {prompt_id, ...}). */
function recordQueuedPrompts() {
  const original = api.queuePrompt;
  if (typeof original !== "function" || original.speculativeVideoWrapped) return;
  const wrapped = async function (number, data, ...rest) {
    const workflow = activeWorkflow();
    inFlight += 1;
    try {
      const result = await original.call(this, number, data, ...rest);
      if (result?.prompt_id !== undefined) records.set(String(result.prompt_id), promptRecord(workflow, data?.output));
      return result;
    } finally {
      inFlight -= 1;
      const waiting = orphans;
      orphans = [];
      for (const [handler, event] of waiting) handler(event);
    }
  };
  wrapped.speculativeVideoWrapped = true;
  api.queuePrompt = wrapped;
}

app.registerExtension({
  name: "speculative_video.stats_panel",
  setup() {
    recordQueuedPrompts();
    trackGraphLoads();
    api.addEventListener(STATS_EVENT, onStats);
    api.addEventListener("execution_cached", onCached);
    api.addEventListener("execution_error", onRunFailed);
    api.addEventListener("execution_interrupted", onRunFailed);
    api.addEventListener("execution_success", (event) => records.delete(event.detail?.prompt_id));
    // Held statistics wait for their workflow tab; the frontends tested have no common tab-switch event.
    setInterval(() => { if (pending.size) flushPending(); }, 500);
  },
  // Called for every node of a workflow being loaded (a reload, opening a saved file or template).
  loadedGraphNode(node) {
    if (readStoredStats(node.properties)) ensurePanel(node);
  },
  afterConfigureGraph() {
    if (pending.size) setTimeout(flushPending, 0);
  },
});
