// Tests of the statistics panel's pure logic. Run: node --test tests/js/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import {
  COLORS,
  PANEL_LAYOUT,
  PANEL_MIN_WIDTH,
  PROPERTY_KEY,
  STATS_EVENT,
  cellGrid,
  compactStats,
  dtsCellColor,
  dtsPanelModel,
  formatRatio,
  formatSeconds,
  formatTau,
  normalizePayload,
  panelDrawOps,
  panelHeight,
  panelModel,
  panelTooltip,
  parseNodeLocator,
  formatThreshold,
  KIND_NODE_TYPES,
  STALE_NOTE,
  formatBytes,
  formatScore,
  nodeMatches,
  nodesWithoutFreshStats,
  promptRecord,
  routeStats,
  staleRecord,
  warningRows,
  wrapText,
  readStoredStats,
  sdvgCellColor,
  sdvgPanelModel,
  storedStatsRecord,
} from "../../js/stats_panel_model.js";

const DTS_STATS = {
  calls: 34, evals: 260, rounds: 4, accepted: [6, 6, 3, 0], thresholds: [10, 11.5, 13, 14.5],
  fine_steps: 100, draft_stride: 10, target_stride: 2, chunk: 6, seconds: 12.5, target_grid_calls: 50,
  parallel_target: true, sequential_target_reasons: [],
};
const SDVG_STATS = {
  blocks: [
    { index: 0, score: null, accepted: false, drafter_seconds: 0, router_seconds: 0, target_seconds: 3.1, decode_seconds: 0.4 },
    { index: 1, score: 0.42, accepted: true, drafter_seconds: 0.5, router_seconds: 1.2, target_seconds: 0, decode_seconds: 0.4 },
    { index: 2, score: -1.25, accepted: false, drafter_seconds: 0.5, router_seconds: 1.2, target_seconds: 3.0, decode_seconds: 0.4 },
  ],
  acceptance_rate: 0.5, seconds: 11.7, estimated_target_only_seconds: 10.5, estimated_speedup: 0.9,
  num_blocks: 3, tau: -0.7,
};

test("event name matches the server's STATS_EVENT in nodes/glue/stats_events.py", () => {
  const python = readFileSync(new URL("../../nodes/glue/stats_events.py", import.meta.url), "utf8");
  assert.match(python, new RegExp(`STATS_EVENT = "${STATS_EVENT.replace(".", "\\.")}"`));
});

test("normalizePayload accepts a dts payload and stringifies the node id", () => {
  assert.deepEqual(normalizePayload({ node: 7, kind: "dts", stats: DTS_STATS }),
    { node: "7", kind: "dts", promptId: null, stats: DTS_STATS });
  assert.equal(normalizePayload({ node: 7, kind: "dts", prompt_id: "p-1", stats: DTS_STATS }).promptId, "p-1");
});

test("normalizePayload rejects unknown kinds, missing node ids and non-object stats", () => {
  assert.equal(normalizePayload({ node: "7", kind: "other", stats: {} }), null);
  assert.equal(normalizePayload({ kind: "dts", stats: {} }), null);
  assert.equal(normalizePayload({ node: "", kind: "dts", stats: {} }), null);
  assert.equal(normalizePayload({ node: "7", kind: "sdvg", stats: [1, 2] }), null);
  assert.equal(normalizePayload(null), null);
});

test("parseNodeLocator splits subgraph ids into a path from the root graph", () => {
  assert.deepEqual(parseNodeLocator("12"), ["12"]);
  assert.deepEqual(parseNodeLocator("12:5"), ["12", "5"]);
  assert.deepEqual(parseNodeLocator(3), ["3"]);
});

test("stored record survives a JSON round trip, as the workflow's properties do on reload", () => {
  const record = storedStatsRecord(normalizePayload({ node: "3", kind: "sdvg", stats: SDVG_STATS }));
  const properties = JSON.parse(JSON.stringify({ [PROPERTY_KEY]: record }));
  assert.deepEqual(readStoredStats(properties), record);
  assert.deepEqual(panelModel("sdvg", readStoredStats(properties).stats), panelModel("sdvg", record.stats));
});

test("compactStats keeps each block's index, score and decision but not its timings", () => {
  const compact = compactStats("sdvg", SDVG_STATS);
  assert.deepEqual(compact.blocks[1], { index: 1, score: 0.42, accepted: true });
  assert.equal(compact.acceptance_rate, 0.5);
});

