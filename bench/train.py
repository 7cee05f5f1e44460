"""Train the toy world's tiny Wan models with flow matching (block-causal, diffusion-forcing noise).

    python -m bench.train --model target      # writes bench/weights/target.safetensors (+ target.json log)
    python -m bench.train --model drafter     # distilled from the shipped target (below)
    python -m bench.train --measure           # per-call cost of both architectures (FLOPs and CPU wall)

Each training sample is a fresh clip of the world (bench/world.py) with its condition tokens as the text context.
Noise is per block of 3 frames, in one of three patterns per sample, so one model learns every way it is used
(the shares below are the default):
- "uniform" (25%): every block at the same sigma -- an ordinary denoiser of the whole clip (DTS, Euler);
- "prefix" (55%): blocks before a random block k are clean (sigma 0, as the KV cache holds them at t = 0),
  block k is noisy, later blocks independent -- block-autoregressive generation (SDVG), teacher forcing;
- "independent" (20%): every block its own sigma (diffusion forcing).
The attention mask is block-causal throughout. The loss is the MSE of v = noise - x0 on noisy frames only.
Sigmas are drawn half uniform, half logit-normal. Weights are saved in float16 with the original Wan names
(samplers.wan.save_wan) from an exponential moving average of the trained weights.

The drafter is distilled instead (`distil`): the target generates clips block by block as SDVG's target-only run
does (on TRAINING_SEEDS), and the drafter learns those clips only where SDVG runs it -- one of its four sigmas on
a block after clean committed blocks; its checkpoints are judged by draft-only success on CHOICE_SEEDS.
"""
import argparse
import copy
import json
import math
import os
import time

import numpy as np
import torch

from samplers.models.wan import save_wan

from .models import (DRAFTER_SIGMAS, MODEL_CONFIGS, SHIPPED, WEIGHTS_DIR, WORLD_OF, build_model, flow_sigmas,
                     model_config, weights_path)
from .world import BEACON_WORLD, DEFAULT_WORLD, MAX_OBJECTS, STAR_WORLD, sample_batch

# The recipe of the shipped weights (fixed seeds): `python -m bench.train --model target`, then
# `python -m bench.train --model drafter` (distilled from the target) and the target_stars stages (see
# bench/weights/*.json for how long they ran, on how many threads).
DEFAULTS = {
    "target": dict(steps=2800, batch=16, lr=2e-3, seed=0, shift=3.0, patterns=(0.25, 0.55)),
    # the shipped drafter: distilled from the target's own block-by-block rollouts (bench.train.distil), trained
    # only where SDVG runs it (its four sigmas, after clean committed blocks), judged on CHOICE_SEEDS
    "drafter": dict(steps=4000, batch=32, lr=2e-3, seed=0, rollouts=1024, judge_every=500, distil=True),
    # the star world (DTS only, so only the "uniform" noise pattern), fine-tuned from the shipped target in three
    # stages, each a new warm-up and cosine decay (the stages' weights are not shipped: git-ignored)
    "target_stars_stage1": dict(steps=1500, batch=16, lr=2e-3, seed=0, shift=3.0, patterns=(1.0, 0.0),
                                init="target"),
    "target_stars_stage2": dict(steps=2400, batch=16, lr=1.5e-3, seed=0, shift=3.0, patterns=(1.0, 0.0),
                                init="target_stars_stage1"),
    "target_stars": dict(steps=2400, batch=16, lr=1e-3, seed=0, shift=3.0, patterns=(1.0, 0.0),
                         init="target_stars_stage2"),
    # the beacon world (DTS only): one stage from the shipped target, fixed with the world before it ran
    "target_beacon": dict(steps=2000, batch=16, lr=1.5e-3, seed=0, shift=3.0, patterns=(1.0, 0.0), init="target"),
}
WORLDS = {"default": DEFAULT_WORLD, "stars": STAR_WORLD, "beacon": BEACON_WORLD}


