"""Golden cases (../shared/golden/README.md format) run through the pack's own runner and block loop.

A case is `<name>.json` + `<name>.safetensors` next to the DiT weights file its JSON names. `run_case` builds a
CausalWanRunner under the case's protocol, feeds the recorded noise through the block loop's replaceable noise
source, decodes and re-encodes with the stand-in VAE of the Krea cases, and returns what the loop produced.
"""
import glob
import json
import math
import os

import torch
import torch.nn.functional as F

from samplers.methods.schedules import BlockSchedule
from samplers.methods.sdvg import speculative_generate
from samplers.models.causal_runner import CausalWanRunner
from support import REPO

DEFAULT_DIR = os.path.join(REPO, "..", "shared", "golden")


def golden_dir():
    """The folder named by SDVG_GOLDEN_DIR (default ../shared/golden relative to the repo root)."""
    return os.path.abspath(os.environ.get("SDVG_GOLDEN_DIR") or DEFAULT_DIR)


def case_names(folder):
    """Every case in the folder: a JSON file with a `protocol` field and a .safetensors file of the same name."""
    names = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        base = path[:-len(".json")]
        if not os.path.isfile(base + ".safetensors"):
            continue
        with open(path) as handle:
            if "protocol" in json.load(handle):
                names.append(os.path.basename(base))
    return names


def load_case(folder, name):
    from safetensors.torch import load_file

    with open(os.path.join(folder, name + ".json")) as handle:
        meta = json.load(handle)
    return meta, load_file(os.path.join(folder, name + ".safetensors"))


class StandInDecoder:
    """The README's stand-in streaming decoder: the first latent frame ever yields p_3, every later one p_0..p_3;
    p_s = clamp(D_s z + d_s, -1, 1), upsampled x8 (nearest). Frames [n, 8H, 8W, 3] in 0..1 (the decoder protocol)."""

    def __init__(self, tensors):
        self.weight, self.bias = tensors["vae.decode_weight"], tensors["vae.decode_bias"]  # [4, 3, 16], [4, 3]
        self.started = False
        self.pixels = []  # every committed frame, -1..1 [3, 8H, 8W]

    def decode(self, latent):
        frames = []
        for index in range(latent.shape[2]):
            z = latent[0, :, index].float()  # [16, H, W]
            subs = (3,) if not self.started and index == 0 else (0, 1, 2, 3)
            for s in subs:
                p = (torch.einsum("oc,chw->ohw", self.weight[s], z) + self.bias[s][:, None, None]).clamp(-1, 1)
                frames.append(p.repeat_interleave(8, 1).repeat_interleave(8, 2))
        pixels = torch.stack(frames)
        return (pixels.permute(0, 2, 3, 1) + 1.0) / 2.0, pixels

    def advance(self, pending):
        self.started = True
        self.pixels.extend(pending)


class StandInEncoder:
    """The README's stand-in encoder of one frame: 8x8 average pooling, then z = E q + e. Records its inputs."""

    def __init__(self, tensors):
        self.weight, self.bias = tensors["vae.encode_weight"], tensors["vae.encode_bias"]  # [16, 3], [16]
        self.frames, self.latents = [], []

    def encode(self, frame):
        pixel = frame.float().permute(2, 0, 1) * 2.0 - 1.0  # [3, 8H, 8W], -1..1
        q = F.avg_pool2d(pixel[None], 8)[0]
        z = torch.einsum("oc,chw->ohw", self.weight, q) + self.bias[:, None, None]
        self.frames.append(pixel)
        self.latents.append(z[None, :, None])
        return self.latents[-1]


