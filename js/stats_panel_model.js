// Pure logic of the statistics panel: no DOM, no ComfyUI import, so Node's test runner can load it.
//
// The server sends the event STATS_EVENT, only to the page that queued the prompt, with the payload
//   {"node": "<unique id of the node that ran>", "kind": "dts" | "sdvg", "prompt_id": "...", "stats": {...}}
// (see nodes/glue/stats_events.py). This module decides which node of which workflow it belongs to (routeStats),
// turns it into what the node keeps in its `properties` (so it survives a reload) and into a list of drawing
// operations for a canvas.

export const STATS_EVENT = "speculative_video.stats";
export const PROPERTY_KEY = "speculative_video_stats";
export const PANEL_WIDGET_NAME = "speculative_video_stats_panel";

export const COLORS = {
  background: "#1b1d22",
  border: "#3a3f4b",
  title: "#e8e8e8",
  text: "#c8c8c8",
  muted: "#8a8f99",
  accepted: "#2f8f46",
  partial: "#b58a1e",
  rejected: "#a33a3a",
  target: "#4a5466",
  cellText: "#ffffff",
  warning: "#e0b050",
  stale: "#e07a5f",
};

// Only these statistics are kept in the node's properties: they are what the panel shows, and the
// per-block timings of a long SDVG run would otherwise bloat every saved workflow.
const KEPT_STATS = {
  dts: ["calls", "evals", "rounds", "accepted", "drafted", "thresholds", "rule", "tolerances", "fine_steps",
    "draft_stride", "target_stride", "chunk", "seconds", "target_grid_calls", "parallel_target",
    "sequential_target_reasons", "warnings"],
  sdvg: ["blocks", "acceptance_rate", "seconds", "estimated_target_only_seconds",
    "estimated_speedup", "num_blocks", "tau", "warnings", "memory_plan", "target_forwards", "target_forwards_saved"],
};
// Of the memory plan, the two figures the panel compares (its per-model parts stay in the node's STRING output).
const KEPT_MEMORY_FIELDS = ["total_bytes", "available_bytes"];

/** Node types whose statistics each kind is: a payload never lands on a node of another type. */
export const KIND_NODE_TYPES = {
  dts: ["DTSSampler", "DTSKSampler"],
  sdvg: ["SDVGSpeculativeVideo"],
};
const KEPT_BLOCK_FIELDS = ["index", "score", "accepted"];

export const PANEL_LAYOUT = {
  padding: 6,
  margin: 10, // horizontal margin of the panel inside the node, as ComfyUI's widgets have
  titleHeight: 16,
  lineHeight: 14,
  cellHeight: 18,
  cellGap: 2,
  minCellWidth: 18,
  maxCellWidth: 34,
};

/** Narrowest node width (pixels) at which the panel's text lines fit. */
export const PANEL_MIN_WIDTH = 330;

/**
 * Check and normalise a statistics event payload.
 * @returns {{node: string, kind: "dts"|"sdvg", stats: object} | null} null when the payload is not ours.
 */
export function normalizePayload(payload) {
  if (!payload || typeof payload !== "object") return null;
  const { node, kind, stats } = payload;
  if (node === undefined || node === null || node === "") return null;
  if (kind !== "dts" && kind !== "sdvg") return null;
  if (!stats || typeof stats !== "object" || Array.isArray(stats)) return null;
  const promptId = payload.prompt_id === undefined || payload.prompt_id === null ? null : String(payload.prompt_id);
  return { node: String(node), kind, promptId, stats };
}

/**
 * What the page remembers of a prompt it queued: the workflow it came from (any object the page can compare with
 * the workflow on screen, e.g. the frontend's workflow tab) and the class type of every node id of the API prompt.
 */
export function promptRecord(workflow, output) {
  const types = {};
  for (const [id, entry] of Object.entries(output ?? {})) {
    if (entry && typeof entry.class_type === "string") types[id] = entry.class_type;
  }
  return { workflow, types, received: new Set(), cached: new Set() };
}

/**
 * Where a statistics payload goes:
 *   {action: "apply", nodeId, type}  onto node `nodeId` of the graph on screen, if that node has type `type`;
 *   {action: "defer", nodeId, type}  the prompt's workflow is not on screen: keep it until that workflow is;
 *   {action: "drop", reason}         not ours to draw (another page's prompt, a node of another type).
 */