test("compactStats drops keys the panel does not draw", () => {
  assert.deepEqual(Object.keys(compactStats("dts", { ...DTS_STATS, extra: [1, 2, 3] })).sort(),
    Object.keys(DTS_STATS).sort());
});

test("readStoredStats returns null for absent or malformed records", () => {
  assert.equal(readStoredStats(undefined), null);
  assert.equal(readStoredStats({}), null);
  assert.equal(readStoredStats({ [PROPERTY_KEY]: { kind: "x", stats: {} } }), null);
  assert.equal(readStoredStats({ [PROPERTY_KEY]: { kind: "dts" } }), null);
});

test("dts panel has one cell per round labelled with its accepted count", () => {
  const model = dtsPanelModel(DTS_STATS);
  assert.deepEqual(model.cells.map((cell) => cell.label), ["6", "6", "3", "0"]);
});

test("dts cell colour follows the drafts the round made, not the chunk length", () => {
  const model = dtsPanelModel({ ...DTS_STATS, accepted: [6, 2, 0], drafted: [6, 2, 1], rounds: 3 });
  assert.deepEqual(model.cells.map((cell) => cell.color), [COLORS.accepted, COLORS.accepted, COLORS.rejected]);
  assert.equal(model.cells[1].tooltip, "round 2: 2 accepted of 2 drafted, threshold 11.5");
});

test("dts cell colour: whole chunk accepted, part of it, none", () => {
  assert.equal(dtsCellColor(6, 6), COLORS.accepted);
  assert.equal(dtsCellColor(3, 6), COLORS.partial);
  assert.equal(dtsCellColor(0, 6), COLORS.rejected);
});

test("dts footer compares sequential calls with the fine schedule", () => {
  const model = dtsPanelModel(DTS_STATS);
  assert.equal(model.footer[0], "sequential calls 34 vs 100 fine steps");
});

test("dts footer gives the call ratio against Euler on the target grid", () => {
  assert.equal(dtsPanelModel(DTS_STATS).footer[1], "vs Euler on the stride-2 grid (50 calls): 1.47×");
});

test("dts footer says why the target ran one position at a time", () => {
  const model = dtsPanelModel({ ...DTS_STATS, parallel_target: false, sequential_target_reasons: ["ControlNet"] });
  assert.equal(model.footer.at(-1), "target one at a time (ControlNet)");
});

test("dts cell tooltip carries the tolerance rule's rtol, and atol when set", () => {
  const stats = { ...DTS_STATS, rule: "tolerance", tolerances: [0.01, 0.0113, 0.0127, 0.014],
    thresholds: [0, 0, 0, 0] };
  assert.equal(dtsPanelModel(stats).cells[1].tooltip, "round 2: 6 accepted, tolerance 0.0113 of the target's step");
  const withAtol = { ...stats, thresholds: [0.002, 0.002, 0.002, 0.002] };
  assert.equal(dtsPanelModel(withAtol).cells[0].tooltip,
    "round 1: 6 accepted, tolerance 0.01 of the target's step + 0.002");
});

test("dts cell tooltip carries the round's threshold", () => {
  assert.equal(dtsPanelModel(DTS_STATS).cells[1].tooltip, "round 2: 6 accepted, threshold 11.5");
});

test("dts panel tolerates missing statistics", () => {
  const model = dtsPanelModel({});
  assert.equal(model.cells.length, 0);
  assert.equal(model.footer[0], "sequential calls – vs – fine steps");
});

test("sdvg panel has one cell per block labelled with its score", () => {
  assert.deepEqual(sdvgPanelModel(SDVG_STATS).cells.map((cell) => cell.label), ["", "0.42", "-1.25"]);
});

test("sdvg cell colour: accepted draft, rejected draft, target without a scored draft", () => {
  assert.equal(sdvgCellColor({ accepted: true, score: 0.1 }), COLORS.accepted);
  assert.equal(sdvgCellColor({ accepted: false, score: -2 }), COLORS.rejected);
  assert.equal(sdvgCellColor({ accepted: false, score: null }), COLORS.target);
});

test("sdvg footer shows acceptance rate and estimated speedup", () => {
  assert.equal(sdvgPanelModel(SDVG_STATS).footer[0], "acceptance 50% · est. speedup 0.90×");
});

test("tau shows the baselines by name, whether it arrives as a number or as a string", () => {
  assert.equal(formatTau(Infinity), "+∞ (target only)");
  assert.equal(formatTau("inf"), "+∞ (target only)");
  assert.equal(formatTau("-inf"), "−∞ (draft only)");
  assert.equal(formatTau(-0.7), "-0.7");
  assert.equal(formatTau(0.07), "0.07");
  assert.equal(formatTau(0.123456), "0.1235");
});

