// Real-frontend check of the pack, driven by tests/with_server/test_e2e_comfyui.py (not a Node test file).
//
// usage: node panel_after_run.mjs <options.json>
//   {url, vue: Comfy.VueNodes.Enabled, nodeModules: folder that holds playwright-core, chromium: executable,
//    artifacts: folder for screenshots, label, timeout: s per run, packFolder, nodeSearch: {query: [display names]},
//    templates: [names], sdvgTemplate: UI workflow with its `models`,
//    dts: {workflow: UI workflow path, nodeId, prompts: [API prompt paths: run 1, run 2, run during a tab switch]},
//    sdvg: {workflow, nodeId, prompts: [run 1, run 2, a run that fails in the SDVG node]}}
// Every run is queued through the frontend's api.queuePrompt once the page's client id is known (a prompt queued
// before would send core's events to no one). What the panel shows is read from the page's canvas drawing calls:
// every fillText is recorded, so a check sees the text the panel drew, in the classic canvas and in Vue nodes
// (which draw the widget on a canvas of their own). Prints one JSON line; the Python test asserts on it.
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

import { compactStats, panelModel, STALE_NOTE } from "../../../js/stats_panel_model.js";

const options = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(options.nodeModules, "noop.js"));
const { chromium } = require("playwright-core");

const KEY = "speculative_video_stats";
const PANEL = "speculative_video_stats_panel";
const read = (file) => JSON.parse(readFileSync(file, "utf8"));
mkdirSync(options.artifacts, { recursive: true });

for (const [id, value] of Object.entries({
  "Comfy.TutorialCompleted": true,
  "Comfy.Workflow.ShowMissingModelsWarning": true,
  "Comfy.Workflow.ShowMissingNodesWarning": false,
  "Comfy.VueNodes.Enabled": !!options.vue,
  "Comfy.VueNodes.AutoScaleLayout": false,
})) {
  await fetch(`${options.url}/api/settings/${encodeURIComponent(id)}`, { method: "POST", body: JSON.stringify(value) });
}