def block_sigmas(generator, batch, num_blocks, shift=1.0, patterns=(0.25, 0.55), sigma_set=None):
    """Per-sample, per-block sigmas [B, num_blocks] in [0, 1) following the three noise patterns.

    shift > 1 moves the draws towards high noise (Wan's shift s*t / (1 + (s-1)*t)), where the clip's global
    layout (where each object is, consistently over frames) is decided. patterns: probabilities of "uniform" and
    "prefix" (the rest is "independent"). sigma_set: draw every sigma from these values instead (a few-step
    model trained only where it is used: the drafter's schedule)."""
    uniform = torch.rand(batch, num_blocks, generator=generator)
    logit_normal = torch.sigmoid(torch.randn(batch, num_blocks, generator=generator))
    pick = torch.rand(batch, num_blocks, generator=generator) < 0.5
    sigmas = torch.where(pick, uniform, logit_normal)
    sigmas = (shift * sigmas / (1.0 + (shift - 1.0) * sigmas)).clamp(1e-3, 1.0 - 1e-4)
    if sigma_set is not None:
        values = torch.tensor(sigma_set, dtype=torch.float32).clamp(1e-3, 1.0 - 1e-4)
        sigmas = values[torch.randint(0, len(values), (batch, num_blocks), generator=generator)]
    pattern = torch.rand(batch, generator=generator)
    current = torch.randint(0, num_blocks, (batch,), generator=generator)
    for b in range(batch):
        if pattern[b] < patterns[0]:  # uniform
            sigmas[b] = sigmas[b, 0]
        elif pattern[b] < patterns[0] + patterns[1]:  # prefix: clean context, noisy current block
            sigmas[b, :current[b]] = 0.0
    return sigmas


def init_weights(model):
    """Wan 2.1's initialisation (xavier linears, zero biases, normal(0.02) time embedding, a zero output head), so
    the untrained network starts as "predict zero" and learns much faster than PyTorch's default init."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    torch.nn.init.xavier_uniform_(model.patch_embedding.weight.flatten(1))
    # Not the text embedding: Wan's normal(0.02) suits umT5 features of large magnitude; on these one-hot condition
    # tokens it gives condition embeddings of ~0.01 and gradients that vanish through its two layers, and the
    # models then ignore the condition (measured). The text embedding keeps the xavier init of the loop above.
    for module in model.time_embedding.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02)
    torch.nn.init.zeros_(model.head.head.weight)
    return model


def load_grown(model, state_dict):
    """Load weights of a smaller model of the same width: narrower FFNs (the extra hidden units keep their fresh
    input weights and get zero output weights) and fewer layers (the extra layers' attention and FFN outputs are
    zero), so the grown network starts out computing exactly what the loaded one did. A wider loaded FFN keeps
    only its first hidden units (an approximation that training then repairs)."""
    own = model.state_dict()
    with torch.no_grad():
        for key, value in state_dict.items():
            target = own[key]
            if target.shape == value.shape:
                target.copy_(value)
            elif key.endswith("ffn.0.weight") or key.endswith("ffn.0.bias"):
                rows = min(value.shape[0], target.shape[0])  # a narrower FFN keeps the first hidden units
                target[:rows] = value[:rows]
            elif key.endswith("ffn.2.weight"):
                target.zero_()
                columns = min(value.shape[1], target.shape[1])
                target[:, :columns] = value[:, :columns]
            else:
                raise ValueError(f"--init: {key} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
        # Layers the loaded weights do not have start as the identity: their residual outputs are zero.
        for key, target in own.items():
            if key not in state_dict and key.split(".")[-2] in ("o", "2"):
                target.zero_()
    return model


def probe(model, world, seeds=(900001, 900002, 900003, 900004), sigmas=(0.3, 0.6)):
    """Quick quality probe: mean frame quality of the x0 estimate from a noised ground truth at each sigma, and
    how many clips generated from pure noise (Euler, 10 steps) pass the success check."""
    from .check import analyse
    from .world import sample_clip

    out = {}
    model.eval()
    with torch.no_grad():
        for sigma in sigmas:
            scores = []
            for seed in seeds:
                condition, clip = sample_clip(seed, world)
                noise = torch.randn(clip.shape, generator=torch.Generator().manual_seed(seed))
                x = (1 - sigma) * clip + sigma * noise
                v = model(x[None], torch.tensor([sigma * 1000.0]), condition.tokens(world)[None],
                          frames_per_block=world.frames_per_block)
                scores.append(float(analyse((x[None] - sigma * v)[0], condition, world).quality.mean()))
            out[sigma] = round(sum(scores) / len(scores), 3)
        # Generation from pure noise (Euler, 10 steps, shift 3): what the benchmark asks of the model.
        from .models import FlowDenoiser, euler_sample, flow_sigmas

        passed, quality = 0, []
        for seed in seeds:
            condition, clip = sample_clip(seed, world)
            noise = torch.randn((1,) + tuple(clip.shape), generator=torch.Generator().manual_seed(seed))
            generated = euler_sample(FlowDenoiser(model, condition.tokens(world)[None], world.frames_per_block), noise,
                                     flow_sigmas(10, 3.0))
            analysis = analyse(generated[0], condition, world)
            passed += analysis.success
            quality.append(float(analysis.quality.mean()))
        out["generated"] = f"{passed}/{len(seeds)} pass, quality {sum(quality) / len(quality):.3f}"
    return out


def training_step(model, clips, context, generator, frames_per_block, shift=1.0, patterns=(0.25, 0.55),
                  sigma_set=None):
    """Flow-matching loss on one batch: clips [B, C, T, H, W], context [B, L, text_dim]."""
    batch, _, frames = clips.shape[:3]
    num_blocks = frames // frames_per_block
    sigma = block_sigmas(generator, batch, num_blocks, shift, patterns, sigma_set)  # [B, blocks]
    sigma = sigma.repeat_interleave(frames_per_block, dim=1)  # [B, T]
    noise = torch.randn(clips.shape, generator=generator)
    s = sigma[:, None, :, None, None]
    noisy = (1.0 - s) * clips + s * noise
    v = model(noisy, sigma * 1000.0, context, frames_per_block=frames_per_block)
    weight = (sigma > 0).float()[:, None, :, None, None]
    error = (v - (noise - clips)).pow(2) * weight
    return error.sum() / (weight.sum() * clips.shape[1] * clips.shape[3] * clips.shape[4]).clamp(min=1.0)


def optimizer_step(model, ema, optimizer, scheduler, loss, step):
    """One optimisation step on `loss` (gradients clipped to norm 1), then the EMA weights follow (decay warming up
    to 0.995): both training loops, from scratch and distilled, step this way."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    decay = min(0.995, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - decay)