test("formatSeconds and formatRatio switch precision with magnitude", () => {
  assert.equal(formatSeconds(1.234), "1.23 s");
  assert.equal(formatSeconds(45.67), "45.7 s");
  assert.equal(formatSeconds(125), "2 min 5 s");
  assert.equal(formatRatio(2.944), "2.94×");
  assert.equal(formatRatio(12.34), "12.3×");
  assert.equal(formatRatio(undefined), "–");
});

test("panelModel refuses an unknown kind", () => {
  assert.throws(() => panelModel("other", {}), /unknown statistics kind/);
});

test("cellGrid wraps into rows when cells do not fit at the minimum width", () => {
  const grid = cellGrid(100, 200, PANEL_LAYOUT);
  assert.equal(grid.perRow, Math.floor((200 + PANEL_LAYOUT.cellGap) / (PANEL_LAYOUT.minCellWidth + PANEL_LAYOUT.cellGap)));
  assert.equal(grid.rows, Math.ceil(100 / grid.perRow));
});

test("cellGrid keeps few cells on one row no wider than the maximum cell width", () => {
  const grid = cellGrid(3, 300, PANEL_LAYOUT);
  assert.equal(grid.rows, 1);
  assert.equal(grid.cellWidth, PANEL_LAYOUT.maxCellWidth);
});

test("every drawn cell lies inside the panel, for many rounds at the minimum width", () => {
  const many = { ...DTS_STATS, accepted: Array.from({ length: 50 }, (_, i) => i % 7), rounds: 50 };
  const model = dtsPanelModel(many);
  const top = 100;
  const { ops, height } = panelDrawOps(model, PANEL_MIN_WIDTH, top);
  const panel = ops[0];
  assert.equal(panel.h, height);
  const cells = ops.filter((op) => op.op === "rect").slice(1);
  assert.equal(cells.length, 50);
  for (const cell of cells) {
    assert.ok(cell.x >= panel.x && cell.x + cell.w <= panel.x + panel.w, `cell x ${cell.x}+${cell.w} outside`);
    assert.ok(cell.y >= top && cell.y + cell.h <= top + height, `cell y ${cell.y}+${cell.h} outside`);
  }
});

test("panel height grows with the number of cell rows", () => {
  const few = dtsPanelModel(DTS_STATS);
  const many = dtsPanelModel({ ...DTS_STATS, accepted: Array(60).fill(1) });
  assert.ok(panelHeight(many, PANEL_MIN_WIDTH) > panelHeight(few, PANEL_MIN_WIDTH));
});

test("draw ops contain every text line of the model in order", () => {
  const model = sdvgPanelModel(SDVG_STATS);
  const texts = panelDrawOps(model, 400, 0).ops.filter((op) => op.op === "text").map((op) => op.text);
  const expected = [model.title, ...model.lines, ...model.cells.map((c) => c.label).filter(Boolean), ...model.footer];
  assert.deepEqual(texts, expected);
});

test("the extension imports only names that the model module exports", async () => {
  const source = readFileSync(new URL("../../js/speculative_stats.js", import.meta.url), "utf8");
  const match = source.match(/import\s*\{([^}]*)\}\s*from\s*"\.\/stats_panel_model\.js"/);
  assert.ok(match, "speculative_stats.js must import from ./stats_panel_model.js");
  const model = await import("../../js/stats_panel_model.js");
  const names = match[1].split(",").map((name) => name.trim()).filter(Boolean);
  assert.ok(names.length > 0);
  for (const name of names) assert.ok(name in model, `${name} is not exported by stats_panel_model.js`);
});

test("the extension imports ComfyUI's app and api through the paths extensions are served from", () => {
  const source = readFileSync(new URL("../../js/speculative_stats.js", import.meta.url), "utf8");
  assert.match(source, /from "\.\.\/\.\.\/scripts\/app\.js"/);
  assert.match(source, /from "\.\.\/\.\.\/scripts\/api\.js"/);
});

test("tooltip lists every round, then the footer", () => {
  const model = dtsPanelModel(DTS_STATS);
  const lines = panelTooltip(model).split("\n");
  assert.equal(lines.length, model.cells.length + model.footer.length);
  assert.equal(lines[0], "round 1: 6 accepted, threshold 10");
});

test("formatThreshold keeps small rms thresholds readable", () => {
  assert.equal(formatThreshold(0.0002), "0.0002");
  assert.equal(formatThreshold(0.00030000000000000003), "0.0003");
  assert.equal(formatThreshold(11.5), "11.5");
});


