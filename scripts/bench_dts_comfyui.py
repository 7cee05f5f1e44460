"""DTS at its node defaults against plain Euler, inside ComfyUI, on the tiny random models of the ComfyUI tests.

    python scripts/bench_dts_comfyui.py --comfyui PATH [--seeds 8] [--threads 1]

ComfyUI runs in-process on the CPU and loads this pack with its own custom-node loader; every sample goes through
SamplerCustomAdvanced (CFGGuider at cfg 1: one evaluation per state) with the SAMPLER of the DTS Sampler node as
ComfyUI registered it (at its default widget values) or core's `euler`, on a 100-step `simple` schedule:
Euler-100 (the reference), Euler on DTS's target grid (every target_stride-th noise level: Euler-50), Euler on its
draft grid (every draft_stride-th: Euler-10), and DTS. The models are those of the tests
(scripts/tiny_comfyui_models.py): the DTS tests' tiny Wan 2.1 T2V (dim 128), the SDVG tests' target (dim 256),
both loaded by UNETLoader, and a tiny UNet in ComfyUI's SD 1.5 config (eps prediction, SD 1.5's noise schedule).
Each seed is new noise. Prints one Markdown table per model: sequential model calls and per-sample evaluations
(counted at the diffusion model; DTS's own statistics must agree), the drafts accepted, the RMS distance to
Euler-100's latent of the same seed, CPU wall time per sample, each with its ratio to Euler-100. Success is n/a:
random weights define no task to succeed at.
"""
import argparse
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script; appended, so that ComfyUI's nodes.py is never shadowed by nodes/
    sys.path.append(REPO)

from scripts.tiny_comfyui_models import (SDVG_TARGET_WAN, import_comfyui_on_cpu, load_pack,  # noqa: E402
                                         tiny_sd15_model, write_dts_tiny_wan, write_tiny_wan)

FINE_STEPS = 100
SUCCESS = "n/a"
SUCCESS_REASON = "random tiny weights define no task, so there is no success to check"
MODEL_NAMES = ("tiny Wan 2.1 T2V (dim 128, the DTS tests')", "tiny Wan 2.1 T2V (dim 256, the SDVG tests' target)",
               "tiny SD 1.5-config UNet (eps, 1.6M parameters)")


def text_conditioning(seed, tokens, width):
    """CONDITIONING stand-in for a text encoder's output (no tiny umT5 or CLIP exists), unit scale."""
    return [[torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed)), {}]]


def tiny_models(comfy_nodes, folder):
    """[(name, MODEL, empty LATENT, positive CONDITIONING)]: the tests' tiny models, loaded as the tests load them.

    Latents: 64x64 pixels, 5 frames for Wan ([1, 16, 2, 8, 8], the DTS tests' EmptyHunyuanLatentVideo) and one
    image for SD ([1, 4, 8, 8], EmptyLatentImage); zeros, as those nodes make them.
    """
    import folder_paths

    write_dts_tiny_wan(os.path.join(folder, "bench_dts_tiny_wan.safetensors"))
    write_tiny_wan(os.path.join(folder, "bench_sdvg_target_wan.safetensors"), **SDVG_TARGET_WAN)
    folder_paths.add_model_folder_path("diffusion_models", folder, is_default=True)
    folder_paths.filename_list_cache.pop("diffusion_models", None)
    loader = comfy_nodes.UNETLoader()
    wan_latent = {"samples": torch.zeros(1, 16, 2, 8, 8)}
    wan_prompt = text_conditioning(1, 16, 4096)
    return [
        (MODEL_NAMES[0], loader.load_unet("bench_dts_tiny_wan.safetensors", "default")[0], wan_latent, wan_prompt),
        (MODEL_NAMES[1], loader.load_unet("bench_sdvg_target_wan.safetensors", "default")[0], wan_latent,
         wan_prompt),
        (MODEL_NAMES[2], tiny_sd15_model(seed=0), {"samples": torch.zeros(1, 4, 8, 8)}, text_conditioning(1, 77, 768)),
    ]