const browser = await chromium.launch({
  executablePath: options.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { label: options.label, vue: !!options.vue, steps: {} };
const shot = (page, name) => page.screenshot({ path: path.join(options.artifacts, `${options.label}-${name}.png`) });

/** Loaded, extensions registered, a workflow tab open, and the websocket's client id known. */
const ready = (page) => page.waitForFunction(() => {
  const app = window.comfyAPI?.app?.app;
  const api = window.comfyAPI?.api?.api;
  return !!(app?.graph && app.extensions?.length > 0 && api?.clientId && api.socket?.readyState === 1 &&
    (app.extensionManager?.workflow?.activeWorkflow ?? true));
}, null, { timeout: 120000 });

/** Every text the page's canvases draw goes to window.__drawn while window.__record is true. */
const recordText = () => {
  window.__drawn = [];
  window.__record = false;
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    if (window.__record) window.__drawn.push(String(text));
    return fillText.call(this, text, ...rest);
  };
};

/** What node `id` of the graph on screen holds, and the texts drawn in a fresh frame with it centred. */
async function nodeView(page, id) {
  const state = await page.evaluate(async ({ id, KEY, PANEL }) => {
    const app = window.comfyAPI.app.app;
    const node = app.graph.getNodeById(id);
    if (node) app.canvas.centerOnNode?.(node);
    window.__drawn = [];
    window.__record = true;
    app.canvas.setDirty(true, true);
    node?.widgets?.find((w) => w.name === PANEL)?.triggerDraw?.();
    for (let frame = 0; frame < 4; frame += 1) await new Promise((r) => requestAnimationFrame(r));
    await new Promise((r) => setTimeout(r, 300));
    node?.widgets?.find((w) => w.name === PANEL)?.triggerDraw?.();
    for (let frame = 0; frame < 2; frame += 1) await new Promise((r) => requestAnimationFrame(r));
    window.__record = false;
    // Vue nodes: how far right the panel's own canvas and the node's other widget controls reach (screen pixels).
    const element = document.querySelector(`[data-node-id="${id}"] .lg-node-widgets`);
    const rights = (selector) => [...(element?.querySelectorAll(selector) ?? [])]
      .map((item) => item.getBoundingClientRect()).filter((rect) => rect.width > 0).map((rect) => rect.right);
    const panelRight = element ? Math.max(...rights("canvas")) : null;
    const controlsRight = element ? Math.max(...rights("button, input")) : null;
    return {
      reach: Number.isFinite(panelRight) && Number.isFinite(controlsRight) ? { panelRight, controlsRight } : null,
      type: node?.type ?? null,
      panel: !!node?.widgets?.some((w) => w.name === PANEL),
      stored: node?.properties?.[KEY] ?? null,
      widgetsValues: node ? node.serialize().widgets_values : null,
      drawn: window.__drawn,
      workflow: app.extensionManager?.workflow?.activeWorkflow?.path ?? null,
    };
  }, { id, KEY, PANEL });
  return state;
}

/** The panel's own lines for `stats` (title and footer), as the extension draws them. */
function expectedLines(kind, stats, stale = false) {
  const model = panelModel(kind, compactStats(kind, stats), { stale });
  return [model.title, ...model.lines, ...model.footer];
}

/** Queue `prompt` through api.queuePrompt (as the Queue button does) and wait for its end and its statistics. */
async function run(page, prompt) {
  return page.evaluate(async ({ prompt, timeout }) => {
    const app = window.comfyAPI.app.app;
    const { api } = window.comfyAPI.api;
    let promptId = null;
    const early = [];
    const stats = [];
    const ended = new Promise((resolve) => {
      const finish = (outcome) => (event) => {
        if (promptId === null) early.push([outcome, event.detail]);
        else if (event.detail?.prompt_id === promptId) resolve(outcome === "error"
          ? `error: ${JSON.stringify(event.detail).slice(0, 1500)}` : outcome);
      };
      api.addEventListener("execution_success", finish("success"));
      api.addEventListener("execution_error", finish("error"));
      api.addEventListener("execution_interrupted", finish("interrupted"));
    });
    api.addEventListener("speculative_video.stats", (event) => stats.push(event.detail));
    const response = await api.queuePrompt(0, { output: prompt, workflow: app.graph.serialize() });
    promptId = response?.prompt_id ?? null;
    if (!promptId) return { outcome: `refused: ${JSON.stringify(response)}` };
    for (const [outcome, detail] of early) {
      if (detail?.prompt_id === promptId) return { outcome, promptId };
    }
    const outcome = await Promise.race([ended, new Promise((r) => setTimeout(() => r("timeout"), timeout * 1000))]);
    return { outcome, promptId, events: stats.filter((detail) => detail.prompt_id === promptId) };
  }, { prompt, timeout: options.timeout ?? 600 });
}

/** Open `workflow` in a new tab named `name` (the frontends tested open a tab for a named loadGraphData). */
const openTab = (page, workflow, name) => page.evaluate(async ({ workflow, name }) => {
  const app = window.comfyAPI.app.app;
  await app.loadGraphData(workflow, true, true, name, { showMissingNodesDialog: false, showMissingModelsDialog: false });
  return app.extensionManager?.workflow?.activeWorkflow?.path ?? null;
}, { workflow, name });

/** Bring the open tab whose path ends with `name`.json back on screen, as a click on its tab does. */
const showTab = (page, name) => page.evaluate(async (name) => {
  const app = window.comfyAPI.app.app;
  const store = app.extensionManager.workflow;
  for (let step = 0; step < store.openWorkflows.length + 1; step += 1) {
    if (store.activeWorkflow?.path?.endsWith(`/${name}.json`)) break;
    await app.extensionManager.command.execute("Workspace.NextOpenedWorkflow");
    await new Promise((r) => setTimeout(r, 300));
  }
  await new Promise((r) => setTimeout(r, 1200)); // statistics held for this tab are applied within 0.5 s
  return store.activeWorkflow?.path ?? null;
}, name);

/** Close the dialogs on screen (templates browser, missing models, an execution error) as their close buttons do,
 * or as Escape does where the top one has no such button. Hidden dialogs stay in the DOM on some frontends (1.37
 * keeps the node search box's): only visible ones count, so the screenshots show the canvas. */
const closeDialogs = async (page) => {
  for (let i = 0; i < 5; i += 1) {
    const open = await page.evaluate(() => {
      const dialogs = [...document.querySelectorAll(".p-dialog, [role='dialog']")]
        .filter((dialog) => dialog.getClientRects().length > 0 && getComputedStyle(dialog).visibility !== "hidden");
      const top = dialogs.at(-1);
      if (!top) return "none";
      // 1.37's templates browser has an icon-only close button (pi-times) and ignores Escape.
      const button = top.querySelector(".p-dialog-close-button, .p-dialog-header-close, button[aria-label*='close' i], " +
        "button:has(> i.pi-times)");
      button?.click();
      return button ? "clicked" : "no button";
    });
    if (open === "none") return;
    if (open === "no button") await page.keyboard.press("Escape");
    await page.waitForTimeout(400);
  }
};

async function step(name, body) {
  try {
    result.steps[name] = await body();
  } catch (error) {
    result.steps[name] = { error: String(error?.stack ?? error).slice(0, 2000) };
  }
}

try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.addInitScript(recordText);
  await page.goto(options.url);
  await ready(page);
  result.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  result.extensions = await page.evaluate(() => window.comfyAPI.app.app.extensions.map((e) => e.name));

  await step("search", async () => {
    // The node search box (as a double click on the empty canvas opens it), typed into as a user does. Opened too
    // soon after the page loads, frontend 1.49 fails in its canvas store ("getCanvas: canvas is null").
    await page.waitForTimeout(3000);
    await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Workspace.SearchBox.Toggle"));
    await page.waitForTimeout(800);
    const found = [];
    for (const [query, names] of Object.entries(options.nodeSearch)) {
      await page.keyboard.press("Control+A");
      await page.keyboard.type(query, { delay: 20 });
      await page.waitForTimeout(1500);
      found.push(...await page.evaluate((names) => names.filter((name) => document.body.innerText.includes(name)),
        names));
      await shot(page, `search-${query}`);
    }
    await page.keyboard.press("Escape");
    return { found };
  });

  await step("templates", async () => {
    await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
    await page.waitForTimeout(2500);
    // The pack's entry in the templates browser's list, then its templates.
    const entry = page.getByText(options.packFolder, { exact: false }).first();
    const listed = await entry.isVisible().catch(() => false);
    if (listed) await entry.click();
    await page.waitForTimeout(1500);
    const text = await page.evaluate(() => document.body.innerText);
    await shot(page, "templates");
    await closeDialogs(page);
    return { listed, templatesShown: options.templates.filter((name) => text.includes(name)) };
  });

  await step("sdvgTemplateMissingModels", async () => {
    const workflow = read(options.sdvgTemplate);
    await page.evaluate(async (workflow) => {
      const app = window.comfyAPI.app.app;
      await app.loadGraphData(workflow, true, true, "sdvg_template_check");
    }, workflow);
    await page.waitForTimeout(2000);
    // Frontends from 1.49 on report missing models as errors of the workflow: their names are one click away.
    const details = page.getByText("View details", { exact: true }).first();
    if (await details.isVisible().catch(() => false)) {
      await details.click();
      await page.waitForTimeout(1500);
    }
    const text = await page.evaluate(() => document.body.innerText);
    await shot(page, "sdvg-template");
    // Download entries: the workflow's `models` and each node's `properties.models`, as the frontend reads them.
    const declared = [...(workflow.models ?? []), ...workflow.nodes.flatMap((node) => node.properties?.models ?? [])]
      .map((model) => model.name);
    await closeDialogs(page);
    return { declared, shown: declared.filter((name) => text.includes(name)) };
  });

  for (const kind of ["dts", "sdvg"]) {
    const spec = options[kind];
    const workflow = read(spec.workflow);
    const tab = `e2e_${kind}`;
    await step(`${kind}Runs`, async () => {
      await openTab(page, workflow, tab);
      const before = await nodeView(page, spec.nodeId);
      const runs = [];
      for (const [index, promptPath] of spec.prompts.slice(0, 2).entries()) {
        const outcome = await run(page, read(promptPath));
        const view = await nodeView(page, spec.nodeId);
        await shot(page, `${kind}-run${index + 1}`);
        const stats = outcome.events?.at(-1)?.stats;
        runs.push({ outcome, view, expected: stats ? expectedLines(kind, stats) : null });
      }
      return { before, runs };
    });
  }

  await step("failedRun", async () => {
    // The SDVG tab is on screen; a run that fails in the SDVG node leaves its earlier panel, marked as such.
    const outcome = await run(page, read(options.sdvg.prompts[2]));
    await page.waitForTimeout(500);
    await closeDialogs(page); // the execution error's dialog
    const view = await nodeView(page, options.sdvg.nodeId);
    await shot(page, "sdvg-failed");
    return { outcome, view, staleNote: STALE_NOTE };
  });

  await step("tabSwitch", async () => {
    // The DTS tab runs; mid-run another tab with the same workflow (same node ids and types) comes on screen.
    await showTab(page, "e2e_dts");
    const prompt = read(options.dts.prompts[2]);
    const queued = page.evaluate(async ({ prompt, timeout }) => {
      const app = window.comfyAPI.app.app;
      const { api } = window.comfyAPI.api;
      const ends = [];
      const stats = [];
      for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
        api.addEventListener(type, (event) => ends.push([type, event.detail?.prompt_id]));
      }
      api.addEventListener("speculative_video.stats", (event) => stats.push(event.detail));
      const { prompt_id: promptId } = await api.queuePrompt(0, { output: prompt, workflow: app.graph.serialize() });
      window.__e2eRunning = promptId;
      const deadline = Date.now() + timeout * 1000;
      while (!ends.some(([, id]) => id === promptId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      return { outcome: ends.find(([, id]) => id === promptId)?.[0] ?? "timeout", promptId,
        events: stats.filter((detail) => detail.prompt_id === promptId) };
    }, { prompt, timeout: options.timeout ?? 600 });
    await page.waitForFunction(() => !!window.__e2eRunning, null, { timeout: 60000 });
    await openTab(page, read(options.dts.workflow), "e2e_other");
    const outcome = await queued;
    await page.waitForTimeout(1200);
    const other = await nodeView(page, options.dts.nodeId);
    const otherSaved = await page.evaluate(() => {
      const workflow = window.comfyAPI.app.app.extensionManager.workflow.activeWorkflow;
      return JSON.stringify(workflow?.changeTracker?.activeState ?? workflow?.activeState ?? null);
    });
    await shot(page, "tab-other");
    const back = await showTab(page, "e2e_dts");
    const own = await nodeView(page, options.dts.nodeId);
    await shot(page, "tab-back");
    const stats = outcome.events?.at(-1)?.stats;
    return { outcome, other, otherSavedHasStats: otherSaved.includes(KEY), back, own,
      expected: stats ? expectedLines("dts", stats) : null };
  });

  await step("reload", async () => {
    await page.waitForTimeout(3000); // the frontend persists open workflows shortly after a change
    await page.reload();
    await ready(page);
    // Frontend 1.58 restores the open tabs after the page is otherwise ready.
    await page.waitForFunction(() => {
      const store = window.comfyAPI.app.app.extensionManager?.workflow;
      return !store || store.openWorkflows.some((workflow) => workflow.path?.endsWith("/e2e_dts.json"));
    }, null, { timeout: 60000 }).catch(() => null);
    await page.waitForTimeout(1500);
    await closeDialogs(page); // the restored tab's missing models
    const open = await page.evaluate(() =>
      window.comfyAPI.app.app.extensionManager.workflow.openWorkflows.map((workflow) => workflow.path));
    const active = await showTab(page, "e2e_dts");
    const dts = await nodeView(page, options.dts.nodeId);
    await shot(page, "reload-dts");
    await showTab(page, "e2e_sdvg");
    const sdvg = await nodeView(page, options.sdvg.nodeId);
    await shot(page, "reload-sdvg");
    return { open, active, dts, sdvg };
  });
  result.errors = errors;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
