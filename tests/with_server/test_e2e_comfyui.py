"""End-to-end: the pack in a real ComfyUI server, driven over HTTP and the websocket like the frontend drives it.

Runs when COMFYUI_PATH is set (marked `comfyui`, `slow`). The suite
- creates a base directory with tiny models: Wan 2.1 T2V DiTs of dim 128 and 256 (ComfyUI's own detection loads
  them as WAN21_T2V), a random-weight Wan 2.1 VAE (full architecture: ComfyUI has no smaller one), and a tiny
  random ImageReward folder (weights + med_config.json + vocab.txt + tokenizer_config.json, as users install it);
- links the pack (and tests/with_server/e2e_nodes/, a test-only conditioning node) into its custom_nodes/, starts
  `main.py --cpu` on a loopback port in 8305..8309, and stops it at the end;
- checks /object_info, the import log, the served extension and templates;
- converts each example workflow from UI to API format against the live /object_info (so the core nodes' widget
  values are validated too), points it at the tiny models, runs it, waits on /history, checks success and the output
  file, and checks the statistics event the frontend panel listens for. Each workflow's wall time is printed;
- optionally (Chromium and playwright-core present, see browser_tools) opens the real frontend, runs a workflow
  from the page and checks the statistics panel, also after a page reload.

Substitutions (no tiny text encoder exists): every CLIPTextEncode becomes SpeculativeVideoTestConditioning (random
CONDITIONING of umT5's shape [1, 512, 4096]) and the CLIPLoader goes. In dts_ksampler_sd15 the SD 1.5 checkpoint
(UNet + CLIP + VAE in one file; the smallest UNet ComfyUI detects as SD 1.5 is the full 860M one) is replaced by the
tiny Wan DiT and the Wan VAE; the rest of that graph (EmptyLatentImage, DTS KSampler with cfg, VAEDecode, SaveImage)
runs as shipped. Sizes are cut to 64x64 and 12 fine steps instead of 100.
"""
import asyncio
import json
import os
import shutil
import time
from urllib.parse import quote

import pytest

from scripts.tiny_comfyui_models import SDVG_TARGET_WAN
from support import e2e as e2e_support
# Imported before ComfyUI: its nodes.py puts ComfyUI/comfy on sys.path, where `samplers` would then mean
# comfy/samplers.py instead of this repo's samplers/ package (which these support modules import).
from support import reward as reward_support
from support import sdvg as sdvg_support
from support.e2e import drop_unreferenced, history_error, link_into, output_files, ui_to_api
from support import REPO
from support.workflows import DTS_SD15, DTS_WAN, SDVG


PACK_FOLDER = "comfyui-speculative-video"
TEST_NODES_FOLDER = "speculative_video_e2e_nodes"
WORKFLOWS = (DTS_WAN, DTS_SD15, SDVG)
PACK_NODE_IDS = {"DTSSampler", "DTSKSampler", "SDVGSpeculativeVideo", "LoadImageRewardRouter", "ImageRewardScore",
                 "LoadCausalWanCheckpoint"}
OUTPUT_NODE_TYPES = {"SaveVideo", "SaveImage", "SaveAnimatedWEBP", "PreviewImage", "PreviewAny"}
STATS_EVENT = "speculative_video.stats"

DRAFTER_FILE = "e2e_tiny_wan_dim128.safetensors"
TARGET_FILE = "e2e_tiny_wan_dim256.safetensors"
VAE_FILE = "e2e_wan21_vae_random.safetensors"
IMAGE_REWARD_FILE = "ImageReward.safetensors"
FINE_STEPS = 12  # instead of 100: the graphs are the same, the run stays short
SIZE = 64
WALL_TIMES = {}


def write_models(models_dir):
    """Tiny checkpoints in ComfyUI's folder layout (see module docstring)."""
    os.makedirs(os.path.join(models_dir, "diffusion_models"), exist_ok=True)
    os.makedirs(os.path.join(models_dir, "vae"), exist_ok=True)
    sdvg_support.write_tiny_wan(os.path.join(models_dir, "diffusion_models", DRAFTER_FILE), dim=128, ffn_dim=256,
                                seed=1)
    sdvg_support.write_tiny_wan(os.path.join(models_dir, "diffusion_models", TARGET_FILE), **SDVG_TARGET_WAN)
    sdvg_support.write_random_wan21_vae(os.path.join(models_dir, "vae", VAE_FILE), seed=0)
    reward_support.write_image_reward_folder(os.path.join(models_dir, "image_reward"), config=reward_support.TINY,
                                             weights_name=IMAGE_REWARD_FILE)