def train(name, *, steps, batch, lr, seed=0, threads=2, out_dir=WEIGHTS_DIR, log_every=50, probe_every=0,
          init=None, shift=1.0, patterns=(0.25, 0.55), sigma_set=None, world=DEFAULT_WORLD):
    """Train model `name` and save `<out_dir>/<name>.safetensors` and `<name>.json`; returns the log dict."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = init_weights(build_model(name)).train()
    if init is not None:  # a second stage: continue from saved weights (EMA of the first stage)
        from samplers.models.wan import load_wan_state_dict

        load_grown(model, {k: v.float() for k, v in load_wan_state_dict(init).items()})
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = max(1, steps // 20)

    def schedule(step):  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start = time.time()
    recent = []
    history = []
    for step in range(steps):
        clips, context = sample_batch(rng, batch, world)
        loss = training_step(model, clips, context, generator, world.frames_per_block, shift, patterns, sigma_set)
        optimizer_step(model, ema, optimizer, scheduler, loss, step)
        recent.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            mean = sum(recent) / len(recent)
            history.append((step + 1, round(mean, 5)))
            extra = ""
            if probe_every and (step + 1) % probe_every == 0:
                extra = f" probe {probe(ema, world)}"
                os.makedirs(out_dir, exist_ok=True)  # a checkpoint of the EMA weights at every probe
                save_wan(ema, os.path.join(out_dir, f"{name}.safetensors"), dtype=torch.float16)
            print(f"[{name}] step {step + 1}/{steps} loss {mean:.4f} ({time.time() - start:.0f} s){extra}", flush=True)
            recent = []
    seconds = time.time() - start
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.safetensors")
    save_wan(ema, path, dtype=torch.float16)
    log = {
        "model": name, "config": MODEL_CONFIGS[name], "patch_size": list(model_config(name).patch_size),
        "parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "batch": batch, "lr": lr,
        "seed": seed, "threads": threads, "init": None if init is None else os.path.basename(init), "shift": shift,
        "patterns": list(patterns), "sigma_set": None if sigma_set is None else list(sigma_set),
        "seconds": round(seconds, 1), "final_loss": history[-1][1],
        "loss_history": history, "file_bytes": os.path.getsize(path), "torch": torch.__version__,
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as handle:
        json.dump(log, handle, indent=1)
    print(f"[{name}] saved {path} ({log['file_bytes'] / 1e6:.2f} MB) in {seconds / 60:.1f} min, "
          f"final loss {log['final_loss']:.4f}")
    return log


# ------------------------------------------------------------------------------------------------------------
# The drafter, distilled from the target (issue 18: "a drafter worth its name")

def target_rollouts(model, seeds, world=DEFAULT_WORLD, batch=32, log=print):
    """The target's own clips, generated block by block as SDVG's target-only run makes them: for each block, the
    target's 10-step schedule (TARGET_SIGMAS: x0 estimate, then fresh noise at the next sigma) with the committed
    blocks as clean context (timestep 0, block-causal mask: what the KV cache holds). Batched over seeds with
    whole-prefix forwards (the same computation as the cached runner, up to float rounding).
    Returns (clips [N, C, T, H, W], contexts [N, L, TEXT_DIM]). Noise from torch.Generator(seed)."""
    from .world import sample_clip

    sigmas = [float(s) for s in flow_sigmas(10)[:-1]]
    fpb = world.frames_per_block
    shape = (world.channels, fpb, world.height, world.width)
    clips, contexts = [], []
    model.eval()
    start = time.time()
    for first in range(0, len(seeds), batch):
        chunk = list(seeds[first:first + batch])
        context = torch.stack([sample_clip(s, world)[0].tokens(world) for s in chunk])
        generators = [torch.Generator().manual_seed(int(s)) for s in chunk]

        def draw():
            return torch.stack([torch.randn(shape, generator=g) for g in generators])

        committed = torch.zeros((len(chunk), world.channels, 0, world.height, world.width))
        with torch.no_grad():
            for block in range(world.num_blocks):
                x = sigmas[0] * draw()
                for j, sigma in enumerate(sigmas):
                    timestep = torch.tensor([0.0] * committed.shape[2] + [1000.0 * sigma] * fpb)
                    v = model(torch.cat([committed, x], dim=2), timestep.expand(len(chunk), -1), context,
                              frames_per_block=fpb)[:, :, -fpb:]
                    x0 = x - sigma * v
                    if j + 1 < len(sigmas):
                        x = (1.0 - sigmas[j + 1]) * x0 + sigmas[j + 1] * draw()
                committed = torch.cat([committed, x0], dim=2)
        clips.append(committed)
        contexts.append(context)
        log(f"[rollouts] {first + len(chunk)}/{len(seeds)} ({time.time() - start:.0f} s)")
    return torch.cat(clips), torch.cat(contexts)


def distil_step(model, clips, context, generator, frames_per_block, sigma_set, first_block=1):
    """Flow-matching loss of the drafter on the target's clips, only where SDVG runs it: one block k >= first_block
    (SDVG's first block is the target's) at one of its sampling sigmas, after clean committed blocks; the clip is
    cut after block k (the block-causal mask makes later frames irrelevant). v = noise - x0 with x0 the target's."""
    batch = clips.shape[0]
    num_blocks = clips.shape[2] // frames_per_block
    block = int(torch.randint(first_block, num_blocks, (1,), generator=generator))
    frames = (block + 1) * frames_per_block
    clips = clips[:, :, :frames]
    values = torch.tensor(sigma_set, dtype=torch.float32).clamp(1e-3, 1.0 - 1e-4)
    sigma = values[torch.randint(0, len(values), (batch,), generator=generator)]
    per_frame = torch.zeros(batch, frames)
    per_frame[:, -frames_per_block:] = sigma[:, None]
    noise = torch.randn(clips.shape, generator=generator)
    s = per_frame[:, None, :, None, None]
    noisy = (1.0 - s) * clips + s * noise
    v = model(noisy, per_frame * 1000.0, context, frames_per_block=frames_per_block)
    error = (v - (noise - clips))[:, :, -frames_per_block:].pow(2)
    return error.mean()


