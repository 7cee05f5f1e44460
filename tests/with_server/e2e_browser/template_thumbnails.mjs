// Screenshots of the example workflows as the templates browser's thumbnails (<name>.jpg next to <name>.json).
//
// usage: node template_thumbnails.mjs <ComfyUI url> <folder of workflow .json files> <output folder> <node_modules>
// The server must have the pack installed (its nodes drawn, not "missing"). Each workflow is opened in the classic
// canvas with the UI chrome hidden (focus mode), every node fitted into the view and shot at 2100x1400 CSS pixels
// (wide enough for the canvas to draw the nodes' text) with a device scale of 2/7: a 600x400 JPEG, quality 80.
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [url, folder, output, nodeModules] = process.argv.slice(2);
const require = createRequire(path.join(nodeModules, "noop.js"));
const { chromium } = require("playwright-core");

for (const [id, value] of Object.entries({
  "Comfy.TutorialCompleted": true,
  "Comfy.Workflow.ShowMissingModelsWarning": false,
  "Comfy.Workflow.ShowMissingNodesWarning": false,
  "Comfy.VueNodes.Enabled": false,
  "Comfy.Minimap.Visible": false,
  "Comfy.Graph.CanvasInfo": false,
  "Comfy.Graph.CanvasMenu": false,
  "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.1,
})) {
  await fetch(`${url}/api/settings/${encodeURIComponent(id)}`, { method: "POST", body: JSON.stringify(value) });
}
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 2100, height: 1400 }, deviceScaleFactor: 0.2857 });
  await page.goto(url);
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.extensions?.length,
    null, { timeout: 120000 });
  await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Workspace.ToggleFocusMode"));
  for (const file of readdirSync(folder).filter((name) => name.endsWith(".json")).sort()) {
    const workflow = JSON.parse(readFileSync(path.join(folder, file), "utf8"));
    await page.evaluate(async (workflow) => {
      const app = window.comfyAPI.app.app;
      await app.loadGraphData(workflow, true, false, null,
        { showMissingNodesDialog: false, showMissingModelsDialog: false });
      app.canvas.deselectAll?.();
      // Fit every node, title bar included, into the view with a margin.
      const titleHeight = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
      const nodes = app.graph._nodes;
      const left = Math.min(...nodes.map((n) => n.pos[0]));
      const top = Math.min(...nodes.map((n) => n.pos[1] - titleHeight));
      const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
      const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
      const element = app.canvas.canvas;
      const [width, height] = [element.clientWidth, element.clientHeight];
      const scale = 0.94 * Math.min(width / (right - left), height / (bottom - top));
      app.canvas.ds.scale = scale;
      app.canvas.ds.offset = [(width / scale - (right - left)) / 2 - left, (height / scale - (bottom - top)) / 2 - top];
      app.canvas.setDirty(true, true);
    }, workflow);
    await page.waitForTimeout(1500);
    const target = path.join(output, file.replace(/\.json$/, ".jpg"));
    await page.screenshot({ path: target, type: "jpeg", quality: 80 });
    console.log(target);
  }
} finally {
  await browser.close();
}