@pytest.fixture(scope="module")
def server(comfy_nodes, tmp_path_factory):
    """A ComfyUI server of our own with the pack and the tiny models; stopped when the module's tests are done.

    `comfy_nodes` imports ComfyUI in this process on the CPU (the model writers use its modules)."""
    base = tmp_path_factory.mktemp("e2e-comfyui")
    write_models(os.path.join(base, "models"))
    link_into(os.path.join(base, "custom_nodes"), REPO, PACK_FOLDER)
    link_into(os.path.join(base, "custom_nodes"), os.path.join(REPO, "tests", "with_server", "e2e_nodes"), TEST_NODES_FOLDER)
    # SPECULATIVE_VIDEO_FRONTEND_ROOT: serve another frontend (e.g. the newest comfyui-frontend-package's static/)
    frontend = os.environ.get("SPECULATIVE_VIDEO_FRONTEND_ROOT")
    instance = e2e_support.ComfyUIServer(os.environ["COMFYUI_PATH"], base, e2e_support.free_port(),
                                         extra_args=["--front-end-root", frontend] if frontend else ())
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(os.path.join(base, "models"), ignore_errors=True)  # 260 MB, mostly the VAE


@pytest.fixture(scope="module")
def object_info(server):
    return server.get_json("/object_info")


def load_example(name):
    with open(os.path.join(REPO, "example_workflows", name + ".json"), encoding="utf-8") as handle:
        return json.load(handle)


def replace_text_encoders(prompt):
    """CLIPTextEncode -> SpeculativeVideoTestConditioning (same prompt text, a seed per node); loaders go later."""
    for seed, (node_id, entry) in enumerate(sorted(prompt.items())):
        if entry["class_type"] == "CLIPTextEncode":
            prompt[node_id] = {"class_type": "SpeculativeVideoTestConditioning",
                               "inputs": {"text": entry["inputs"]["text"], "seed": seed, "tokens": 512,
                                          "width": 4096}}
    return prompt


def rewire(prompt, source, replacement):
    """Point every input linked to output `source` ([node id, slot]) at `replacement`."""
    for entry in prompt.values():
        for name, value in entry["inputs"].items():
            if value == source:
                entry["inputs"][name] = replacement


def first_of(prompt, class_type):
    return next(node_id for node_id, entry in prompt.items() if entry["class_type"] == class_type)


def tiny_dts_options():
    # 12 fine steps: drafts of 4, targets of 2, 3 drafts per round -> a few rounds with accept and reject.
    return {"draft_stride": 4, "target_stride": 2, "chunk": 3}


def api_prompt(name, object_info):
    """The example workflow `name` in API format, pointed at the tiny models (see the module docstring)."""
    workflow = load_example(name)
    if name == DTS_WAN:
        prompt = ui_to_api(workflow, object_info, overrides={
            "UNETLoader": {"unet_name": DRAFTER_FILE, "weight_dtype": "default"},
            "VAELoader": {"vae_name": VAE_FILE},
            "EmptyHunyuanLatentVideo": {"width": SIZE, "height": SIZE, "length": 5},
            "BasicScheduler": {"steps": FINE_STEPS},
            "DTSSampler": tiny_dts_options(),
            "SaveVideo": {"filename_prefix": "e2e/dts_wan21"},
        })
    elif name == DTS_SD15:
        prompt = ui_to_api(workflow, object_info, overrides={
            "EmptyLatentImage": {"width": SIZE, "height": SIZE},
            "DTSKSampler": {"steps": FINE_STEPS, **tiny_dts_options()},
            "SaveImage": {"filename_prefix": "e2e/dts_sd15"},
        })
        checkpoint = first_of(prompt, "CheckpointLoaderSimple")
        prompt["900"] = {"class_type": "UNETLoader", "inputs": {"unet_name": DRAFTER_FILE, "weight_dtype": "default"}}
        prompt["901"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}}
        rewire(prompt, [checkpoint, 0], ["900", 0])
        rewire(prompt, [checkpoint, 2], ["901", 0])
    elif name == SDVG:
        prompt = ui_to_api(workflow, object_info, overrides={
            "VAELoader": {"vae_name": VAE_FILE},
            "LoadImageRewardRouter": {"model_name": IMAGE_REWARD_FILE, "device": "cpu", "dtype": "fp32"},
            "SDVGSpeculativeVideo": {"width": SIZE, "height": SIZE, "num_blocks": 3, "frames_per_block": 1,
                                     "tau": 0.0},
            "SaveVideo": {"filename_prefix": "e2e/sdvg"},
        })
        drafter, target = first_of(prompt, "LoadCausalWanCheckpoint"), first_of(prompt, "UNETLoader")
        sdvg = prompt[first_of(prompt, "SDVGSpeculativeVideo")]
        assert sdvg["inputs"]["drafter"][0] == drafter and sdvg["inputs"]["target"][0] == target
        prompt[drafter]["inputs"]["unet_name"] = DRAFTER_FILE
        prompt[target]["inputs"]["unet_name"] = TARGET_FILE
    else:
        raise KeyError(name)
    return drop_unreferenced(replace_text_encoders(prompt), keep_types=OUTPUT_NODE_TYPES)