def slice_target(model, target_state, layer=0):
    """Initialise a narrower, shallower model from the target's weights: residual channels DRAFTER_CHANNELS (3 of
    every 4, so the position embedding stays the target's on them), the first heads of attention, the FFN hidden
    units with the largest weights, and the target's `layer` as its only layer (its embeddings and head as they
    are). The sliced network is not the target (it lost two layers and a quarter of its width); distillation then
    repairs it, from a start that already embeds the condition, the time and the positions as the target does."""
    from .models import DRAFTER_CHANNELS

    own = model.state_dict()
    residual = torch.tensor(DRAFTER_CHANNELS)
    width = len(DRAFTER_CHANNELS)
    inner = torch.arange(width)  # attention: the target's first width / head_dim heads
    ffn = own["blocks.0.ffn.0.weight"].shape[0]
    prefix = f"blocks.{layer}."
    w1, w2 = target_state[prefix + "ffn.0.weight"], target_state[prefix + "ffn.2.weight"]
    units = (w1.norm(dim=1) * w2.norm(dim=0)).argsort(descending=True)[:ffn].sort().values

    def rows_cols(key, value):
        name = key.split(".", 2)[-1] if key.startswith("blocks.") else key
        if name in ("self_attn.q.weight", "self_attn.k.weight", "self_attn.v.weight", "cross_attn.q.weight",
                    "cross_attn.k.weight", "cross_attn.v.weight"):
            return value[inner][:, residual]
        if name in ("self_attn.q.bias", "self_attn.k.bias", "self_attn.v.bias", "cross_attn.q.bias",
                    "cross_attn.k.bias", "cross_attn.v.bias", "self_attn.norm_q.weight", "self_attn.norm_k.weight",
                    "cross_attn.norm_q.weight", "cross_attn.norm_k.weight"):
            return value[inner]
        if name in ("self_attn.o.weight", "cross_attn.o.weight"):
            return value[residual][:, inner]
        if name == "ffn.0.weight":
            return value[units][:, residual]
        if name == "ffn.0.bias":
            return value[units]
        if name == "ffn.2.weight":
            return value[residual][:, units]
        if name == "modulation":  # [1, 6, dim]
            return value[:, :, residual]
        if name == "head.modulation":  # [1, 2, dim]
            return value[:, :, residual]
        if name in ("text_embedding.0.weight", "time_embedding.0.weight", "patch_embedding.weight"):
            return value[residual]
        if name in ("text_embedding.2.weight", "time_embedding.2.weight"):
            return value[residual][:, residual]
        if name == "time_projection.1.weight":  # [6 dim, dim]: six modulation vectors
            return value.reshape(6, -1, value.shape[1])[:, residual][:, :, residual].reshape(-1, width)
        if name == "time_projection.1.bias":
            return value.reshape(6, -1)[:, residual].reshape(-1)
        if name == "head.head.weight":
            return value[:, residual]
        if name == "head.head.bias":
            return value
        if value.ndim == 1:  # biases and norms of the residual stream
            return value[residual]
        raise ValueError(f"slice_target: no rule for {key} {tuple(value.shape)}")

    with torch.no_grad():
        for key in own:
            source = key.replace("blocks.0.", prefix) if key.startswith("blocks.0.") else key
            value = rows_cols(source, target_state[source].float())
            if value.shape != own[key].shape:
                raise ValueError(f"slice_target: {key} sliced to {tuple(value.shape)}, the model has "
                                 f"{tuple(own[key].shape)}")
            own[key].copy_(value)
    return model


