"""The SDVG node and its streaming decoder inside a real (in-process, CPU) ComfyUI.

Models: two tiny Wan 2.1 T2V DiTs of different widths (ComfyUI's WanModel, dims 128 and 256, random weights) saved
with the original key names and loaded by the stock UNETLoader; the full-size Wan 2.1 VAE with random weights
loaded by VAELoader (ComfyUI has no smaller Wan VAE); a stand-in CONDITIONING (no tiny umT5 exists); a
mean-brightness router. Videos are 32x32 pixels, 2 blocks of 2 latent frames: the VAE dominates the run time.
"""
import importlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from sdvg_support import (MeanBrightnessRouter, add_model_folder, stand_in_conditioning, write_random_wan21_vae,
                          write_tiny_wan)

pytestmark = pytest.mark.comfyui

WIDTH = HEIGHT = 32  # latent 4 x 4: 2 x 2 DiT tokens per frame
FRAMES_PER_BLOCK = 2
NUM_BLOCKS = 2
SIGMAS = "1.0, 0.9375, 0.8333, 0.625"
TINY_WANS = {  # file stem -> write_tiny_wan arguments
    "drafter": dict(dim=128, ffn_dim=256, seed=1),
    "target": dict(dim=256, ffn_dim=512, seed=2),
    "i2v": dict(dim=128, ffn_dim=256, seed=3, model_type="i2v", in_dim=36),
    "wide_latent": dict(dim=128, ffn_dim=256, seed=4, in_dim=32),
}


@pytest.fixture(scope="module")
def pack(comfy_pack):
    """The pack's node class and modules, as ComfyUI's loader imported them."""
    return SimpleNamespace(
        node_class=comfy_pack.NODE_CLASS_MAPPINGS["SDVGSpeculativeVideo"],
        sdvg=importlib.import_module(f"{comfy_pack.__name__}.nodes.sdvg"),
        stream_decode=importlib.import_module(f"{comfy_pack.__name__}.nodes.wan_stream_decode"),
    )


@pytest.fixture(scope="module")
def wan21_vae(comfy_nodes, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sdvg_vae")
    write_random_wan21_vae(directory / "sdvg_test_wan21_vae.safetensors", seed=0)
    add_model_folder("vae", directory)
    return comfy_nodes.VAELoader().load_vae("sdvg_test_wan21_vae.safetensors")[0]


@pytest.fixture(scope="module")
def wan_models(comfy_nodes, tmp_path_factory):
    """{name: MODEL} for TINY_WANS, loaded by ComfyUI's UNETLoader from a models folder of their own."""
    directory = tmp_path_factory.mktemp("sdvg_diffusion_models")
    for name, arguments in TINY_WANS.items():
        write_tiny_wan(directory / f"sdvg_test_{name}.safetensors", **arguments)
    add_model_folder("diffusion_models", directory)
    loader = comfy_nodes.UNETLoader()
    return {name: loader.load_unet(f"sdvg_test_{name}.safetensors", "default")[0] for name in TINY_WANS}


def wan21_latent_format():
    import comfy.latent_formats

    return comfy.latent_formats.Wan21()


def random_latent(frames, seed=0, size=4):
    return torch.randn(1, 16, frames, size, size, generator=torch.Generator().manual_seed(seed))


def run_node(pack, wan_models, vae, **overrides):
    """Call the node the way ComfyUI's executor does (inference mode), with small defaults."""
    inputs = dict(drafter=wan_models["drafter"], target=wan_models["target"], vae=vae, router=MeanBrightnessRouter(),
                  positive=stand_in_conditioning(seed=0), router_prompt="a red fox in the snow", width=WIDTH,
                  height=HEIGHT, num_blocks=NUM_BLOCKS, frames_per_block=FRAMES_PER_BLOCK, tau=0.0,
                  mode="speculative", drafter_sigmas=SIGMAS, target_sigmas=SIGMAS, seed=7,
                  force_target_first_block=True, unique_id="sdvg-test")
    inputs.update(overrides)
    with torch.inference_mode():
        return pack.node_class().generate(**inputs)


@pytest.fixture(scope="module")
def accepted_run(pack, wan_models, wan21_vae):
    """One run where the second block's draft is kept (brightness >= 0 = tau), recording progress and previews."""
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    progress = []
    router = MeanBrightnessRouter()
    previous_method = args.preview_method
    args.preview_method = LatentPreviewMethod.Auto
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: progress.append((value, total, preview, node_id)))
    try:
        latent, images, stats_text = run_node(pack, wan_models, wan21_vae, router=router, tau=0.0)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        args.preview_method = previous_method
    return SimpleNamespace(latent=latent, images=images, stats=json.loads(stats_text), router=router,
                           progress=progress)


# --- streaming decoder ------------------------------------------------------------------------------------------