export function routeStats(payload, record, activeWorkflow) {
  if (!record) return { action: "drop", reason: "the prompt was not queued from this page" };
  const type = record.types[payload.node];
  if (!KIND_NODE_TYPES[payload.kind]?.includes(type)) {
    return { action: "drop", reason: `node ${payload.node} of the prompt is ${type ?? "absent"}, not a ${payload.kind} node` };
  }
  if (record.workflow !== activeWorkflow) return { action: "defer", nodeId: payload.node, type };
  return { action: "apply", nodeId: payload.node, type };
}

/** A graph node is the target of a routed payload only when its type is the one the prompt ran. */
export function nodeMatches(node, type) {
  return !!node && (node.type === type || node.comfyClass === type);
}

/**
 * The pack's nodes of a prompt that failed or was interrupted and did not report statistics in it (a cached node
 * did not run, and kept its valid panel): their panels are from an earlier run.
 */
export function nodesWithoutFreshStats(record) {
  if (!record) return [];
  const packTypes = new Set(Object.values(KIND_NODE_TYPES).flat());
  return Object.entries(record.types)
    .filter(([id, type]) => packTypes.has(type) && !record.received.has(id) && !record.cached.has(id))
    .map(([id, type]) => ({ nodeId: id, type }));
}

/**
 * A node's unique id as the path of node ids from the root graph: "12" -> ["12"], and for a node
 * inside a subgraph, whose executed id is "<subgraph node id>:<inner id>", "12:5" -> ["12", "5"].
 */
export function parseNodeLocator(uniqueId) {
  return String(uniqueId).split(":").filter((part) => part !== "");
}

/** Keep only what the panel draws (see KEPT_STATS). */
export function compactStats(kind, stats) {
  const kept = {};
  for (const key of KEPT_STATS[kind] ?? []) {
    if (stats[key] !== undefined) kept[key] = stats[key];
  }
  if (kept.memory_plan && typeof kept.memory_plan === "object") {
    const plan = {};
    for (const field of KEPT_MEMORY_FIELDS) {
      if (kept.memory_plan[field] !== undefined) plan[field] = kept.memory_plan[field];
    }
    kept.memory_plan = plan;
  }
  if (Array.isArray(kept.warnings)) kept.warnings = kept.warnings.map(String);
  if (Array.isArray(kept.blocks)) {
    kept.blocks = kept.blocks.map((block) => {
      const small = {};
      for (const field of KEPT_BLOCK_FIELDS) {
        if (block && block[field] !== undefined) small[field] = block[field];
      }
      return small;
    });
  }
  return kept;
}

/** The value stored under node.properties[PROPERTY_KEY]: JSON-safe, survives save and reload. */
export function storedStatsRecord(normalized) {
  return { kind: normalized.kind, stats: compactStats(normalized.kind, normalized.stats) };
}

/** The stored record marked as left over from an earlier run (the node's last run failed). */
export function staleRecord(record) {
  return { ...record, stale: true };
}

/** Read back what storedStatsRecord wrote; null when absent or malformed. */
export function readStoredStats(properties) {
  const record = properties ? properties[PROPERTY_KEY] : undefined;
  if (!record || typeof record !== "object") return null;
  if (record.kind !== "dts" && record.kind !== "sdvg") return null;
  if (!record.stats || typeof record.stats !== "object") return null;
  return record;
}

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

