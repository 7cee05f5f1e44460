// Real-frontend check of the statistics panel, driven by tests/with_server/test_e2e_comfyui.py (not a Node test file).
//
// usage: node panel_after_run.mjs <options.json>
//   {url, workflow: UI workflow path, prompt: API prompt path (same node ids), nodeId, nodeModules: folder that
//    holds playwright-core, chromium: executable, timeout: s}
// Loads the workflow in ComfyUI's frontend (headless Chromium), queues the prompt with the page's client id, waits
// for the statistics event, reads the node's panel state, reloads the page and reads it again. Prints one JSON line.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const options = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(options.nodeModules, "noop.js"));
const { chromium } = require("playwright-core");

const PANEL = "speculative_video_stats_panel";
const KEY = "speculative_video_stats";

for (const [id, value] of Object.entries({
  "Comfy.TutorialCompleted": true,
  "Comfy.Workflow.ShowMissingModelsWarning": false,
  "Comfy.Workflow.ShowMissingNodesWarning": false,
})) {
  await fetch(`${options.url}/api/settings/${encodeURIComponent(id)}`, { method: "POST", body: JSON.stringify(value) });
}

const browser = await chromium.launch({
  executablePath: options.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const ready = (page) => page.waitForFunction(
  () => window.comfyAPI?.app?.app?.graph && window.comfyAPI?.app?.app?.extensions?.length > 0, null,
  { timeout: 120000 });
const nodeState = (page, id) => page.evaluate(({ id, PANEL, KEY }) => {
  const node = window.comfyAPI.app.app.graph.getNodeById(id);
  return {
    type: node?.type ?? null,
    panel: !!node?.widgets?.some((w) => w.name === PANEL),
    stored: node?.properties?.[KEY] ?? null,
    widgetsValues: node ? node.serialize().widgets_values : null,
  };
}, { id, PANEL, KEY });

try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(options.url);
  await ready(page);
  const workflow = JSON.parse(readFileSync(options.workflow, "utf8"));
  const prompt = JSON.parse(readFileSync(options.prompt, "utf8"));
  const extensions = await page.evaluate(async (workflow) => {
    const app = window.comfyAPI.app.app;
    await app.loadGraphData(workflow, true, true, null,
      { showMissingNodesDialog: false, showMissingModelsDialog: false });
    return app.extensions.map((extension) => extension.name);
  }, workflow);
  const before = await nodeState(page, options.nodeId);
  const run = await page.evaluate(async ({ prompt, timeout }) => {
    const { api } = window.comfyAPI.api;
    const stats = new Promise((resolve) => api.addEventListener("speculative_video.stats", (e) => resolve(e.detail)));
    const end = new Promise((resolve) => {
      api.addEventListener("execution_success", () => resolve("success"));
      api.addEventListener("execution_error", (e) => resolve(`error: ${JSON.stringify(e.detail).slice(0, 2000)}`));
    });
    // A prompt the server ran before would come from its cache without statistics.
    await api.fetchApi("/free", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ free_memory: true }) });
    const response = await api.fetchApi("/prompt", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, client_id: api.clientId }) });
    if (!response.ok) return { outcome: `refused: ${await response.text()}` };
    const outcome = await Promise.race([end, new Promise((r) => setTimeout(() => r("timeout"), timeout * 1000))]);
    const detail = await Promise.race([stats, new Promise((r) => setTimeout(() => r(null), 2000))]);
    return { outcome, event: detail };
  }, { prompt, timeout: options.timeout ?? 600 });
  await page.waitForTimeout(500);
  const afterRun = await nodeState(page, options.nodeId);
  // The frontend persists the open workflow (change tracker) and restores it on reload.
  await page.waitForTimeout(1500);
  await page.reload();
  await ready(page);
  await page.waitForFunction((id) => !!window.comfyAPI.app.app.graph.getNodeById(id), options.nodeId,
    { timeout: 60000 });
  await page.waitForTimeout(1000);
  const afterReload = await nodeState(page, options.nodeId);
  console.log(JSON.stringify({ extensions, before, run, afterRun, afterReload, errors }));
} finally {
  await browser.close();
}
