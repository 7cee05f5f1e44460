"""What an SDVG run needs on its device, computed before anything is allocated (docs/sdvg.md, "Memory").

The plan counts what stays allocated for the whole run, per model: its self-attention KV cache under its protocol
(`causal_runner.cache_frames`: the whole video or the window for self_forcing, K + frames_per_block for
krea_realtime) and its text cross-attention K/V; plus the activations of the largest single forward (one block,
Krea's recompute over K context frames, or a self_forcing target's deferred commit of the blocks it skipped, with its
mask), which the two models never hold at the same time. The model weights are
not in the plan: ComfyUI loads, offloads or streams them itself.

Activations assume a memory-efficient attention kernel (no [queries x keys] score matrix is materialised for the
self-attention): the residual stream, its normalised copy, Q, K, V, the attention output (6 x dim per token), the
FFN's hidden layer and its activation (2 x ffn_dim per token) and the cross-attention scores (heads x text tokens
per token), all in the compute dtype.
"""
from dataclasses import dataclass, field

import torch

from .causal_runner import cache_frames, check_protocol
from .wan import WanConfig

# The two Wan 2.1 T2V sizes (Wan's configs): Self-Forcing / CausVid are 1.3B, Krea Realtime Video is 14B.
WAN_1_3B = WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
WAN_14B = WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
TEXT_TOKENS = 512  # umT5 context rows, zero-padded (Wan's text_len)
PIXELS_PER_TOKEN = 16  # VAE /8, then the DiT's 2x2 patches
GIB = 1024 ** 3


def model_shape(model):
    """(num_layers, dim, ffn_dim, num_heads) of a WanConfig, a WanDiT or ComfyUI's WanModel."""
    if isinstance(model, WanConfig):
        return model.num_layers, model.dim, model.ffn_dim, model.num_heads
    if hasattr(model, "config") and isinstance(model.config, WanConfig):
        return model_shape(model.config)
    first = model.blocks[0]
    return len(model.blocks), model.dim, first.ffn[0].out_features, first.self_attn.num_heads