def test_streamed_decode_of_committed_blocks_equals_one_decode_of_the_whole_video(pack, comfy_nodes, wan21_vae):
    latent_format = wan21_latent_format()
    latent = random_latent(4, seed=1)
    decoder = pack.stream_decode.WanStreamingDecoder(wan21_vae, latent_format.process_out)
    pieces = []
    with torch.inference_mode():
        for start, stop in ((0, 2), (2, 3), (3, 4)):  # uneven blocks: the causal state must carry over each time
            frames, pending = decoder.decode(latent[:, :, start:stop])
            decoder.advance(pending)
            pieces.append(frames)
        whole = comfy_nodes.VAEDecode().decode(wan21_vae, {"samples": latent_format.process_out(latent)})[0]
    streamed = torch.cat(pieces)
    assert [len(piece) for piece in pieces] == [5, 4, 4]  # 1 + 4 x (2 - 1), then 4 per latent frame
    assert streamed.shape == whole.shape == (13, HEIGHT, WIDTH, 3)
    assert 0.2 < ((whole > 0) & (whole < 1)).float().mean() # most pixels unclipped: the comparison has content
    # Same modules, same per-frame order, same caches; only the frame-local 1x1x1 conv2 runs on different slices.
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)


def test_decoding_a_draft_does_not_advance_the_stream(pack, wan21_vae):
    latent_format = wan21_latent_format()
    committed, draft, following = random_latent(1, seed=2), random_latent(1, seed=3), random_latent(1, seed=4)
    with torch.inference_mode():
        with_draft = pack.stream_decode.WanStreamingDecoder(wan21_vae, latent_format.process_out)
        with_draft.advance(with_draft.decode(committed)[1])
        with_draft.decode(draft)  # decoded for scoring, then rejected: never advanced
        after_draft, _ = with_draft.decode(following)

        without_draft = pack.stream_decode.WanStreamingDecoder(wan21_vae, latent_format.process_out)
        without_draft.advance(without_draft.decode(committed)[1])
        reference, _ = without_draft.decode(following)
    assert torch.equal(after_draft, reference)


def test_advancing_with_a_stale_pending_state_is_rejected(pack, wan21_vae):
    decoder = pack.stream_decode.WanStreamingDecoder(wan21_vae)
    with torch.inference_mode():
        _, first = decoder.decode(random_latent(1, seed=5))
        _, stale = decoder.decode(random_latent(1, seed=6))  # decoded from the same (empty) state as `first`
        decoder.advance(first)
        with pytest.raises(ValueError, match="pending"):
            decoder.advance(stale)


# --- node registration -------------------------------------------------------------------------------------------

