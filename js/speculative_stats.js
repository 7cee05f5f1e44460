// Frontend extension: draws what DTS / SDVG did on the node that ran.
//
// The server sends STATS_EVENT (see nodes/glue/stats_events.py) when a DTS or SDVG node finishes. The panel
// is a canvas-drawn widget appended to that node; the last statistics are stored in the node's
// `properties`, which ComfyUI saves with the workflow, so the panel comes back after a page reload.
// Everything that can be computed without a canvas lives in stats_panel_model.js (tested with Node).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  PANEL_MIN_WIDTH,
  PANEL_WIDGET_NAME,
  PROPERTY_KEY,
  STATS_EVENT,
  normalizePayload,
  panelDrawOps,
  panelHeight,
  panelModel,
  panelTooltip,
  parseNodeLocator,
  readStoredStats,
  storedStatsRecord,
} from "./stats_panel_model.js";

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
  return record ? panelModel(record.kind, record.stats) : null;
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
        drawOps(ctx, panelDrawOps(model, width, y).ops);
        this.tooltip = panelTooltip(model); // ComfyUI shows a widget's tooltip on hover
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
  return widget;
}

function onStats(event) {
  const payload = normalizePayload(event.detail);
  if (!payload) return;
  const node = findNode(payload.node);
  if (!node) return; // the node was deleted, or the run came from another workflow tab
  // Wrapped as a graph change so that ComfyUI's change tracker records it: the workflow is marked modified and
  // its persisted copy (restored on page reload) includes the statistics.
  app.canvas?.emitBeforeChange?.();
  try {
    node.properties ??= {};
    node.properties[PROPERTY_KEY] = storedStatsRecord(payload);
    ensurePanel(node);
  } finally {
    app.canvas?.emitAfterChange?.();
  }
  app.graph.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "speculative_video.stats_panel",
  setup() {
    api.addEventListener(STATS_EVENT, onStats);
  },
  // Called for every node of a workflow being loaded (a reload, opening a saved file or template).
  loadedGraphNode(node) {
    if (readStoredStats(node.properties)) ensurePanel(node);
  },
});