async def run_with_events(url, prompt, client_id, timeout):
    """Queue `prompt` as the frontend does (websocket open with our client id) and collect the messages until the
    run ends. Returns (prompt id, [(type, data)], wall seconds from POST to the end)."""
    import aiohttp

    messages = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client_id}") as socket:
            started = time.monotonic()
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
                body = await response.text()
                assert response.status == 200, f"/prompt refused the workflow: {body}"
                prompt_id = json.loads(body)["prompt_id"]
            deadline = started + timeout
            while time.monotonic() < deadline:
                message = await socket.receive(timeout=deadline - time.monotonic())
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary messages are previews
                # Strict JSON, as the browser parses it: Infinity / NaN would break the frontend.
                event = json.loads(message.data, parse_constant=lambda token: pytest.fail(
                    f"the server sent {token} in a websocket message (not JSON): {message.data[:300]}"))
                messages.append((event["type"], event.get("data")))
                data = event.get("data") or {}
                if data.get("prompt_id") == prompt_id and (
                        event["type"] in ("execution_success", "execution_error", "execution_interrupted")
                        or (event["type"] == "executing" and data.get("node") is None)):
                    return prompt_id, messages, time.monotonic() - started
    raise TimeoutError(f"no end of run within {timeout} s")


# ---------------------------------------------------------------------------------------------------------------

def test_object_info_lists_every_node_of_the_pack(object_info):
    assert PACK_NODE_IDS <= set(object_info), sorted(PACK_NODE_IDS - set(object_info))
    for node_id in PACK_NODE_IDS:
        assert object_info[node_id]["python_module"].startswith("custom_nodes."), object_info[node_id]


def test_object_info_lists_exactly_the_packs_registered_nodes(object_info):
    pack_nodes = {node_id for node_id, info in object_info.items()
                  if info["python_module"] == f"custom_nodes.{PACK_FOLDER}"}
    assert pack_nodes == PACK_NODE_IDS


def test_log_shows_no_import_failure(server, object_info):
    log = server.log()
    assert "IMPORT FAILED" not in log, log[-3000:]
    assert "Cannot import" not in log, log[-3000:]
    assert PACK_FOLDER in log  # listed under "Import times for custom nodes"


def test_frontend_extension_is_served(server):
    listed = server.get_json("/extensions")
    ours = [path for path in listed if path.startswith(f"/extensions/{PACK_FOLDER}/")]
    assert f"/extensions/{PACK_FOLDER}/speculative_stats.js" in ours
    assert f"/extensions/{PACK_FOLDER}/stats_panel_model.js" in ours
    status, content_type, body = server.get_bytes(f"/extensions/{PACK_FOLDER}/speculative_stats.js")
    assert status == 200 and "javascript" in content_type
    assert b"registerExtension" in body