class RecordedNoise:
    """The loop's noise source replaced by the case's recorded draws: noise.b{k}.s{j}."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __call__(self, block_index, model):
        def draw(step, shape):
            tensor = self.tensors[f"noise.b{block_index}.s{step}"]
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"noise.b{block_index}.s{step}: shape {tuple(tensor.shape)}, loop asks {shape}")
            return tensor
        return draw


class RecordingRunner:
    """Passes every call to the runner; records every flow prediction and the recompute contexts a krea_realtime
    commit receives."""

    def __init__(self, runner):
        self.runner, self.contexts, self.flows = runner, [], []

    def predict(self, block, sigma, timestep=None):
        self.flows.append(self.runner.predict(block, sigma, timestep))
        return self.flows[-1]

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def commit(self, clean_block, context=None):
        if context is not None:
            self.contexts.append(context.clone())
            return self.runner.commit(clean_block, context=context)
        return self.runner.commit(clean_block)


def run_case(folder, name):
    """Run one case in float32 through CausalWanRunner + speculative_generate (target only). Returns
    {"max_error": {what: largest |pack - reference|}, "meta": the JSON}."""
    from samplers.models.wan import load_wan, pad_text

    meta, tensors = load_case(folder, name)
    model = load_wan(os.path.join(folder, meta["weights_file"]))
    batch, height, width = meta["batch"], meta["latent_h"], meta["latent_w"]
    frames_per_block, num_blocks = meta["frames_per_block"], meta["num_blocks"]
    options = dict(protocol=meta["protocol"])
    if meta["protocol"] == "krea_realtime":
        options["context_frames"] = meta["krea"]["kv_cache_num_frames"]
    else:
        window = meta["self_forcing"].get("local_attn_size", -1)
        if window is not None and window > 0:
            options.update(local_attn_frames=window, sink_frames=meta["self_forcing"].get("sink_size", 0))
    runner = CausalWanRunner(model, latent_height=height, latent_width=width, max_frames=num_blocks * frames_per_block,
                             frames_per_block=frames_per_block, batch_size=batch, dtype=torch.float32, **options)
    runner.reset(pad_text(tensors["context"], meta["context"]["pad_to"]))
    target = RecordingRunner(runner)
    krea = meta["protocol"] == "krea_realtime"
    decoder = StandInDecoder(tensors) if krea else None
    encoder = StandInEncoder(tensors) if krea else None
    schedule = BlockSchedule(tuple(meta["schedule"]["sigmas"]), tuple(meta["schedule"]["timesteps"]))
    latent, _ = speculative_generate(
        None, target, decoder, None, "", num_blocks=num_blocks,
        block_shape=(batch, meta["latent_channels"], frames_per_block, height, width), tau=math.inf,
        target_sigmas=schedule, encoder=encoder, noise=RecordedNoise(tensors))

    def error(ours, key):
        reference = tensors[key]
        assert tuple(ours.shape) == tuple(reference.shape), (key, tuple(ours.shape), tuple(reference.shape))
        return float((ours.float() - reference).abs().max())

    errors = {}
    steps = len(schedule.sigmas)
    assert len(target.flows) == num_blocks * steps, f"{name}: {len(target.flows)} model calls"
    for call, flow in enumerate(target.flows):
        errors[f"f32.b{call // steps}.s{call % steps}.flow"] = error(flow, f"f32.b{call // steps}.s{call % steps}.flow")
    for k in range(num_blocks):
        block = latent[:, :, k * frames_per_block:(k + 1) * frames_per_block]
        errors[f"f32.b{k}.x0"] = error(block, f"f32.b{k}.x0")
    if krea:
        for k, context in enumerate(target.contexts, start=1):
            errors[f"f32.b{k}.recompute.context"] = error(context, f"f32.b{k}.recompute.context")
        first = 2
        for k, (pixel, encoded) in enumerate(zip(encoder.frames, encoder.latents), start=first):
            errors[f"f32.b{k}.recompute.reencoded_pixel"] = error(pixel[None], f"f32.b{k}.recompute.reencoded_pixel")
            errors[f"f32.b{k}.recompute.reencoded_latent"] = error(encoded,
                                                                   f"f32.b{k}.recompute.reencoded_latent")
        start = 0
        for k in range(num_blocks):
            count = tensors[f"f32.b{k}.pixels_lowres"].shape[1]
            lowres = torch.stack(decoder.pixels[start:start + count])[:, :, ::8, ::8][None]
            errors[f"f32.b{k}.pixels_lowres"] = error(lowres, f"f32.b{k}.pixels_lowres")
            start += count
        expected = {f"f32.b{k}.recompute.context" for k in range(1, num_blocks)}
        assert expected <= set(errors), f"{name}: the loop ran {len(target.contexts)} recomputes"
    return dict(max_error=errors, meta=meta)


class PatternRouter:
    """Scores the k-th draft `scores[k]` on every frame."""

    aggregation = "min"

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0

    def score(self, frames, prompt):
        self.calls += 1
        return torch.full((frames.shape[0],), float(self.scores[self.calls - 1]))


def run_speculative_pair(folder, generate_fn, protocols, scores, seed=0, case="krea_target"):
    """A speculative run over the golden cases' two tiny DiTs (the drafter's and the target's weights files, under
    `protocols` = (drafter's, target's)), with the Krea case's text context, stand-in decoder and encoder, the
    pack's seeded noise and a router scoring the k-th draft `scores[k]` (tau 0.5). `generate_fn` is
    speculative_generate or the eager reference. Returns (latent, frames, per block source)."""
    from samplers.methods.schedules import SCHEDULES
    from samplers.models.wan import load_wan, pad_text

    meta, tensors = load_case(folder, case)
    height, width, frames_per_block, num_blocks = meta["latent_h"], meta["latent_w"], 3, meta["num_blocks"]
    runners = []
    for weights, protocol in zip(("wan21_t2v_tiny_drafter.safetensors", "wan21_t2v_tiny_target.safetensors"),
                                 protocols):
        runner = CausalWanRunner(load_wan(os.path.join(folder, weights)), latent_height=height, latent_width=width,
                                 max_frames=num_blocks * frames_per_block, frames_per_block=frames_per_block,
                                 dtype=torch.float32, protocol=protocol, context_frames=3)
        runner.reset(pad_text(tensors["context"], meta["context"]["pad_to"]))
        runners.append(runner)
    stats = {}
    latent, frames = generate_fn(
        *runners, StandInDecoder(tensors), PatternRouter(scores), "", num_blocks=num_blocks,
        block_shape=(1, meta["latent_channels"], frames_per_block, height, width), tau=0.5, seed=seed, stats=stats,
        drafter_sigmas=SCHEDULES[protocols[0]], target_sigmas=SCHEDULES[protocols[1]],
        encoder=StandInEncoder(tensors))
    return latent, frames, [block["source"] for block in stats["blocks"]]