def test_node_is_registered_with_tooltips_router_socket_and_hidden_unique_id(comfy_pack):
    node_class = comfy_pack.NODE_CLASS_MAPPINGS["SDVGSpeculativeVideo"]
    assert comfy_pack.NODE_DISPLAY_NAME_MAPPINGS["SDVGSpeculativeVideo"] == "SDVG Speculative Video"
    assert node_class.CATEGORY == "sampling/speculative"
    assert node_class.RETURN_TYPES == ("LATENT", "IMAGE", "STRING")
    schema = node_class.INPUT_TYPES()
    visible = {**schema["required"], **schema["optional"]}
    assert visible["router"][0] == "REWARD_ROUTER"
    assert visible["tau"][1]["default"] == -0.7
    assert visible["frames_per_block"][1]["default"] == 3
    assert schema["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert [name for name, spec in visible.items() if "tooltip" not in spec[1]] == []
    assert [name for name, spec in visible.items()
            if spec[0] in ("INT", "FLOAT") and not ("min" in spec[1] and "max" in spec[1])] == []


# --- the node in a ComfyUI graph ---------------------------------------------------------------------------------

def test_node_outputs_the_whole_latent_video_and_its_frames(accepted_run):
    latent_frames = NUM_BLOCKS * FRAMES_PER_BLOCK
    assert accepted_run.latent["samples"].shape == (1, 16, latent_frames, HEIGHT // 8, WIDTH // 8)
    assert accepted_run.images.shape == (1 + 4 * (latent_frames - 1), HEIGHT, WIDTH, 3)
    assert torch.isfinite(accepted_run.latent["samples"]).all()


def test_node_frames_equal_one_vae_decode_of_its_latent_output(accepted_run, comfy_nodes, wan21_vae):
    with torch.inference_mode():
        decoded = comfy_nodes.VAEDecode().decode(wan21_vae, accepted_run.latent)[0]
    torch.testing.assert_close(accepted_run.images, decoded, rtol=0, atol=1e-5)


def test_node_stats_record_the_forced_first_block_and_the_kept_draft(accepted_run):
    stats = accepted_run.stats
    assert [block["source"] for block in stats["blocks"]] == ["target", "drafter"]
    assert [block["accepted"] for block in stats["blocks"]] == [False, True]
    assert stats["blocks"][1]["score"] == pytest.approx(stats["blocks"][1]["score"])  # a number, not None
    assert stats["acceptance_rate"] == 1.0 and stats["num_blocks"] == NUM_BLOCKS and stats["tau"] == 0.0
    # The router saw the one drafted block (4 new frames per latent frame after the first block) with its prompt.
    assert accepted_run.router.calls == [(4 * FRAMES_PER_BLOCK, "a red fox in the snow")]


def test_node_advances_the_progress_bar_per_block_with_a_preview(accepted_run):
    assert [(value, total) for value, total, _, _ in accepted_run.progress] == [(1, NUM_BLOCKS), (2, NUM_BLOCKS)]
    assert all(preview is not None and preview[0] == "JPEG" for _, _, preview, _ in accepted_run.progress)
    assert {node_id for *_, node_id in accepted_run.progress} == {"sdvg-test"}


def test_rejecting_every_draft_gives_the_target_only_video(pack, wan_models, wan21_vae):
    rejecting_router = MeanBrightnessRouter()
    # Brightness is at most 1 < tau: every draft is rejected.
    latent, images, stats_text = run_node(pack, wan_models, wan21_vae, router=rejecting_router, tau=2.0)
    target_only_router = MeanBrightnessRouter()
    target_latent, target_images, target_stats_text = run_node(pack, wan_models, wan21_vae, router=target_only_router,
                                                               mode="target only")
    assert [block["accepted"] for block in json.loads(stats_text)["blocks"]] == [False, False]
    assert len(rejecting_router.calls) == 1 and target_only_router.calls == []
    assert json.loads(target_stats_text)["tau"] == "inf"
    assert torch.equal(latent["samples"], target_latent["samples"])
    assert torch.equal(images, target_images)


def test_cancel_stops_the_run_before_the_next_model_call(pack, wan_models, wan21_vae):
    import comfy.model_management

    router = MeanBrightnessRouter()
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_node(pack, wan_models, wan21_vae, router=router)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert router.calls == []


# --- named errors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(width=40), "width: expected a positive multiple of 16"),
    (dict(height=24), "height: expected a positive multiple of 16"),
    (dict(num_blocks=0), "num_blocks: expected at least 1"),
    (dict(drafter_sigmas="1.0, fast"), "drafter_sigmas: expected comma-separated numbers"),
    (dict(target_sigmas="0.5, 0.9"), "target_sigmas: sigmas must be strictly decreasing"),
    (dict(target_sigmas="1.5, 0.5"), r"target_sigmas: every sigma must be in \(0, 1\]"),
    (dict(drafter=object()), "drafter: expected a ComfyUI MODEL"),
    (dict(positive=[[torch.zeros(1, 8, 768), {}]]), "positive: expected CONDITIONING from the Wan text encoder"),
    (dict(router=object()), "router: expected a REWARD_ROUTER"),
])
def test_bad_inputs_fail_with_the_input_named(pack, wan_models, wan21_vae, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_node(pack, wan_models, wan21_vae, **overrides)


def test_an_image_to_video_wan_is_rejected_by_name(pack, wan_models, wan21_vae):
    with pytest.raises(ValueError, match="target: expected a Wan 2.1 T2V DiT .*got WAN21_I2V"):
        run_node(pack, wan_models, wan21_vae, target=wan_models["i2v"])


def test_drafter_and_target_with_different_latent_channels_are_rejected(pack, wan_models, wan21_vae):
    with pytest.raises(ValueError, match=r"drafter and target must share latent channels \(got \(16, 16\) and "
                                         r"\(32, 16\)\)"):
        run_node(pack, wan_models, wan21_vae, target=wan_models["wide_latent"])


@pytest.mark.parametrize("field, value, message", [
    ("patch_size", (1, 4, 4), r"drafter and target must share patch size \(got \(1, 2, 2\) and \(1, 4, 4\)\)"),
    ("text_width", 768, r"drafter and target must share text width \(got 4096 and 768\)"),
])
def test_drafter_and_target_with_different_patch_or_text_width_are_rejected(pack, field, value, message):
    # ComfyUI's detection fixes patch size and text width for Wan 2.1, so these are stand-in modules.
    def stand_in(patch_size=(1, 2, 2), text_width=4096):
        return SimpleNamespace(in_dim=16, out_dim=16, patch_size=patch_size,
                               text_embedding=[SimpleNamespace(in_features=text_width)])

    with pytest.raises(ValueError, match=message):
        pack.sdvg.check_same_latent_space(stand_in(), stand_in(**{field: value}))


def test_draft_only_mode_keeps_every_draft_after_the_forced_first_block(pack, wan_models, wan21_vae):
    router = MeanBrightnessRouter()
    _, _, stats_text = run_node(pack, wan_models, wan21_vae, router=router, mode="draft only", tau=50.0)
    stats = json.loads(stats_text)
    assert [block["source"] for block in stats["blocks"]] == ["target", "drafter"]
    assert stats["tau"] == "-inf" and router.calls == []
    assert math.isfinite(stats["seconds"])