def dts_defaults(comfy_nodes):
    """The DTS Sampler node's default widget values, as ComfyUI registered the node."""
    required = comfy_nodes.NODE_CLASS_MAPPINGS["DTSSampler"].INPUT_TYPES()["required"]
    return {name: spec[1]["default"] for name, spec in required.items()}


@contextmanager
def counting_calls(model):
    """Count the diffusion model's forward calls and the states they evaluate ({"calls", "evals"})."""
    module = model.model.diffusion_model
    counts = {"calls": 0, "evals": 0}
    forward = module.forward

    def counted(x, *args, **kwargs):
        counts["calls"] += 1
        counts["evals"] += x.shape[0]
        return forward(x, *args, **kwargs)

    module.forward = counted
    try:
        yield counts
    finally:
        del module.forward


@contextmanager
def recording_dts_stats(pack):
    """The statistics of every DTS run (a list), taken where the pack reports them."""
    dts_run = pack.nodes.glue.dts_run
    report_stats, reported = dts_run.report_stats, []
    dts_run.report_stats = lambda kind, node_id, stats, summarise: reported.append(stats)
    try:
        yield reported
    finally:
        dts_run.report_stats = report_stats


def sample(model, sampler, sigmas, latent, positive, seed):
    """SamplerCustomAdvanced with a CFGGuider at cfg 1; returns the latent [B, C, (T,) H, W]."""
    import comfy_extras.nodes_custom_sampler as custom_sampler

    noise = custom_sampler.RandomNoise().get_noise(seed)[0]
    guider = custom_sampler.CFGGuider().get_guider(model, positive, positive, 1.0)[0]
    return custom_sampler.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)[0]["samples"]


def run_model(comfy_nodes, pack, model, latent, positive, seeds):
    """{method: {"calls", "evals", "distance", "seconds", ...} per seed} for Euler-100, the two sub-grid Eulers and
    DTS at the node defaults. Methods alternate within each seed, so load changes of a shared machine fall on all."""
    import comfy_extras.nodes_custom_sampler as custom_sampler

    options = dts_defaults(comfy_nodes)
    sigmas = custom_sampler.BasicScheduler().get_sigmas(model, "simple", FINE_STEPS, 1.0)[0]
    euler = custom_sampler.KSamplerSelect().get_sampler("euler")[0]
    dts = comfy_nodes.NODE_CLASS_MAPPINGS["DTSSampler"]().get_sampler(unique_id="bench", **options)[0]
    target_grid, draft_grid = sigmas[::options["target_stride"]], sigmas[::options["draft_stride"]]
    methods = [(f"Euler-{FINE_STEPS}", euler, sigmas), (f"Euler-{len(target_grid) - 1}", euler, target_grid),
               (f"Euler-{len(draft_grid) - 1}", euler, draft_grid), ("DTS", dts, sigmas)]
    sample(model, euler, draft_grid, latent, positive, seed=0)  # warm-up: loading, allocator, first-call costs
    runs = {name: [] for name, _, _ in methods}
    with recording_dts_stats(pack) as reported:
        for seed in seeds:
            reference = None
            for name, sampler, method_sigmas in methods:
                with counting_calls(model) as counts:
                    start = time.perf_counter()
                    result = sample(model, sampler, method_sigmas, latent, positive, seed)
                    seconds = time.perf_counter() - start
                reference = result if reference is None else reference
                run = dict(counts, seconds=seconds, distance=(result - reference).float().pow(2).mean().sqrt().item(),
                           scale=reference.float().pow(2).mean().sqrt().item())
                if sampler is dts:
                    stats = reported.pop()
                    assert (stats["calls"], stats["evals"]) == (counts["calls"], counts["evals"]), (stats, counts)
                    run.update(accepted=sum(stats["accepted"]), drafted=sum(stats["drafted"]),
                               rounds=stats["rounds"], ratios=[r for ratios in stats["ratios"] for r in ratios])
                runs[name].append(run)
    return runs


def mean(values):
    return sum(values) / len(values)


