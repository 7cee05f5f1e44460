"""SDVG nodes (V3): `SDVG Speculative Video` (a small causal Wan drafter, a reward router and a large causal Wan
target) and `Load Causal Wan Checkpoint` (Self-Forcing's own .pt, or any Wan .safetensors, as a MODEL).

What a user sees: inputs, outputs, tooltips. The work is nodes/glue/sdvg_run.py (ComfyUI) over
samplers/methods/sdvg.py (plain torch), and nodes/glue/causal_wan_files.py. The SDVG node's id, input names, their
order (required, then optional), types, defaults and bounds are those of the V1 node it replaces, so saved workflows
and API prompts load unchanged; the V1 method name (`generate`) stays as an alias of `execute` for callers of the V1
class (they may pass the node id as `unique_id`).
"""
from comfy_api.latest import io

from ..samplers.methods.sdvg import MODE_TAU
from ..samplers.models.self_forcing_files import AUTO_KEY
from .glue.causal_wan_files import FOLDER_NAME, load_causal_wan, weight_dtype_choices
from .glue.sdvg_run import DEFAULT_SIGMAS, PROTOCOLS, SCHEDULE_CHOICES, run_sdvg
from .reward import RewardRouter
from .v3 import LOADERS_CATEGORY, SAMPLING_CATEGORY, advanced, node_id


class SDVGSpeculativeVideo(io.ComfyNode):
    NODE_ID, DISPLAY_NAME = "SDVGSpeculativeVideo", "SDVG Speculative Video"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=SAMPLING_CATEGORY,
            description=(
                "Speculative decoding for block-autoregressive video (SDVG): a small causal Wan drafter proposes each "
                "block, a reward router scores the decoded frames, and a large causal Wan target regenerates the "
                "blocks scoring below tau. Each model runs under its own inference protocol (Self-Forcing's or Krea "
                "realtime's KV cache); the run's memory is checked before anything is allocated."),
            inputs=[
                io.Model.Input("drafter", tooltip=(
                    "Small causal Wan 2.1 T2V DiT that proposes each block (e.g. Self-Forcing 1.3B: "
                    "self_forcing_dmd.pt through Load Causal Wan Checkpoint).")),
                io.Model.Input("target", tooltip=(
                    "Large causal Wan 2.1 T2V DiT that generates the blocks the router rejects (e.g. Krea Realtime "
                    "14B). Must share latent channels, patch size and text width with the drafter.")),
                io.Vae.Input("vae", tooltip=(
                    "The Wan 2.1 VAE. Drafts are decoded (streaming, continuing the committed video) so that the "
                    "router can score them; the committed frames are the IMAGE output.")),
                io.Conditioning.Input("positive", tooltip=(
                    "The prompt encoded by the Wan text encoder (umT5-XXL); both models read it. No negative: causal "
                    "Wan models run without classifier-free guidance.")),
                io.String.Input("router_prompt", multiline=True, default="", tooltip=(
                    "The text the router scores frames against (usually the same prompt as positive; CONDITIONING "
                    "does not carry the text).")),
                io.Int.Input("width", default=832, min=16, max=4096, step=16,
                             tooltip="Video width in pixels, a multiple of 16."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16,
                             tooltip="Video height in pixels, a multiple of 16."),
                io.Int.Input("num_blocks", default=7, min=1, max=1024, tooltip=(
                    "Blocks to generate. The video has num_blocks x frames_per_block latent frames, i.e. 1 + 4 x "
                    "(latent frames - 1) frames (7 blocks of 3 = 81 frames).")),
                io.Int.Input("frames_per_block", default=3, min=1, max=64, tooltip=(
                    "Latent frames per block (the models' training block size: 3 for Self-Forcing and Krea "
                    "Realtime). Smaller blocks are judged more often.")),
                io.Float.Input("tau", default=-0.7, min=-100.0, max=100.0, step=0.01, tooltip=(
                    "Acceptance threshold on the block score (ImageReward units): a draft is kept when its score >= "
                    "tau. Lower keeps more drafts (faster, closer to the drafter's quality); higher sends more blocks "
                    "to the target.")),
                io.Combo.Input("mode", options=list(MODE_TAU), default="speculative", tooltip=(
                    "speculative: use tau. target only: every block from the target (tau = +inf, no drafter or "
                    "router calls). draft only: every block from the drafter (tau = -inf, router skipped). The "
                    "baselines run through the same code path.")),
                io.String.Input("drafter_sigmas", default=DEFAULT_SIGMAS, tooltip=(
                    "The drafter's denoising steps per block: comma-separated sigmas in (0, 1], decreasing (timestep "
                    "= sigma x 1000). One model call each.")),
                io.String.Input("target_sigmas", default=DEFAULT_SIGMAS,
                                tooltip="The target's denoising steps per block, as drafter_sigmas."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True, tooltip=(
                    "Seed of every block's noise (per block and model): the same seed gives the same video.")),
                io.Boolean.Input("force_target_first_block", default=True, tooltip=(
                    "Always generate block 0 with the target (the first block sets the scene; the paper forces it). "
                    "Off: block 0 is judged like the others.")),
                RewardRouter.Input("router", optional=True, tooltip=(
                    "Scores each decoded frame of a draft against router_prompt (e.g. ImageReward); the block's "
                    "score is the router's aggregation of its frames (min by default). Needed in mode speculative "
                    "only: the baselines never score.")),
                io.Int.Input("local_attn_frames", default=0, min=0, max=4096, optional=True, tooltip=(
                    "Attention window in latent frames (sink and current block included), Self-Forcing's "
                    "local_attn_size; 0 = attend to every earlier frame. A window caps the KV cache.")),
                io.Int.Input("sink_frames", default=0, min=0, max=4096, optional=True, tooltip=(
                    "First latent frames always kept in the window (attention sink); only with local_attn_frames > "
                    "0.")),
                io.Combo.Input("drafter_protocol", options=list(PROTOCOLS), default="self_forcing", optional=True,
                               tooltip=(
                    "How the drafter runs block by block. self_forcing: cache of every committed frame (Self-Forcing "
                    "1.3B). krea_realtime: cache rebuilt from context_frames latents before each block (Krea "
                    "Realtime 14B).")),
                io.Combo.Input("target_protocol", options=list(PROTOCOLS), default="krea_realtime", optional=True,
                               tooltip=(
                    "How the target runs block by block, as drafter_protocol. Use the protocol the checkpoint was "
                    "released with.")),
                io.Combo.Input("drafter_schedule", options=list(SCHEDULE_CHOICES), default="auto", optional=True,
                               tooltip=(
                    "The drafter's steps. auto: drafter_sigmas if edited, else the protocol's schedule. self_forcing "
                    "(4 steps) / krea_realtime (5 steps, the last at timestep 0): the references' schedules. sigmas "
                    "text: drafter_sigmas.")),
                io.Combo.Input("target_schedule", options=list(SCHEDULE_CHOICES), default="auto", optional=True,
                               tooltip="The target's steps, as drafter_schedule (with target_sigmas)."),
                io.Int.Input("context_frames", default=3, min=2, max=64, optional=True, tooltip=(
                    "krea_realtime only: latent frames the cache is rebuilt from before each block (Krea's "
                    "kv_cache_num_frames).")),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip=(
                    "The whole latent video [1, 16, num_blocks x frames_per_block, height/8, width/8].")),
                io.Image.Output(display_name="images", tooltip=(
                    "The decoded frames (decoded once, block by block, as the blocks were committed).")),
                io.String.Output(display_name="stats", tooltip=(
                    "Per-block scores, decisions and timings, acceptance rate and estimated speed-up (JSON).")),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, drafter, target, vae, positive, router_prompt, width, height, num_blocks, frames_per_block, tau,
                mode, drafter_sigmas, target_sigmas, seed, force_target_first_block, router=None, local_attn_frames=0,
                sink_frames=0, drafter_protocol="self_forcing", target_protocol="krea_realtime",
                drafter_schedule="auto", target_schedule="auto", context_frames=3, unique_id=None):
        return io.NodeOutput(*run_sdvg(drafter, target, vae, router, positive, router_prompt, width, height,
                                       num_blocks, frames_per_block, tau, mode, drafter_sigmas, target_sigmas, seed,
                                       force_target_first_block, local_attn_frames, sink_frames,
                                       node_id(cls, unique_id), drafter_protocol, target_protocol, drafter_schedule,
                                       target_schedule, context_frames))

    generate = execute  # the V1 method name