def draft_only_success(drafter, target, seeds, world=DEFAULT_WORLD):
    """Successes of SDVG's draft-only run (block 0 from the target, the rest from the drafter) over `seeds`."""
    import math as _math

    from .check import analyse
    from .run import run_sdvg_once
    from .world import sample_clip

    drafter.eval()
    passed = 0
    for seed in seeds:
        condition, _ = sample_clip(seed, world)
        clip, _, _ = run_sdvg_once(drafter, target, condition, seed, -_math.inf, world)
        passed += bool(analyse(clip, condition, world).success)
    return passed


def distil(name, *, steps, batch, lr, rollouts, seed=0, threads=1, out_dir=WEIGHTS_DIR, judge_every=250,
           judge_seeds=32, sigma_set=DRAFTER_SIGMAS, teacher="target", init="sliced", world=DEFAULT_WORLD,
           log=print):
    """Distil `name` from the teacher's rollouts on the first `rollouts` TRAINING_SEEDS; every `judge_every` steps
    the EMA weights are judged by draft-only success on the first `judge_seeds` CHOICE_SEEDS and the best
    checkpoint is saved (ties: the later one). Returns the log dict (also `<name>.json`)."""
    from .models import load_model
    from .world import CHOICE_SEEDS, TRAINING_SEEDS

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.time()
    target = load_model(teacher)
    cache = os.path.join(out_dir, f"{name}_rollouts_{teacher}_{rollouts}.pt")  # git-ignored
    if os.path.isfile(cache):
        clips, contexts = torch.load(cache)
    else:
        clips, contexts = target_rollouts(target, TRAINING_SEEDS[:rollouts], world, log=log)
        torch.save((clips, contexts), cache)
    rollout_seconds = time.time() - start
    model = init_weights(build_model(name)).train()
    if init == "sliced":  # start from the target's own weights (slice_target)
        slice_target(model, target.state_dict())
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup else
                                                  0.1 + 0.45 * (1.0 + math.cos(math.pi * (step - warmup)
                                                                                / max(1, steps - warmup))))
    history, judged, recent = [], [], []
    best = (-1, 0)
    path = os.path.join(out_dir, f"{name}.safetensors")
    choice = CHOICE_SEEDS[:judge_seeds]
    for step in range(steps):
        index = torch.randint(0, clips.shape[0], (batch,), generator=generator)
        loss = distil_step(model, clips[index], contexts[index], generator, world.frames_per_block, sigma_set)
        optimizer_step(model, ema, optimizer, scheduler, loss, step)
        recent.append(loss.item())
        if (step + 1) % 50 == 0:
            history.append((step + 1, round(sum(recent) / len(recent), 5)))
            recent = []
            log(f"[{name}] step {step + 1}/{steps} loss {history[-1][1]:.4f} ({time.time() - start:.0f} s)")
        if (step + 1) % judge_every == 0 or step + 1 == steps:
            passed = draft_only_success(ema, target, choice, world)
            judged.append((step + 1, passed))
            log(f"[{name}] step {step + 1}: draft-only success {passed}/{len(choice)} on choice seeds "
                f"{choice.start}-{choice.stop - 1} ({time.time() - start:.0f} s)")
            if passed >= best[0]:
                best = (passed, step + 1)
                os.makedirs(out_dir, exist_ok=True)
                save_wan(ema, path, dtype=torch.float16)
    seconds = time.time() - start
    log_dict = {
        "model": name, "config": MODEL_CONFIGS[name], "recipe": "distilled from the target's rollouts",
        "init": init,
        "teacher": teacher, "rollouts": rollouts, "rollout_seeds": [TRAINING_SEEDS.start,
                                                                    TRAINING_SEEDS.start + rollouts - 1],
        "parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "batch": batch, "lr": lr,
        "seed": seed, "threads": threads, "sigma_set": list(sigma_set), "rollout_seconds": round(rollout_seconds, 1),
        "seconds": round(seconds, 1), "cpu_minutes": round(seconds * threads / 60, 1), "final_loss": history[-1][1],
        "loss_history": history, "judged_on_choice_seeds": [choice.start, choice.stop - 1],
        "draft_only_success_history": judged, "kept_step": best[1], "kept_success": best[0],
        "file_bytes": os.path.getsize(path), "torch": torch.__version__,
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as handle:
        json.dump(log_dict, handle, indent=1)
    log(f"[{name}] kept step {best[1]} ({best[0]}/{len(choice)} draft-only on choice seeds); "
        f"{seconds / 60:.1f} min")
    return log_dict


def forward_flops(name, world=DEFAULT_WORLD):
    """Multiply-accumulates x 2 of one forward over a whole clip (batch 1), counted from the layer shapes."""
    config = model_config(name)
    tokens_per_frame = (world.height // config.patch_size[1]) * (world.width // config.patch_size[2])
    tokens = world.frames * tokens_per_frame
    text_tokens = MAX_OBJECTS * world.frames
    dim, ffn = config.dim, config.ffn_dim
    per_layer = (tokens * (4 * dim * dim + 2 * dim * dim + 2 * dim * ffn)  # self q,k,v,o; cross q,o; FFN
                 + text_tokens * 2 * dim * dim  # cross k,v of the text tokens
                 + 2 * tokens * tokens * dim)  # attention scores and weighted sum (dense; the mask halves it)
    patch = math.prod(config.patch_size) * config.in_dim
    other = tokens * (patch * dim + dim * patch) + world.frames * (config.freq_dim * dim + dim * dim + 6 * dim * dim)
    return 2 * (config.num_layers * per_layer + other)


def measure(repeats=20, threads=2, world=DEFAULT_WORLD):
    """Per-call cost of both models on one clip: FLOPs (counted) and median CPU wall (measured)."""
    from .world import sample_clip

    torch.set_num_threads(threads)
    condition, clip = sample_clip(0, world)
    context = condition.tokens(world)[None]
    x = clip[None]
    out = {}
    for name in SHIPPED:
        model = build_model(name).eval()
        times = []
        with torch.no_grad():
            for _ in range(repeats + 2):
                start = time.perf_counter()
                model(x, torch.tensor([500.0]), context, frames_per_block=world.frames_per_block)
                times.append(time.perf_counter() - start)
        out[name] = {"flops": forward_flops(name, world), "wall_ms": 1000 * sorted(times[2:])[len(times[2:]) // 2],
                     "parameters": sum(p.numel() for p in model.parameters())}
    out["flops_ratio"] = out["target"]["flops"] / out["drafter"]["flops"]
    out["wall_ratio"] = out["target"]["wall_ms"] / out["drafter"]["wall_ms"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_CONFIGS), help="which model to train")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: per model)")
    parser.add_argument("--batch", type=int, help="clips per step (default: per model)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: per model)")
    parser.add_argument("--seed", type=int, help="default: per model")
    parser.add_argument("--patterns", help="probabilities of the uniform and prefix noise patterns, e.g. 0.25,0.55")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out-dir", default=WEIGHTS_DIR)
    parser.add_argument("--shift", type=float, help="shift of the training sigmas towards high noise (default: per "
                        "model)")
    parser.add_argument("--init", help="continue from these weights (a second training stage)")
    parser.add_argument("--probe-every", type=int, default=0, help="print a denoising probe every N steps")
    parser.add_argument("--measure", action="store_true", help="print per-call FLOPs and wall of both models")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(threads=args.threads), indent=1))
        return
    if args.model is None:
        parser.error("--model is required (or --measure)")
    settings = dict(DEFAULTS[args.model])
    for key in ("steps", "batch", "lr", "seed", "shift"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings.pop("distil", False):
        distil(args.model, threads=args.threads, out_dir=args.out_dir, **settings)
        return
    if args.patterns is not None:
        settings["patterns"] = tuple(float(p) for p in args.patterns.split(","))
    init = settings.pop("init", None)
    init = args.init if args.init is not None else (weights_path(init) if init else None)
    train(args.model, threads=args.threads, out_dir=args.out_dir, probe_every=args.probe_every,
          init=init, world=WORLDS[WORLD_OF.get(args.model, "default")], **settings)


if __name__ == "__main__":
    main()