def test_example_workflows_are_served_as_templates(server):
    templates = server.get_json("/api/workflow_templates")
    assert sorted(templates[PACK_FOLDER]) == sorted(WORKFLOWS)
    for name in WORKFLOWS:
        # The names hold spaces and commas: percent-encoded as a browser's fetch does.
        status, _, body = server.get_bytes(f"/api/workflow_templates/{PACK_FOLDER}/{quote(name, safe=',')}.json")
        assert status == 200 and json.loads(body) == load_example(name)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_runs_and_writes_its_output(name, server, object_info, capsys):
    prompt = api_prompt(name, object_info)
    client_id = f"e2e-{WORKFLOWS.index(name)}"
    prompt_id, messages, seconds = asyncio.run(run_with_events(server.url, prompt, client_id, timeout=900))
    WALL_TIMES[name] = seconds
    with capsys.disabled():
        print(f"\n[e2e] {name}: {seconds:.1f} s wall time (POST /prompt to end of run, CPU, tiny models)")
    entry = server.wait_for_history(prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "success", history_error(entry) or entry["status"]
    files = output_files(entry)
    assert files, f"no output file reported: {entry['outputs']}"
    for _, item in files:
        path = os.path.join(server.base_directory, item["type"], item["subfolder"], item["filename"])
        assert os.path.getsize(path) > 0, path
    stats_events = [data for kind, data in messages if kind == STATS_EVENT]
    assert stats_events, "no statistics event reached the client that queued the prompt"
    expected_kind = "sdvg" if name == SDVG else "dts"
    event = stats_events[-1]
    assert event["kind"] == expected_kind
    assert event["prompt_id"] == prompt_id  # the page routes the statistics to this prompt's workflow
    node_type = {"dts": ("DTSSampler", "DTSKSampler"), "sdvg": ("SDVGSpeculativeVideo",)}[expected_kind]
    assert prompt[event["node"]]["class_type"] in node_type  # the panel finds the node by this id
    if expected_kind == "dts":
        assert event["stats"]["fine_steps"] == FINE_STEPS
        stats = event["stats"]
        assert len(stats["accepted"]) == stats["rounds"] >= 1
        assert all(0 <= count <= tiny_dts_options()["chunk"] for count in stats["accepted"]), stats["accepted"]
        assert stats["rounds"] <= stats["calls"] <= stats["evals"]
    else:
        assert len(event["stats"]["blocks"]) == 3


async def observe_prompt_without_client(url, prompt):
    """Queue `prompt` without a client id while another page (an observer's websocket) is open. Returns the
    observer's messages from its connection to the status message that ends the run (core broadcasts the queue
    status after the prompt's history entry is written, so anything the run sent precedes it)."""
    import aiohttp

    messages = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId=e2e-observer") as socket:
            first = json.loads((await socket.receive(timeout=60)).data)
            assert first["type"] == "status"  # sent on connect, before the prompt is queued
            async with session.post(f"{url}/prompt", json={"prompt": prompt}) as response:
                assert response.status == 200, await response.text()
            busy = False
            while True:
                message = await socket.receive(timeout=900)
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(message.data)
                messages.append((event["type"], event.get("data")))
                if event["type"] == "status":
                    remaining = event["data"]["status"]["exec_info"]["queue_remaining"]
                    if remaining > 0:
                        busy = True
                    elif busy:
                        return messages


def test_statistics_of_a_prompt_queued_without_client_id_reach_no_page(server, object_info):
    prompt = api_prompt(WORKFLOWS[0], object_info)
    prompt[first_of(prompt, "RandomNoise")]["inputs"]["noise_seed"] = 4242  # not the cached run of another test
    runs_before = server.log().count("[speculative-video] DTS")
    messages = asyncio.run(observe_prompt_without_client(server.url, prompt))
    # The DTS node did run (its console line is there), yet the other page got no statistics.
    assert server.log().count("[speculative-video] DTS") == runs_before + 1, server.log()[-2000:]
    assert [kind for kind, _ in messages if kind == STATS_EVENT] == []


# ---------------------------------------------------------------------------------------------------------------
# The statistics panel in the real frontend (optional: needs Chromium and the npm package playwright-core)

def browser_tools():
    """(chromium executable, folder holding playwright-core) or a skip reason.

    Chromium: $CHROMIUM or `chromium` on PATH (Debian's package). playwright-core: the node_modules folder named by
    $PLAYWRIGHT_NODE_MODULES (e.g. after `npm install playwright-core` in that folder's parent).
    """
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    node_modules = os.environ.get("PLAYWRIGHT_NODE_MODULES")
    if not shutil.which("node"):
        return None, "node is not installed"
    if not chromium:
        return None, "no Chromium (install Debian's chromium or set CHROMIUM)"
    if not node_modules or not os.path.isdir(os.path.join(node_modules, "playwright-core")):
        return None, "PLAYWRIGHT_NODE_MODULES does not name a node_modules folder with playwright-core"
    return (chromium, node_modules), None


BROWSER_MODES = ("classic", "vue")
NODE_SEARCH = {"SDVG": ["SDVG Speculative Video"], "DTS": ["DTS Sampler", "DTS KSampler"]}
SEEDS = iter(range(10_000, 1_000_000))  # each browser run its own seed: a repeated prompt would come from the cache


def browser_prompts(object_info, tmp_path, kind):
    """API prompts (files) for the browser check: two runs with different numbers and a third one (DTS: run during
    a tab switch; SDVG: one that fails inside the SDVG node, width 72 not being a multiple of 16)."""
    paths = []
    if kind == "dts":
        for index, chunk in enumerate((3, 2, 4)):
            prompt = api_prompt(WORKFLOW_FILES["dts"], object_info)
            prompt[first_of(prompt, "DTSSampler")]["inputs"]["chunk"] = chunk
            prompt[first_of(prompt, "RandomNoise")]["inputs"]["noise_seed"] = next(SEEDS)
            paths.append(tmp_path / f"dts{index}.json")
            paths[-1].write_text(json.dumps(prompt))
        node_id = int(first_of(prompt, "DTSSampler"))
    else:
        for index, width in enumerate((SIZE, SIZE, 72)):
            prompt = api_prompt(WORKFLOW_FILES["sdvg"], object_info)
            inputs = prompt[first_of(prompt, "SDVGSpeculativeVideo")]["inputs"]
            inputs.update(seed=next(SEEDS), width=width, num_blocks=3 if index != 1 else 2)
            paths.append(tmp_path / f"sdvg{index}.json")
            paths[-1].write_text(json.dumps(prompt))
        node_id = int(first_of(prompt, "SDVGSpeculativeVideo"))
    return {"workflow": os.path.join(REPO, "example_workflows", f"{WORKFLOW_FILES[kind]}.json"),
            "nodeId": node_id, "prompts": [str(path) for path in paths]}


WORKFLOW_FILES = {"dts": WORKFLOWS[0], "sdvg": WORKFLOWS[2]}  # the DTS Wan and the SDVG example


def drew(view, lines):
    """Every one of the panel's `lines` was drawn in the view's frame."""
    return [line for line in lines if line not in view["drawn"]]


def frontend_draws_panel(result):
    """Vue nodes of frontend 1.27.x have no component for canvas-drawn widgets (docs/workflows.md): there the panel
    is stored on the node but not drawn."""
    version = tuple(int(part) for part in (result.get("frontend") or "0").split(".")[:2])
    return not (result["vue"] and version < (1, 28))


def check_browser_result(result, frontend_label):
    """Assertions on panel_after_run.mjs's JSON (see that script for the steps)."""
    steps = result["steps"]
    draws = frontend_draws_panel(result)

    def drew(view, lines):  # noqa: F811  (what the frontend can draw)
        if draws and view.get("reach"):  # Vue nodes: the panel spans the node's widget column like its other widgets
            assert view["reach"]["panelRight"] >= view["reach"]["controlsRight"] - 2, view["reach"]
        return [line for line in lines if line not in view["drawn"]] if draws else []

    for name, value in steps.items():
        assert "error" not in value, f"{frontend_label} step {name}: {value['error']}"
    assert "speculative_video.stats_panel" in result["extensions"]
    assert steps["search"]["found"] == [name for names in NODE_SEARCH.values() for name in names], steps["search"]
    assert steps["templates"]["templatesShown"] == list(WORKFLOWS), steps["templates"]
    missing = steps["sdvgTemplateMissingModels"]
    assert missing["declared"] and missing["shown"] == missing["declared"], missing  # none of them on the server
    for kind, node_type in (("dts", "DTSSampler"), ("sdvg", "SDVGSpeculativeVideo")):
        runs = steps[f"{kind}Runs"]
        assert runs["before"]["type"] == node_type and runs["before"]["stored"] is None
        for index, run in enumerate(runs["runs"]):
            assert run["outcome"]["outcome"] == "success", run["outcome"]
            assert run["expected"], f"{kind} run {index + 1}: no statistics event"
            assert run["view"]["stored"]["kind"] == kind
            assert drew(run["view"], run["expected"]) == [], (kind, index, run["view"]["drawn"][-40:])
            # The panel is not a widget value: what the workflow saves for the node's widgets is unchanged.
            assert run["view"]["widgetsValues"] == runs["before"]["widgetsValues"]
        first, second = (run["expected"] for run in runs["runs"])
        changed = [line for line in first if line not in second]
        assert changed, f"{kind}: the two runs should differ in what the panel shows"
        assert [line for line in changed if line in runs["runs"][1]["view"]["drawn"]] == [], \
            f"{kind}: the second run's panel still draws lines of the first"
    failed = steps["failedRun"]
    assert failed["outcome"]["outcome"].startswith("error"), failed["outcome"]
    assert failed["view"]["stored"]["stale"] is True
    assert not draws or f"SDVG · {failed['staleNote']}" in failed["view"]["drawn"]
    switch = steps["tabSwitch"]
    assert switch["outcome"]["outcome"] == "execution_success", switch["outcome"]
    assert switch["other"]["type"] == "DTSSampler" and switch["other"]["stored"] is None
    assert not switch["other"]["panel"] and not switch["otherSavedHasStats"]
    assert [line for line in switch["expected"] if line in switch["other"]["drawn"]] == []  # none drawn there
    assert switch["back"].endswith("/e2e_dts.json")
    assert switch["own"]["stored"]["stats"]["chunk"] == 4  # the third run's statistics, applied on return
    assert drew(switch["own"], switch["expected"]) == [], switch["own"]["drawn"][-40:]
    reload = steps["reload"]
    assert reload["dts"]["stored"] == switch["own"]["stored"]
    assert drew(reload["dts"], switch["expected"]) == []
    # The frontends restore the tab on screen after a reload; the others only where they reopen them.
    if any(path.endswith("/e2e_sdvg.json") for path in reload["open"]):
        assert reload["sdvg"]["stored"]["stale"] is True
        assert not draws or f"SDVG · {failed['staleNote']}" in reload["sdvg"]["drawn"]


@pytest.mark.parametrize("mode", BROWSER_MODES)
def test_pack_in_the_real_frontend(mode, server, object_info, tmp_path):
    """The pack seen in headless Chromium: search, templates, both panels over two runs, a failed run, a tab switch
    mid-run and a page reload; SPECULATIVE_VIDEO_BROWSER_REPEATS repeats it (default 1)."""
    import subprocess

    tools, reason = browser_tools()
    if tools is None:
        pytest.skip(f"browser check skipped: {reason}")
    chromium, node_modules = tools
    artifacts = os.path.join(REPO, "tests", "artifacts")
    frontend = os.environ.get("SPECULATIVE_VIDEO_FRONTEND_ROOT", "")
    version = os.path.basename(os.environ.get("COMFYUI_PATH", "").rstrip("/"))
    repeats = int(os.environ.get("SPECULATIVE_VIDEO_BROWSER_REPEATS", "1"))
    failures = []  # every repetition runs, so a flaky step shows how often it fails
    for repeat in range(repeats):
        label = f"{version}-{'custom-frontend' if frontend else 'shipped-frontend'}-{mode}-{repeat}"
        options_path = tmp_path / f"options{repeat}.json"
        prompts = tmp_path / f"prompts{repeat}"
        prompts.mkdir()
        options_path.write_text(json.dumps({
            "url": server.url, "vue": mode == "vue", "nodeModules": node_modules, "chromium": chromium,
            "artifacts": artifacts, "label": label, "timeout": 600, "packFolder": PACK_FOLDER,
            "nodeSearch": NODE_SEARCH, "templates": list(WORKFLOWS),
            "sdvgTemplate": os.path.join(REPO, "example_workflows", f"{WORKFLOW_FILES['sdvg']}.json"),
            "dts": browser_prompts(object_info, prompts, "dts"), "sdvg": browser_prompts(object_info, prompts, "sdvg")}))
        script = os.path.join(REPO, "tests", "with_server", "e2e_browser", "panel_after_run.mjs")
        started = time.monotonic()
        completed = subprocess.run(["node", script, str(options_path)], capture_output=True, text=True, timeout=3600)
        took = f"{time.monotonic() - started:.0f} s"
        if completed.returncode != 0:
            failures.append(f"{label}: {completed.stderr[-3000:]}")
            print(f"\n[e2e browser] {label}: FAILED (script exit {completed.returncode}), {took}")
            continue
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        with open(os.path.join(artifacts, f"{label}.json"), "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        verdict = "passed"
        try:
            check_browser_result(result, f"{label} (frontend {result.get('frontend')})")
        except AssertionError as error:
            failures.append(f"{label}: {error}")
            verdict = "FAILED"
        print(f"\n[e2e browser] {label}: frontend {result.get('frontend')}: {verdict}, {took}")
    assert not failures, f"{len(failures)} of {repeats} checks failed:\n" + "\n".join(failures)