export function formatSeconds(seconds) {
  if (!isNumber(seconds)) return "–";
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

export function formatRatio(ratio) {
  if (!isNumber(ratio)) return "–";
  return `${ratio.toFixed(ratio >= 10 ? 1 : 2)}×`;
}

export function formatPercent(fraction) {
  if (!isNumber(fraction)) return "–";
  return `${Math.round(fraction * 100)}%`;
}

/** Thresholds span 1e-4 (rms) to 1e1 (l2): three significant digits, no trailing zeros. */
export function formatThreshold(value) {
  if (!isNumber(value)) return "–";
  return String(Number(value.toPrecision(3)));
}

/**
 * A router score with as many decimals (2 to 6) as it takes to read its side of tau: a rejected 0.0664 and an
 * accepted 0.0673 against tau 0.07 read 0.066 and 0.067, not both 0.07. Without a finite tau, 2 decimals.
 */
export function formatScore(score, tau) {
  if (!isNumber(score)) return "";
  if (!isNumber(tau)) return score.toFixed(2);
  for (let decimals = 2; decimals < 6; decimals += 1) {
    const shown = Number(score.toFixed(decimals));
    if ((shown >= tau) === (score >= tau) && (shown !== tau || score === tau)) return score.toFixed(decimals);
  }
  return score.toFixed(6);
}

/** tau as the node shows it: +inf means target only, -inf draft only; finite values with up to 4 digits. */
export function formatTau(tau) {
  if (tau === Infinity || tau === "inf" || tau === "Infinity") return "+∞ (target only)";
  if (tau === -Infinity || tau === "-inf" || tau === "-Infinity") return "−∞ (draft only)";
  if (!isNumber(tau)) return "–";
  return String(Number(tau.toPrecision(4)));
}

/** Bytes in GiB (MiB below 0.1 GiB), two decimals. */
export function formatBytes(bytes) {
  if (!isNumber(bytes)) return "–";
  const gib = bytes / 2 ** 30;
  return gib >= 0.1 ? `${gib.toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(2)} MiB`;
}

/** One line per warning the run reported. */
function warningLines(stats) {
  return Array.isArray(stats.warnings) ? stats.warnings.map((warning) => `⚠ ${warning}`) : [];
}

/**
 * Colour of a DTS round's cell: every draft of the round accepted, some, or none. `drafted` is the number of
 * drafts the round made (fewer than chunk near the end of the schedule); the chunk length stands in for it when
 * the statistics do not say.
 */
export function dtsCellColor(acceptedCount, drafted) {
  if (!isNumber(acceptedCount) || acceptedCount <= 0) return COLORS.rejected;
  if (isNumber(drafted) && drafted > 0 && acceptedCount >= drafted) return COLORS.accepted;
  return COLORS.partial;
}

/**
 * What the panel shows for a DTS run.
 * Sequential calls are the model invocations one after another (latency on parallel hardware);
 * the fine schedule would have needed `fine_steps` of them.
 */
/** The round's acceptance limit for a tooltip: the tolerance rule's rtol (plus atol when set), else the
 * distance rule's threshold (runs from before the tolerance rule have no `rule`). */
function dtsRoundLimit(stats, round) {
  const thresholds = Array.isArray(stats.thresholds) ? stats.thresholds : [];
  if (stats.rule === "tolerance" && Array.isArray(stats.tolerances) && isNumber(stats.tolerances[round])) {
    const atol = isNumber(thresholds[round]) && thresholds[round] > 0
      ? ` + ${formatThreshold(thresholds[round])}` : "";
    return `, tolerance ${formatThreshold(stats.tolerances[round])} of the target's step${atol}`;
  }
  return isNumber(thresholds[round]) ? `, threshold ${formatThreshold(thresholds[round])}` : "";
}

export function dtsPanelModel(stats) {
  const accepted = Array.isArray(stats.accepted) ? stats.accepted : [];
  const rounds = isNumber(stats.rounds) ? stats.rounds : accepted.length;
  const drafted = Array.isArray(stats.drafted) ? stats.drafted : [];
  const cells = accepted.map((count, round) => ({
    label: String(count),
    color: dtsCellColor(count, isNumber(drafted[round]) ? drafted[round] : stats.chunk),
    tooltip: `round ${round + 1}: ${count} accepted` +
      (isNumber(drafted[round]) ? ` of ${drafted[round]} drafted` : "") +
      dtsRoundLimit(stats, round),
  }));
  const lines = [];
  lines.push(`rounds ${rounds} · accepted per round (of ${isNumber(stats.chunk) ? stats.chunk : "?"}):`);
  const footer = [
    `sequential calls ${isNumber(stats.calls) ? stats.calls : "–"} vs ` +
      `${isNumber(stats.fine_steps) ? stats.fine_steps : "–"} fine steps`,
  ];
  if (isNumber(stats.target_grid_calls)) {
    // The fair baseline: plain Euler on the grid DTS converges to. Above 1× DTS needed fewer sequential calls.
    const speedup = isNumber(stats.calls) && stats.calls > 0 ? `: ${formatRatio(stats.target_grid_calls / stats.calls)}` : "";
    footer.push(`vs Euler on the stride-${isNumber(stats.target_stride) ? stats.target_stride : "?"} grid ` +
      `(${stats.target_grid_calls} calls)${speedup}`);
  }
  footer.push(`evaluations ${isNumber(stats.evals) ? stats.evals : "–"} · strides ` +
    `${isNumber(stats.draft_stride) ? stats.draft_stride : "?"}/${isNumber(stats.target_stride) ? stats.target_stride : "?"}` +
    ` · ${formatSeconds(stats.seconds)}`);
  if (stats.parallel_target === false) {
    const reasons = Array.isArray(stats.sequential_target_reasons) ? stats.sequential_target_reasons : [];
    footer.push(`target one at a time${reasons.length ? ` (${reasons.join(", ")})` : ""}`);
  }
  return { title: "DTS", lines, cells, footer, warnings: warningLines(stats), minCellWidth: 18 };
}

/** Colour of an SDVG block: drafted and accepted, drafted and rejected, or made by the target without a draft. */
export function sdvgCellColor(block) {
  if (block.accepted) return COLORS.accepted;
  if (isNumber(block.score)) return COLORS.rejected;
  return COLORS.target;
}

export function sdvgPanelModel(stats) {
  const blocks = Array.isArray(stats.blocks) ? stats.blocks : [];
  const cells = blocks.map((block, position) => {
    const index = isNumber(block.index) ? block.index : position;
    const verdict = block.accepted ? "draft accepted"
      : isNumber(block.score) ? "draft rejected, target made it" : "target (no draft scored)";
    return {
      label: formatScore(block.score, stats.tau),
      color: sdvgCellColor(block),
      tooltip: `block ${index}: ${verdict}` +
        (isNumber(block.score) ? `, score ${String(Number(block.score.toPrecision(6)))}` : ""),
    };
  });
  const acceptedCount = blocks.filter((block) => block.accepted).length;
  const lines = [
    `blocks ${isNumber(stats.num_blocks) ? stats.num_blocks : blocks.length} · ` +
      `accepted ${acceptedCount} · tau ${formatTau(stats.tau)}`,
  ];
  const footer = [
    `acceptance ${formatPercent(stats.acceptance_rate)} · est. speedup ${formatRatio(stats.estimated_speedup)}`,
    `${formatSeconds(stats.seconds)} vs est. target-only ${formatSeconds(stats.estimated_target_only_seconds)}`,
  ];
  if (isNumber(stats.target_forwards_saved)) {
    footer.push(`target forwards ${isNumber(stats.target_forwards) ? stats.target_forwards : "–"} · ` +
      `saved ${stats.target_forwards_saved}`);
  }
  const plan = stats.memory_plan;
  if (plan && (isNumber(plan.total_bytes) || isNumber(plan.available_bytes))) {
    footer.push(`memory plan ${formatBytes(plan.total_bytes)} needed of ${formatBytes(plan.available_bytes)} available`);
  }
  // Wider cells than DTS: each carries a score such as "-0.066".
  return { title: "SDVG", lines, cells, footer, warnings: warningLines(stats), minCellWidth: 36 };
}

export const STALE_NOTE = "from an earlier run: the last run failed";

/** The panel's model; `stale` (the node's last run failed) says so in the title. */
export function panelModel(kind, stats, { stale = false } = {}) {
  let model;
  if (kind === "dts") model = dtsPanelModel(stats);
  else if (kind === "sdvg") model = sdvgPanelModel(stats);
  else throw new Error(`unknown statistics kind ${JSON.stringify(kind)} (expected "dts" or "sdvg")`);
  if (stale) model = { ...model, title: `${model.title} · ${STALE_NOTE}`, stale: true };
  return model;
}

/** Hover text of the panel: one line per cell (round or block), then the footer and the warnings. */
export function panelTooltip(model) {
  return [...(model.stale ? [STALE_NOTE] : []), ...model.cells.map((cell) => cell.tooltip), ...model.footer,
    ...(model.warnings ?? [])].join("\n");
}

/** Split `text` into lines of at most `maxChars` characters, at spaces where it can. */
export function wrapText(text, maxChars) {
  const lines = [];
  let line = "";
  for (const word of String(text).split(" ")) {
    let rest = word;
    while (rest.length > maxChars) {
      if (line) { lines.push(line); line = ""; }
      lines.push(rest.slice(0, maxChars));
      rest = rest.slice(maxChars);
    }
    if (!line) line = rest;
    else if (line.length + 1 + rest.length <= maxChars) line += ` ${rest}`;
    else { lines.push(line); line = rest; }
  }
  if (line) lines.push(line);
  return lines;
}

/** Warning lines wrapped to the panel's inner width (11px sans-serif: about 6 px per character). */
export function warningRows(model, innerWidth) {
  const maxChars = Math.max(10, Math.floor(innerWidth / 6));
  return (model.warnings ?? []).flatMap((warning) => wrapText(warning, maxChars));
}

/**
 * Cell grid for `count` cells in `innerWidth` pixels: as wide as fits between the min and max cell
 * width, wrapping into rows when there are more cells than fit on one line.
 */
export function cellGrid(count, innerWidth, layout = PANEL_LAYOUT) {
  if (count <= 0) return { cellWidth: 0, perRow: 0, rows: 0 };
  const { cellGap, minCellWidth, maxCellWidth } = layout;
  const fitting = Math.max(1, Math.floor((innerWidth + cellGap) / (minCellWidth + cellGap)));
  const perRow = Math.min(count, fitting);
  const cellWidth = Math.max(minCellWidth,
    Math.min(maxCellWidth, Math.floor((innerWidth + cellGap) / perRow) - cellGap));
  return { cellWidth, perRow, rows: Math.ceil(count / perRow) };
}

function layoutFor(model, layout) {
  if (!isNumber(model.minCellWidth)) return layout;
  const minCellWidth = model.minCellWidth;
  return { ...layout, minCellWidth, maxCellWidth: Math.max(layout.maxCellWidth, minCellWidth) };
}

/** Height in pixels of the panel drawn for `model` at `width`. */
export function panelHeight(model, width, layout = PANEL_LAYOUT) {
  layout = layoutFor(model, layout);
  const innerWidth = Math.max(1, width - 2 * layout.margin - 2 * layout.padding);
  const grid = cellGrid(model.cells.length, innerWidth, layout);
  return 2 * layout.padding + layout.titleHeight +
    (model.lines.length + model.footer.length + warningRows(model, innerWidth).length) * layout.lineHeight +
    grid.rows * (layout.cellHeight + layout.cellGap) + (grid.rows > 0 ? layout.cellGap : 0);
}

/**
 * The panel as drawing operations, in node coordinates, starting at y = `top`:
 *   {op: "rect", x, y, w, h, fill, stroke?} and {op: "text", x, y, text, color, font, align}
 * (text y is the baseline). Keeping this pure lets tests check the layout without a canvas.
 */
export function panelDrawOps(model, width, top, layout = PANEL_LAYOUT) {
  layout = layoutFor(model, layout);
  const ops = [];
  const height = panelHeight(model, width, layout);
  const left = layout.margin;
  const panelWidth = Math.max(1, width - 2 * layout.margin);
  const innerLeft = left + layout.padding;
  const innerWidth = Math.max(1, panelWidth - 2 * layout.padding);
  ops.push({ op: "rect", x: left, y: top, w: panelWidth, h: height, fill: COLORS.background, stroke: COLORS.border });
  let y = top + layout.padding;
  ops.push({ op: "text", x: innerLeft, y: y + layout.titleHeight - 4, text: model.title,
    color: model.stale ? COLORS.stale : COLORS.title, font: "bold 12px sans-serif", align: "left" });
  y += layout.titleHeight;
  for (const line of model.lines) {
    ops.push({ op: "text", x: innerLeft, y: y + layout.lineHeight - 3, text: line,
      color: COLORS.text, font: "11px sans-serif", align: "left" });
    y += layout.lineHeight;
  }
  const grid = cellGrid(model.cells.length, innerWidth, layout);
  if (grid.rows > 0) y += layout.cellGap;
  model.cells.forEach((cell, index) => {
    const column = index % grid.perRow;
    const row = Math.floor(index / grid.perRow);
    const x = innerLeft + column * (grid.cellWidth + layout.cellGap);
    const cellTop = y + row * (layout.cellHeight + layout.cellGap);
    ops.push({ op: "rect", x, y: cellTop, w: grid.cellWidth, h: layout.cellHeight, fill: cell.color });
    if (cell.label) {
      ops.push({ op: "text", x: x + grid.cellWidth / 2, y: cellTop + layout.cellHeight - 5, text: cell.label,
        color: COLORS.cellText, font: grid.cellWidth < 26 ? "8px sans-serif" : "9px sans-serif", align: "center" });
    }
  });
  y += grid.rows * (layout.cellHeight + layout.cellGap);
  for (const line of model.footer) {
    ops.push({ op: "text", x: innerLeft, y: y + layout.lineHeight - 3, text: line,
      color: COLORS.muted, font: "11px sans-serif", align: "left" });
    y += layout.lineHeight;
  }
  for (const line of warningRows(model, innerWidth)) {
    ops.push({ op: "text", x: innerLeft, y: y + layout.lineHeight - 3, text: line,
      color: COLORS.warning, font: "11px sans-serif", align: "left" });
    y += layout.lineHeight;
  }
  return { ops, height };
}
