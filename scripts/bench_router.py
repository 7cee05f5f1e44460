"""Seconds per frame of the ImageReward router and of a Wan 2.1 VAE decode, for one SDVG block at 480x832.

    python scripts/bench_router.py [--frames 12] [--height 480] [--width 832] [--threads N] [--comfyui PATH]

Both models have random weights of the real size (the cost does not depend on the values): ImageReward (BLIP
ViT-L/16 + BERT-base with cross-attention, ~447M parameters, float32) scores `--frames` frames in one call; ComfyUI's
Wan 2.1 VAE (its hard-coded configuration) decodes the latent block that gives about as many frames (3 latent frames
-> 9 frames on a cold start: the per-frame figure is what compares), tiled (see bench_vae). The VAE part runs only
when ComfyUI is importable (--comfyui or COMFYUI_PATH); otherwise it says it was skipped. Prints one line per model
and the router's share of (decode + score) per frame. Denormal floats are flushed to zero: random weights can drive
activations into that range, where the CPU is many times slower than with real weights.
"""
import argparse
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from samplers.models.bert_tokenizer import SPECIAL_TOKENS, BertTokenizer  # noqa: E402
from samplers.models.image_reward import ImageReward, ImageRewardConfig  # noqa: E402
from samplers.models.reward_router import ImageRewardRouter  # noqa: E402

PROMPT = "a red car driving along a coastal road at sunset, cinematic, highly detailed"


def bench_router(frames, repeats):
    torch.manual_seed(0)
    model = ImageReward(ImageRewardConfig(), device="cpu").eval().requires_grad_(False)
    words = sorted(set(PROMPT.replace(",", " , ").split()))
    tokenizer = BertTokenizer({token: index for index, token in enumerate(list(SPECIAL_TOKENS) + words)})
    router = ImageRewardRouter(model, tokenizer, frames_per_batch=None)
    router.score(frames[:1], PROMPT)  # warm-up (allocator, kernels); the prompt is now cached as in SDVG
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = router.score(frames, PROMPT)
        times.append(time.perf_counter() - start)
    assert scores.shape == (frames.shape[0],)
    return min(times)


def bench_vae(height, width, latent_frames, tile, overlap, repeats):
    """(seconds, decoded frames, tiled area / frame area) of ComfyUI's tiled Wan 2.1 VAE decode of one block.

    Tiled because an untiled 480x832 decode needs about 11 GB in float32 on the CPU (ComfyUI's own estimate),
    more than a shared machine can spare; the tiles overlap, so the area actually decoded is reported too.
    """
    import comfy.ldm.wan.vae
    import comfy.sd

    config = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True], "dropout": 0.0}
    torch.manual_seed(0)
    state_dict = comfy.ldm.wan.vae.WanVAE(**config).state_dict()
    vae = comfy.sd.VAE(sd=state_dict)
    del state_dict
    decode, decoded_area = vae.first_stage_model.decode, []

    def counting_decode(latent, *args, **kwargs):
        decoded_area.append(latent.shape[-2] * latent.shape[-1])
        return decode(latent, *args, **kwargs)

    vae.first_stage_model.decode = counting_decode
    latent = torch.randn(1, 16, latent_frames, height // 8, width // 8)
    times, decoded = [], None
    for _ in range(repeats):
        decoded_area.clear()
        start = time.perf_counter()
        decoded = vae.decode_tiled(latent, tile_x=tile, tile_y=tile, overlap=overlap)
        times.append(time.perf_counter() - start)
    coverage = sum(decoded_area) / (latent.shape[-2] * latent.shape[-1])
    return min(times), decoded.reshape(-1, *decoded.shape[-3:]).shape[0], coverage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12, help="frames scored in one router call (default 12)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--latent-frames", type=int, default=3, help="latent frames decoded by the VAE (default 3)")
    parser.add_argument("--vae-tile", type=int, default=32, help="VAE decode tile, latent pixels (default 32 = 256 px)")
    parser.add_argument("--vae-overlap", type=int, default=4, help="VAE tile overlap, latent pixels (default 4)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per model (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (VAE part)")
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    torch.set_flush_denormal(True)
    print(f"device: cpu, {torch.get_num_threads()} torch threads, torch {torch.__version__}")

    frames = torch.rand(arguments.frames, arguments.height, arguments.width, 3,
                        generator=torch.Generator().manual_seed(0))
    router_seconds = bench_router(frames, arguments.repeats)  # the model is freed on return
    router_per_frame = router_seconds / arguments.frames
    print(f"ImageReward router (fp32, CPU): {arguments.frames} frames {arguments.height}x{arguments.width} in one "
          f"call: {router_seconds:.2f} s = {router_per_frame:.3f} s/frame")

    if not arguments.comfyui:
        print("Wan 2.1 VAE decode: skipped (ComfyUI not available: pass --comfyui or set COMFYUI_PATH)")
        return 0
    sys.path.insert(0, os.path.abspath(arguments.comfyui))
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True
    vae_seconds, decoded_frames, coverage = bench_vae(arguments.height, arguments.width, arguments.latent_frames,
                                                      arguments.vae_tile, arguments.vae_overlap, arguments.repeats)
    vae_per_frame = vae_seconds / decoded_frames
    untiled_per_frame = vae_per_frame / coverage
    print(f"Wan 2.1 VAE decode (ComfyUI, tiled {arguments.vae_tile * 8} px, overlap {arguments.vae_overlap * 8} px, "
          f"CPU): {arguments.latent_frames} latent frames -> {decoded_frames} frames {arguments.height}x"
          f"{arguments.width}: {vae_seconds:.2f} s = {vae_per_frame:.3f} s/frame; the tiles cover {coverage:.2f}x "
          f"the frame, so about {untiled_per_frame:.3f} s/frame untiled")
    print(f"router share of (decode + score) per frame: {router_per_frame / (router_per_frame + vae_per_frame):.0%} "
          f"with the tiled decode, {router_per_frame / (router_per_frame + untiled_per_frame):.0%} with the untiled "
          "estimate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