def table(runs):
    """One Markdown table: a row per method, means over seeds, ratios to the first row (Euler-100)."""
    reference = runs[next(iter(runs))]
    base = {key: mean([run[key] for run in reference]) for key in ("calls", "evals", "seconds", "scale")}
    lines = ["| method | success | sequential calls | evaluations / sample | drafts accepted | RMS distance to "
             "Euler-100 (relative) | CPU wall / sample |",
             "|---|---|---|---|---|---|---|"]
    for name, method_runs in runs.items():
        calls, evals, seconds = (mean([run[key] for run in method_runs]) for key in ("calls", "evals", "seconds"))
        distance = mean([run["distance"] for run in method_runs])
        drafted = sum(run.get("drafted", 0) for run in method_runs)
        accepted = (f"{sum(run['accepted'] for run in method_runs)}/{drafted} "
                    f"({sum(run['accepted'] for run in method_runs) / drafted:.0%})" if drafted else "—")
        lines.append(f"| {name} | {SUCCESS} | {calls:.1f} ({calls / base['calls']:.2f}x) | {evals:.1f} "
                     f"({evals / base['evals']:.2f}x) | {accepted} | {distance:.4f} ({distance / base['scale']:.1%}) | "
                     f"{seconds * 1000:.0f} ms ({seconds / base['seconds']:.2f}x) |")
    return "\n".join(lines)


def report(comfy_nodes, pack, models, seeds):
    """The Markdown report: a header line, then per model its title, table and the success note."""
    options = dts_defaults(comfy_nodes)
    shown = ", ".join(f"{key} {options[key]}" for key in ("draft_stride", "target_stride", "chunk", "rule", "rtol",
                                                          "atol", "threshold", "increment", "auto"))
    parts = [f"DTS Sampler defaults: {shown}; {FINE_STEPS}-step simple schedule, cfg 1, {len(seeds)} seeds "
             f"({seeds[0]}..{seeds[-1]}), means per sample; ratios to Euler-{FINE_STEPS}; relative distance: to the "
             f"RMS of Euler-{FINE_STEPS}'s latent; success: {SUCCESS} ({SUCCESS_REASON})."]
    for name, model, latent, positive in models:
        runs = run_model(comfy_nodes, pack, model, latent, positive, seeds)
        shape = "x".join(str(size) for size in latent["samples"].shape)
        ratios = sorted(ratio for run in runs["DTS"] for ratio in run["ratios"])
        parts.append(f"### {name}, latent {shape}\n\n{table(runs)}\n\nDTS's drafts, distance to their target as "
                     f"a share of the target's own step (accepted up to rtol {options['rtol']} in round 0): "
                     f"median {ratios[len(ratios) // 2]:.3f}, smallest {ratios[0]:.3f}, largest {ratios[-1]:.3f} "
                     f"({len(ratios)} drafts).")
    return "\n\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (required)")
    parser.add_argument("--seeds", type=int, default=8, help="noise seeds 0..N-1 per model (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: tiny models run fastest "
                                                               "on one)")
    arguments = parser.parse_args(argv)
    if not arguments.comfyui:
        parser.error("--comfyui: the path of a ComfyUI checkout is required (or set COMFYUI_PATH)")
    comfyui = os.path.abspath(arguments.comfyui)
    sys.path.insert(0, comfyui)  # ahead of this repo, as ComfyUI's main.py: `nodes` is ComfyUI's nodes.py
    torch.set_num_threads(arguments.threads)
    comfy_nodes = import_comfyui_on_cpu(comfyui)
    import comfy.utils
    import comfyui_version

    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack(comfy_nodes, REPO)
    print(f"ComfyUI {comfyui_version.__version__} ({comfyui}), pack {os.path.dirname(pack.__file__)}, torch "
          f"{torch.__version__}, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads), CPU wall time on a shared machine\n")
    with tempfile.TemporaryDirectory() as folder:
        print(report(comfy_nodes, pack, tiny_models(comfy_nodes, folder), list(range(arguments.seeds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
