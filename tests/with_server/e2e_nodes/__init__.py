"""Test-only ComfyUI nodes for the end-to-end suite (linked into custom_nodes/ only by tests/with_server/test_e2e_comfyui.py).

There is no tiny umT5 or SD 1.5 text encoder to run, so the suite swaps each CLIPTextEncode of an example workflow
for `SpeculativeVideoTestConditioning` (random CONDITIONING of the text encoder's output shape) and drops the
CLIPLoader. Everything else in the graphs is the real node.
"""
import torch


class SpeculativeVideoTestConditioning:
    """CONDITIONING [[randn(1, tokens, width) * 0.1, {}]]: the shape a text encoder gives, without one."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "Ignored (kept so a CLIPTextEncode's prompt can be carried over)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Seed of the random tensor."}),
                "tokens": ("INT", {"default": 512, "min": 1, "max": 4096, "tooltip": "Sequence length (umT5: 512)."}),
                "width": ("INT", {"default": 4096, "min": 1, "max": 8192,
                                  "tooltip": "Embedding width (umT5-XXL: 4096, what Wan expects)."}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing/speculative_video"

    def encode(self, text, seed, tokens, width):
        generator = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, width, generator=generator) * 0.1, {}]],)


NODE_CLASS_MAPPINGS = {"SpeculativeVideoTestConditioning": SpeculativeVideoTestConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"SpeculativeVideoTestConditioning": "Test Conditioning (speculative-video e2e)"}
