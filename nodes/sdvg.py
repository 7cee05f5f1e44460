"""The `SDVG Speculative Video` node: a small causal Wan drafter, a reward router and a large causal Wan target.

What a user sees: inputs, outputs, tooltips. The work is nodes/glue/sdvg_run.py (ComfyUI) over
samplers/methods/sdvg.py (plain torch).
"""
from ..samplers.methods.sdvg import MODE_TAU
from .glue.sdvg_run import DEFAULT_SIGMAS, PROTOCOLS, SCHEDULE_CHOICES, run_sdvg


class SDVGSpeculativeVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "drafter": ("MODEL", {"tooltip": "Small causal Wan 2.1 T2V DiT that proposes each block (e.g. "
                                                 "Self-Forcing 1.3B, converted with "
                                                 "scripts/convert_self_forcing.py)."}),
                "target": ("MODEL", {"tooltip": "Large causal Wan 2.1 T2V DiT that generates the blocks the router "
                                                "rejects (e.g. Krea Realtime 14B). Must share latent channels, patch "
                                                "size and text width with the drafter."}),
                "vae": ("VAE", {"tooltip": "The Wan 2.1 VAE. Drafts are decoded (streaming, continuing the committed "
                                           "video) so that the router can score them; the committed frames are the "
                                           "IMAGE output."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt encoded by the Wan text encoder (umT5-XXL); "
                                                         "both models read it. No negative: causal Wan models run "
                                                         "without classifier-free guidance."}),
                "router_prompt": ("STRING", {"multiline": True, "default": "",
                                             "tooltip": "The text the router scores frames against (usually the "
                                                        "same prompt as positive; CONDITIONING does not carry the "
                                                        "text)."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16,
                                  "tooltip": "Video width in pixels, a multiple of 16."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16,
                                   "tooltip": "Video height in pixels, a multiple of 16."}),
                "num_blocks": ("INT", {"default": 7, "min": 1, "max": 1024,
                                       "tooltip": "Blocks to generate. The video has num_blocks x frames_per_block "
                                                  "latent frames, i.e. 1 + 4 x (latent frames - 1) frames (7 blocks "
                                                  "of 3 = 81 frames)."}),
                "frames_per_block": ("INT", {"default": 3, "min": 1, "max": 64,
                                             "tooltip": "Latent frames per block (the models' training block size: "
                                                        "3 for Self-Forcing and Krea Realtime). Smaller blocks are "
                                                        "judged more often."}),
                "tau": ("FLOAT", {"default": -0.7, "min": -100.0, "max": 100.0, "step": 0.01,
                                  "tooltip": "Acceptance threshold on the block score (ImageReward units): a draft "
                                             "is kept when its score >= tau. Lower keeps more drafts (faster, closer "
                                             "to the drafter's quality); higher sends more blocks to the target."}),
                "mode": (list(MODE_TAU), {"default": "speculative",
                                       "tooltip": "speculative: use tau. target only: every block from the target "
                                                  "(tau = +inf, no drafter or router calls). draft only: every block "
                                                  "from the drafter (tau = -inf, router skipped). The baselines run "
                                                  "through the same code path."}),
                "drafter_sigmas": ("STRING", {"default": DEFAULT_SIGMAS,
                                              "tooltip": "The drafter's denoising steps per block: comma-separated "
                                                         "sigmas in (0, 1], decreasing (timestep = sigma x 1000). One "
                                                         "model call each."}),
                "target_sigmas": ("STRING", {"default": DEFAULT_SIGMAS,
                                             "tooltip": "The target's denoising steps per block, as drafter_sigmas."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Seed of every block's noise (per block and model): the same seed gives "
                                            "the same video."}),
                "force_target_first_block": ("BOOLEAN", {"default": True,
                                                         "tooltip": "Always generate block 0 with the target (the "
                                                                    "first block sets the scene; the paper forces "
                                                                    "it). Off: block 0 is judged like the others."}),
            },
            "optional": {
                "router": ("REWARD_ROUTER", {"tooltip": "Scores each decoded frame of a draft against router_prompt "
                                                        "(e.g. ImageReward); the block's score is the router's "
                                                        "aggregation of its frames (min by default). Needed in mode "
                                                        "speculative only: the baselines never score."}),
                "local_attn_frames": ("INT", {"default": 0, "min": 0, "max": 4096,
                                              "tooltip": "Attention window in latent frames (sink and current block "
                                                         "included), Self-Forcing's local_attn_size; 0 = attend to "
                                                         "every earlier frame. A window caps the KV cache."}),
                "sink_frames": ("INT", {"default": 0, "min": 0, "max": 4096,
                                        "tooltip": "First latent frames always kept in the window (attention "
                                                   "sink); only with local_attn_frames > 0."}),
                "drafter_protocol": (list(PROTOCOLS), {"default": "self_forcing",
                                                       "tooltip": "How the drafter runs block by block. "
                                                                  "self_forcing: cache of every committed frame (Self-"
                                                                  "Forcing 1.3B). krea_realtime: cache rebuilt from "
                                                                  "context_frames latents before each block (Krea "
                                                                  "Realtime 14B)."}),
                "target_protocol": (list(PROTOCOLS), {"default": "krea_realtime",
                                                      "tooltip": "How the target runs block by block, as "
                                                                 "drafter_protocol. Use the protocol the checkpoint "
                                                                 "was released with."}),
                "drafter_schedule": (list(SCHEDULE_CHOICES), {"default": "auto",
                                                              "tooltip": "The drafter's steps. auto: drafter_sigmas "
                                                                         "if edited, else the protocol's schedule. "
                                                                         "self_forcing (4 steps) / krea_realtime (5 "
                                                                         "steps, the last at timestep 0): the "
                                                                         "references' schedules. sigmas text: "
                                                                         "drafter_sigmas."}),
                "target_schedule": (list(SCHEDULE_CHOICES), {"default": "auto",
                                                             "tooltip": "The target's steps, as drafter_schedule "
                                                                        "(with target_sigmas)."}),
                "context_frames": ("INT", {"default": 3, "min": 2, "max": 64,
                                           "tooltip": "krea_realtime only: latent frames the cache is rebuilt from "
                                                      "before each block (Krea's kv_cache_num_frames)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("LATENT", "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "images", "stats")
    OUTPUT_TOOLTIPS = ("The whole latent video [1, 16, num_blocks x frames_per_block, height/8, width/8].",
                       "The decoded frames (decoded once, block by block, as the blocks were committed).",
                       "Per-block scores, decisions and timings, acceptance rate and estimated speed-up (JSON).")
    FUNCTION = "generate"
    CATEGORY = "sampling/speculative"
    DESCRIPTION = ("Speculative decoding for block-autoregressive video (SDVG): a small causal Wan drafter proposes "
                   "each block, a reward router scores the decoded frames, and a large causal Wan target regenerates "
                   "the blocks scoring below tau. Each model runs under its own inference protocol (Self-Forcing's or "
                   "Krea realtime's KV cache); the run's memory is checked before anything is allocated.")

    def generate(self, drafter, target, vae, positive, router_prompt, width, height, num_blocks,
                 frames_per_block, tau, mode, drafter_sigmas, target_sigmas, seed, force_target_first_block,
                 router=None, local_attn_frames=0, sink_frames=0, drafter_protocol="self_forcing",
                 target_protocol="krea_realtime", drafter_schedule="auto", target_schedule="auto", context_frames=3,
                 unique_id=None):
        return run_sdvg(drafter, target, vae, router, positive, router_prompt, width, height, num_blocks,
                        frames_per_block, tau, mode, drafter_sigmas, target_sigmas, seed, force_target_first_block,
                        local_attn_frames, sink_frames, unique_id, drafter_protocol, target_protocol,
                        drafter_schedule, target_schedule, context_frames)


NODES = [("SDVGSpeculativeVideo", SDVGSpeculativeVideo, "SDVG Speculative Video")]