// --- routing: statistics land only on the node of the prompt's own workflow, of the type that ran -------------

const WORKFLOW_A = { path: "workflows/a.json" };
const WORKFLOW_B = { path: "workflows/b.json" };
const OUTPUT = {
  "3": { class_type: "DTSSampler", inputs: {} },
  "5": { class_type: "PrimitiveString", inputs: {} },
  "9": { class_type: "SDVGSpeculativeVideo", inputs: {} },
  "12:4": { class_type: "DTSKSampler", inputs: {} },
};

test("promptRecord keeps the class type of every node id of the queued prompt", () => {
  const record = promptRecord(WORKFLOW_A, OUTPUT);
  assert.equal(record.workflow, WORKFLOW_A);
  assert.deepEqual(record.types, { "3": "DTSSampler", "5": "PrimitiveString", "9": "SDVGSpeculativeVideo",
    "12:4": "DTSKSampler" });
});

test("routeStats applies a payload on screen only to the prompt's node of a matching type", () => {
  const record = promptRecord(WORKFLOW_A, OUTPUT);
  assert.deepEqual(routeStats({ node: "3", kind: "dts" }, record, WORKFLOW_A),
    { action: "apply", nodeId: "3", type: "DTSSampler" });
  assert.deepEqual(routeStats({ node: "12:4", kind: "dts" }, record, WORKFLOW_A),
    { action: "apply", nodeId: "12:4", type: "DTSKSampler" });
  assert.deepEqual(routeStats({ node: "9", kind: "sdvg" }, record, WORKFLOW_A),
    { action: "apply", nodeId: "9", type: "SDVGSpeculativeVideo" });
});

test("routeStats keeps a payload for later while another workflow tab is on screen", () => {
  const record = promptRecord(WORKFLOW_A, OUTPUT);
  assert.deepEqual(routeStats({ node: "3", kind: "dts" }, record, WORKFLOW_B),
    { action: "defer", nodeId: "3", type: "DTSSampler" });
});

test("routeStats drops payloads of prompts this page did not queue and of nodes of another type", () => {
  const record = promptRecord(WORKFLOW_A, OUTPUT);
  assert.equal(routeStats({ node: "3", kind: "dts" }, undefined, WORKFLOW_A).action, "drop");
  assert.equal(routeStats({ node: "5", kind: "dts" }, record, WORKFLOW_A).action, "drop"); // a string Primitive
  assert.equal(routeStats({ node: "9", kind: "dts" }, record, WORKFLOW_A).action, "drop"); // kind of another node
  assert.equal(routeStats({ node: "3", kind: "sdvg" }, record, WORKFLOW_A).action, "drop");
  assert.equal(routeStats({ node: "77", kind: "dts" }, record, WORKFLOW_A).action, "drop"); // not in the prompt
});

test("nodeMatches checks the node on screen has the type the prompt ran", () => {
  assert.equal(nodeMatches({ type: "DTSSampler" }, "DTSSampler"), true);
  assert.equal(nodeMatches({ type: "PrimitiveString" }, "DTSSampler"), false);
  assert.equal(nodeMatches(null, "DTSSampler"), false);
  assert.deepEqual(KIND_NODE_TYPES.sdvg, ["SDVGSpeculativeVideo"]);
});

test("nodesWithoutFreshStats names the pack's nodes of a failed prompt that neither reported nor came from cache", () => {
  const record = promptRecord(WORKFLOW_A, OUTPUT);
  record.received.add("3");
  assert.deepEqual(nodesWithoutFreshStats(record),
    [{ nodeId: "9", type: "SDVGSpeculativeVideo" }, { nodeId: "12:4", type: "DTSKSampler" }]);
  record.cached.add("12:4");
  assert.deepEqual(nodesWithoutFreshStats(record), [{ nodeId: "9", type: "SDVGSpeculativeVideo" }]);
  assert.deepEqual(nodesWithoutFreshStats(undefined), []);
});

test("a stale record reads back and its panel says it is from an earlier run", () => {
  const record = staleRecord(storedStatsRecord(normalizePayload({ node: "3", kind: "dts", stats: DTS_STATS })));
  const stored = readStoredStats(JSON.parse(JSON.stringify({ [PROPERTY_KEY]: record })));
  assert.equal(stored.stale, true);
  const model = panelModel(stored.kind, stored.stats, { stale: stored.stale });
  assert.equal(model.title, `DTS · ${STALE_NOTE}`);
  assert.equal(panelTooltip(model).split("\n")[0], STALE_NOTE);
  assert.equal(panelModel("dts", DTS_STATS).title, "DTS");
  // A fresh record (what a successful run stores) has no stale flag.
  assert.equal(storedStatsRecord(normalizePayload({ node: "3", kind: "dts", stats: DTS_STATS })).stale, undefined);
});