class LoadCausalWanCheckpoint(io.ComfyNode):
    NODE_ID, DISPLAY_NAME = "LoadCausalWanCheckpoint", "Load Causal Wan Checkpoint"

    @classmethod
    def define_schema(cls):
        import folder_paths

        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=LOADERS_CATEGORY,
            description=(
                "Loads a causal Wan 2.1 DiT from models/diffusion_models/ as Load Diffusion Model does, including "
                "Self-Forcing's own training checkpoint (self_forcing_dmd.pt) without converting it. The .pt is read "
                "as weights only: no pickled code runs."),
            inputs=[
                io.Combo.Input("unet_name", options=folder_paths.get_filename_list(FOLDER_NAME), tooltip=(
                    "A file of models/diffusion_models/: Self-Forcing's checkpoints/self_forcing_dmd.pt (from "
                    "huggingface.co/gdhe17/Self-Forcing) as it is, or any Wan 2.1 .safetensors (loaded exactly as "
                    "Load Diffusion Model loads it).")),
                io.Combo.Input("weight_dtype", options=weight_dtype_choices(), default="default", tooltip=(
                    "As Load Diffusion Model's: default keeps ComfyUI's choice; fp8 stores the weights in 8 bits "
                    "(half of bf16's memory, small quality cost).")),
                io.String.Input("state_dict_key", default=AUTO_KEY, tooltip=(
                    "Which state dict of a .pt checkpoint to load. auto: generator_ema (the weights Self-Forcing's "
                    "inference uses with --use_ema), else generator, else the file itself when it is one state "
                    "dict. Ignored for .safetensors."), **advanced()),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip=(
                "The causal Wan DiT, e.g. SDVG's drafter (run it with drafter_protocol self_forcing)."))],
        )

    @classmethod
    def execute(cls, unet_name, weight_dtype, state_dict_key=AUTO_KEY):
        return io.NodeOutput(load_causal_wan(unet_name, weight_dtype, state_dict_key))


NODES = [SDVGSpeculativeVideo, LoadCausalWanCheckpoint]