@dataclass(frozen=True)
class ModelPlan:
    protocol: str
    cache_frames: int
    kv_cache_bytes: int
    text_kv_bytes: int
    activation_bytes: int


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per model (`models`: name -> ModelPlan) and in total (caches and text K/V of every model + the largest
    activations). `inputs` records what drove the numbers."""
    models: dict
    inputs: dict = field(default_factory=dict)

    @property
    def activation_bytes(self):
        return max((plan.activation_bytes for plan in self.models.values()), default=0)

    @property
    def total_bytes(self):
        return sum(plan.kv_cache_bytes + plan.text_kv_bytes for plan in self.models.values()) + self.activation_bytes

    def as_dict(self):
        """JSON-ready: every number in bytes."""
        return dict(total_bytes=self.total_bytes, activation_bytes=self.activation_bytes, inputs=dict(self.inputs),
                    models={name: vars(plan).copy() for name, plan in self.models.items()})

    def describe(self):
        """One line: total and its parts in GiB."""
        parts = ", ".join(f"{name} {plan.protocol} cache {plan.cache_frames} frames {plan.kv_cache_bytes / GIB:.2f} "
                          f"GiB + text K/V {plan.text_kv_bytes / GIB:.2f} GiB" for name, plan in self.models.items())
        return f"{self.total_bytes / GIB:.2f} GiB ({parts}, activations {self.activation_bytes / GIB:.2f} GiB)"


def memory_plan(models, *, width, height, num_blocks, frames_per_block=3, local_attn_frames=None, sink_frames=0,
                context_frames=3, text_tokens=TEXT_TOKENS, batch_size=1, deferred_blocks=None):
    """The bytes an SDVG run needs on its device.

    models: {name: (model or WanConfig, protocol, dtype)} for the models the run uses. width / height: pixels (the
    latent is /8, tokens /16). num_blocks x frames_per_block latent frames; local_attn_frames (None = no window) /
    sink_frames: the self_forcing window; context_frames: Krea's K. deferred_blocks: at most this many blocks per
    forward of a self_forcing target's deferred commit (None: every skipped block in one forward, as the cache's
    room allows; `plan_within` picks it).
    """
    tokens_per_frame = (height // PIXELS_PER_TOKEN) * (width // PIXELS_PER_TOKEN)
    max_frames = num_blocks * frames_per_block
    plans = {}
    for name, (model, protocol, dtype) in models.items():
        check_protocol(protocol, f"{name} protocol")
        layers, dim, ffn_dim, heads = model_shape(model)
        itemsize = torch.empty((), dtype=dtype).element_size()
        window = local_attn_frames if protocol == "self_forcing" else None
        frames = cache_frames(protocol, max_frames, frames_per_block, window, context_frames)
        forward_frames = max(frames_per_block, context_frames if protocol == "krea_realtime" else 0)
        mask_bytes = 0
        if name == "target" and protocol == "self_forcing":
            # The loop defers a self_forcing target's commits to its next block (samplers/methods/sdvg.py,
            # BlockLoop): one forward over up to every earlier block (at most the cache's room), with a block-causal
            # mask [queries x keys] held as booleans and, by ComfyUI's attention dispatch, in the compute dtype.
            deferred = min(max_frames - frames_per_block, frames)
            if deferred_blocks is not None:
                deferred = min(deferred, deferred_blocks * frames_per_block)
            forward_frames = max(forward_frames, deferred)
            if forward_frames > frames_per_block:
                mask_bytes = (forward_frames * tokens_per_frame) * (frames * tokens_per_frame) * (1 + itemsize)
        forward_tokens = batch_size * forward_frames * tokens_per_frame
        plans[name] = ModelPlan(
            protocol=protocol, cache_frames=frames,
            kv_cache_bytes=2 * layers * batch_size * frames * tokens_per_frame * dim * itemsize,
            text_kv_bytes=2 * layers * batch_size * text_tokens * dim * itemsize,
            activation_bytes=forward_tokens * (6 * dim + 2 * ffn_dim + heads * text_tokens) * itemsize + mask_bytes)
    inputs = dict(width=width, height=height, num_blocks=num_blocks, frames_per_block=frames_per_block,
                  local_attn_frames=local_attn_frames or 0, sink_frames=sink_frames, context_frames=context_frames,
                  protocols={name: protocol for name, (_, protocol, _) in models.items()})
    if deferred_blocks is not None:
        inputs["deferred_blocks"] = deferred_blocks
    return MemoryPlan(plans, inputs)


def plan_within(available_bytes, models, **options):
    """`memory_plan(models, **options)` for a run with `available_bytes` free: a self_forcing target's deferred
    commit of every skipped block in one forward where that fits, else in groups of the most blocks per forward that
    fit (inputs["deferred_blocks"], which the target's runner takes as max_commit_blocks), else one block per
    forward (the smallest plan, which check_fits then refuses). Other runs get memory_plan's plan unchanged."""
    plan = memory_plan(models, **options)
    target = plan.models.get("target")
    if plan.total_bytes <= available_bytes or target is None or target.protocol != "self_forcing":
        return plan
    frames_per_block = plan.inputs["frames_per_block"]
    most = min(plan.inputs["num_blocks"] * frames_per_block - frames_per_block, target.cache_frames)
    for blocks in range(most // frames_per_block - 1, 0, -1):
        plan = memory_plan(models, deferred_blocks=blocks, **options)
        if plan.total_bytes <= available_bytes:
            break
    return plan


def memory_table(width=832, height=480, blocks=(7, 9), dtype=torch.bfloat16):
    """The docs' table (markdown): per model size, protocol and block count, what `memory_plan` gives for that model
    alone, then for the paper's pair (1.3B self_forcing drafter + 14B krea_realtime target); GiB, bf16."""
    rows = ["| model | protocol | blocks (latent frames) | KV cache | text K/V | activations | total |",
            "|---|---|---|---|---|---|---|"]
    for label, config in (("Wan 1.3B (dim 1536, 30 layers)", WAN_1_3B), ("Wan 14B (dim 5120, 40 layers)", WAN_14B)):
        for protocol in ("self_forcing", "krea_realtime"):
            for num_blocks in blocks:
                plan = memory_plan({"model": (config, protocol, dtype)}, width=width, height=height,
                                   num_blocks=num_blocks)
                model = plan.models["model"]
                rows.append(f"| {label} | {protocol} | {num_blocks} ({3 * num_blocks}) | "
                            f"{model.kv_cache_bytes / GIB:.2f} GiB ({model.cache_frames} frames) | "
                            f"{model.text_kv_bytes / GIB:.2f} GiB | {plan.activation_bytes / GIB:.2f} GiB | "
                            f"{plan.total_bytes / GIB:.2f} GiB |")
    for num_blocks in blocks:
        plan = memory_plan({"drafter": (WAN_1_3B, "self_forcing", dtype), "target": (WAN_14B, "krea_realtime", dtype)},
                           width=width, height=height, num_blocks=num_blocks)
        kv = sum(model.kv_cache_bytes for model in plan.models.values())
        text = sum(model.text_kv_bytes for model in plan.models.values())
        rows.append(f"| pair: 1.3B drafter + 14B target | self_forcing + krea_realtime | {num_blocks} "
                    f"({3 * num_blocks}) | {kv / GIB:.2f} GiB | {text / GIB:.2f} GiB | "
                    f"{plan.activation_bytes / GIB:.2f} GiB | {plan.total_bytes / GIB:.2f} GiB |")
    return "\n".join(rows)


class MemoryPlanError(ValueError):
    """A run whose memory plan does not fit the device: raised before anything is allocated."""


def check_fits(plan, available_bytes, device="the device"):
    """Raise MemoryPlanError (bytes needed and available, and the inputs that drive them) unless the plan fits in
    available_bytes."""
    if plan.total_bytes <= available_bytes:
        return plan
    inputs = plan.inputs
    drivers = ", ".join(f"{key} {value}" for key, value in inputs.items() if key != "protocols")
    protocols = ", ".join(f"{name}_protocol {protocol}" for name, protocol in inputs.get("protocols", {}).items())
    advice = "; ".join(memory_advice(plan))
    raise MemoryPlanError(
        f"SDVG needs {plan.total_bytes:,} bytes ({plan.total_bytes / GIB:.2f} GiB) on {device} but only "
        f"{int(available_bytes):,} bytes ({available_bytes / GIB:.2f} GiB) can be made free there. Plan: "
        f"{plan.describe()}. Driven by: {drivers}, {protocols}. Options: {advice}.")


def memory_advice(plan):
    """What would shrink this plan, given the run's own protocols and inputs: only changes the run can still make
    (no "use krea_realtime" for a target that already does, no "fewer blocks" when no cache grows with them)."""
    inputs = plan.inputs
    video_frames = inputs.get("num_blocks", 0) * inputs.get("frames_per_block", 0)
    window = inputs.get("local_attn_frames", 0)
    advice = ["lower width / height (every cache, text K/V aside, scales with the pixels)"]
    growing = [name for name, model in plan.models.items()
               if model.protocol == "self_forcing" and model.cache_frames == video_frames]
    if growing:
        advice.append(f"fewer num_blocks (the {' and '.join(growing)} cache holds the whole video, "
                      f"{video_frames} latent frames)")
    self_forcing = [name for name, model in plan.models.items() if model.protocol == "self_forcing"]
    if self_forcing and not window:
        advice.append(f"give the self_forcing {' and '.join(self_forcing)} a window (local_attn_frames, e.g. 12 with "
                      "sink_frames 3: the cache then holds 12 frames whatever the length)")
    elif self_forcing and window > inputs.get("frames_per_block", 0) + inputs.get("sink_frames", 0):
        advice.append(f"a smaller local_attn_frames (now {window})")
    target = plan.models.get("target")
    if target is not None and target.protocol == "self_forcing":
        advice.append("run the target under krea_realtime if its checkpoint was released for it (its cache holds "
                      "context_frames + frames_per_block frames whatever the length)")
    if any(model.protocol == "krea_realtime" for model in plan.models.values()) and inputs.get("context_frames", 3) > 3:
        advice.append(f"fewer context_frames (now {inputs['context_frames']}; Krea's release uses 3)")
    return advice


def weight_bytes(config, dtype=torch.bfloat16):
    """Bytes of a Wan DiT's weights stored in `dtype` (its parameter count from the model built on the meta device;
    ComfyUI's fp8 weight_dtype stores all but a couple of small tensors in 8 bits)."""
    from .wan import WanDiT

    with torch.device("meta"):
        parameters = sum(parameter.numel() for parameter in WanDiT(config).parameters())
    return parameters * torch.empty((), dtype=dtype).element_size()


# The SDVG template's run: 832x480, 7 blocks of 3 latent frames, the paper's pair.
TEMPLATE_RUN = dict(width=832, height=480, num_blocks=7, frames_per_block=3)
TARGET_WEIGHT_DTYPES = (("default (bf16)", torch.bfloat16), ("fp8_e4m3fn", torch.float8_e4m3fn))


def device_memory_rows(compute_dtype=torch.bfloat16):
    """What the SDVG template needs on its device, per weight_dtype of the 14B target: [(label, target weights,
    drafter weights, plan, target + plan, both + plan)] in bytes. The plan (caches, text K/V, activations) is in the
    compute dtype, which fp8 weights do not change (ComfyUI computes in bf16 and casts the weights)."""
    plan = memory_plan({"drafter": (WAN_1_3B, "self_forcing", compute_dtype),
                        "target": (WAN_14B, "krea_realtime", compute_dtype)}, **TEMPLATE_RUN)
    drafter = weight_bytes(WAN_1_3B, torch.bfloat16)
    return [(label, weight_bytes(WAN_14B, dtype), drafter, plan.total_bytes, weight_bytes(WAN_14B, dtype) +
             plan.total_bytes, weight_bytes(WAN_14B, dtype) + drafter + plan.total_bytes)
            for label, dtype in TARGET_WEIGHT_DTYPES]


def device_memory_table():
    """The docs' table of what fits where (markdown, GiB): `device_memory_rows`."""
    rows = ["| target weight_dtype | 14B target weights | 1.3B drafter weights (bf16) | run plan | target + plan "
            "(drafter offloaded between its calls) | both models + plan |", "|---|---|---|---|---|---|"]
    for label, *sizes in device_memory_rows():
        rows.append(f"| {label} | " + " | ".join(f"{size / GIB:.1f} GiB" for size in sizes) + " |")
    return "\n".join(rows)