// --- the new fields ------------------------------------------------------------------------------------------

test("formatScore gives the digits that put a score on its side of tau", () => {
  assert.equal(formatScore(0.0664, 0.07), "0.066");
  assert.equal(formatScore(0.0673, 0.07), "0.067");
  assert.equal(formatScore(0.0701, 0.07), "0.0701");
  assert.equal(formatScore(0.07, 0.07), "0.07");
  assert.equal(formatScore(0.42, 0.07), "0.42");
  assert.equal(formatScore(-1.25, -0.7), "-1.25");
  assert.equal(formatScore(0.5, Infinity), "0.50");
  assert.equal(formatScore(null, 0.07), "");
});

test("sdvg cells against tau 0.07: a rejected 0.0664 and an accepted 0.0673 read apart", () => {
  const model = sdvgPanelModel({ tau: 0.07, blocks: [{ index: 0, score: 0.0664, accepted: false },
    { index: 1, score: 0.0713, accepted: true }] });
  assert.deepEqual(model.cells.map((cell) => cell.label), ["0.066", "0.071"]);
  assert.match(model.cells[0].tooltip, /score 0\.0664$/);
  assert.match(model.lines[0], /tau 0\.07$/);
});

test("sdvg panel shows warnings, the memory plan and target forwards saved when the stats hold them", () => {
  const warning = "drafter: self_forcing without a window over 30 latent frames, past the 21 Self-Forcing was trained on";
  const stats = { ...SDVG_STATS, warnings: [warning], target_forwards: 11, target_forwards_saved: 6,
    memory_plan: { total_bytes: 3 * 2 ** 30, available_bytes: 7.5 * 2 ** 30, activation_bytes: 5, models: { a: 1 } } };
  const compact = compactStats("sdvg", stats);
  assert.deepEqual(compact.memory_plan, { total_bytes: 3 * 2 ** 30, available_bytes: 7.5 * 2 ** 30 });
  assert.deepEqual(compact.warnings, [warning]);
  const model = sdvgPanelModel(compact);
  assert.ok(model.footer.includes("memory plan 3.00 GiB needed of 7.50 GiB available"), model.footer);
  assert.ok(model.footer.includes("target forwards 11 · saved 6"), model.footer);
  assert.deepEqual(model.warnings, [`⚠ ${warning}`]);
  // Drawn: every word of the warning appears in the panel's text ops, wrapped within the panel.
  const { ops, height } = panelDrawOps(model, PANEL_MIN_WIDTH, 0);
  const text = ops.filter((op) => op.op === "text" && op.color === COLORS.warning).map((op) => op.text);
  assert.equal(text.join(" "), `⚠ ${warning}`);
  assert.ok(text.length > 1);
  assert.equal(height, panelHeight(model, PANEL_MIN_WIDTH));
  assert.ok(panelTooltip(model).endsWith(`⚠ ${warning}`));
  // Without the new keys the footer is what it was.
  assert.equal(sdvgPanelModel(SDVG_STATS).footer.length, 2);
  assert.deepEqual(sdvgPanelModel(SDVG_STATS).warnings, []);
});

test("dts panel shows warnings when the stats hold them", () => {
  const model = dtsPanelModel({ ...DTS_STATS, warnings: ["w1"] });
  assert.deepEqual(model.warnings, ["⚠ w1"]);
  assert.equal(panelHeight(model, 400) - panelHeight(dtsPanelModel(DTS_STATS), 400), PANEL_LAYOUT.lineHeight);
});

test("formatBytes switches to MiB below a tenth of a GiB", () => {
  assert.equal(formatBytes(2 ** 30 * 28.5), "28.50 GiB");
  assert.equal(formatBytes(2 ** 20 * 12), "12.00 MiB");
  assert.equal(formatBytes(undefined), "–");
});

test("wrapText breaks at spaces and splits words longer than a line", () => {
  assert.deepEqual(wrapText("aa bb cc", 5), ["aa bb", "cc"]);
  assert.deepEqual(wrapText("abcdefgh", 3), ["abc", "def", "gh"]);
  assert.deepEqual(warningRows({ warnings: [] }, 300), []);
});
