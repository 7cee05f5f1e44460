"""The memory plan: what a run keeps allocated, computed before allocation, and the docs' table it produces."""
import os

import torch

from samplers.models.causal_runner import CausalWanRunner, kv_cache_bytes
from samplers.models.memory_plan import GIB, WAN_14B, memory_plan, memory_table
from support import REPO
from support.wan import tiny_wan, single_thread  # noqa: F401  (autouse fixture)


def test_plan_counts_the_cache_each_protocol_allocates():
    model = tiny_wan()
    for protocol, window in (("self_forcing", {}), ("self_forcing", dict(local_attn_frames=6, sink_frames=3)),
                             ("krea_realtime", {})):
        runner = CausalWanRunner(model, latent_height=4, latent_width=8, max_frames=15, frames_per_block=3,
                                 protocol=protocol, **window)
        plan = memory_plan({"target": (model, protocol, torch.float32)}, width=64, height=32, num_blocks=5,
                           local_attn_frames=window.get("local_attn_frames"))
        assert plan.models["target"].kv_cache_bytes == runner.cache.nbytes
        assert plan.models["target"].cache_frames == runner.cache.capacity_frames


def test_krea_cache_does_not_grow_with_the_video_and_self_forcing_does():
    def cache(protocol, num_blocks):
        plan = memory_plan({"target": (WAN_14B, protocol, torch.bfloat16)}, width=832, height=480,
                           num_blocks=num_blocks)
        return plan.models["target"].kv_cache_bytes

    assert cache("krea_realtime", 7) == cache("krea_realtime", 9) == kv_cache_bytes(
        WAN_14B, tokens_per_frame=1560, max_frames=6)
    assert cache("self_forcing", 9) == kv_cache_bytes(WAN_14B, tokens_per_frame=1560, max_frames=27)
    assert round(cache("self_forcing", 7) / GIB, 1) == 25.0 and round(cache("krea_realtime", 7) / GIB, 2) == 7.14


def test_total_is_both_models_persistent_bytes_plus_the_largest_activations():
    model = tiny_wan()
    plan = memory_plan({"drafter": (model, "self_forcing", torch.float32),
                        "target": (model, "krea_realtime", torch.bfloat16)}, width=64, height=64, num_blocks=4)
    persistent = sum(m.kv_cache_bytes + m.text_kv_bytes for m in plan.models.values())
    assert plan.total_bytes == persistent + max(m.activation_bytes for m in plan.models.values())
    assert plan.as_dict()["inputs"]["protocols"] == {"drafter": "self_forcing", "target": "krea_realtime"}


def test_docs_table_is_what_the_function_computes():
    with open(os.path.join(REPO, "docs", "sdvg.md")) as handle:
        assert memory_table() in handle.read()


def test_a_plan_that_does_not_fit_names_bytes_and_the_inputs_driving_them():
    import pytest

    from samplers.models.memory_plan import MemoryPlanError, WAN_1_3B, check_fits

    plan = memory_plan({"drafter": (WAN_1_3B, "self_forcing", torch.bfloat16),
                        "target": (WAN_14B, "self_forcing", torch.bfloat16)}, width=832, height=480, num_blocks=9)
    assert check_fits(plan, plan.total_bytes) is plan
    with pytest.raises(MemoryPlanError, match=rf"SDVG needs {plan.total_bytes:,} bytes .* only 1,000 bytes .*"
                                              r"width 832, height 480, num_blocks 9, frames_per_block 3, "
                                              r"local_attn_frames 0.*target_protocol self_forcing"):
        check_fits(plan, 1000, "cuda:0")


def refusal(drafter_protocol, target_protocol, **inputs):
    import pytest

    from samplers.models.memory_plan import MemoryPlanError, WAN_1_3B, check_fits

    plan = memory_plan({"drafter": (WAN_1_3B, drafter_protocol, torch.bfloat16),
                        "target": (WAN_14B, target_protocol, torch.bfloat16)},
                       **{**dict(width=832, height=480, num_blocks=9), **inputs})
    with pytest.raises(MemoryPlanError) as error:
        check_fits(plan, 1000)
    return str(error.value).split("Options: ", 1)[1]


def test_refusal_never_advises_the_protocol_the_target_already_runs():
    assert "run the target under krea_realtime" in refusal("self_forcing", "self_forcing")
    assert "krea_realtime" not in refusal("self_forcing", "krea_realtime")


def test_refusal_advises_a_window_only_to_self_forcing_models_without_one():
    paper_pair = refusal("self_forcing", "krea_realtime")
    assert "give the self_forcing drafter a window" in paper_pair and "fewer num_blocks (the drafter cache" in paper_pair
    windowed = refusal("self_forcing", "krea_realtime", local_attn_frames=12, sink_frames=3)
    assert "give the self_forcing" not in windowed and "a smaller local_attn_frames (now 12)" in windowed
    assert "num_blocks" not in windowed  # a window of 12 caps the cache below the 27-frame video
    krea_only = refusal("krea_realtime", "krea_realtime")
    assert "window" not in krea_only and "num_blocks" not in krea_only and "width / height" in krea_only


def test_docs_what_fits_where_table_is_what_the_function_computes():
    from samplers.models.memory_plan import device_memory_table

    with open(os.path.join(REPO, "docs", "sdvg.md")) as handle:
        assert device_memory_table() in handle.read()


def test_fp8_target_weights_take_half_of_bf16_and_the_plan_does_not_change():
    from samplers.models.memory_plan import device_memory_rows

    (_, bf16, drafter, plan, alone, both), (_, fp8, drafter8, plan8, alone8, both8) = device_memory_rows()
    assert bf16 == 2 * fp8 and (drafter, plan) == (drafter8, plan8)
    assert (alone, both, alone8, both8) == (bf16 + plan, bf16 + drafter + plan, fp8 + plan, fp8 + drafter + plan)
    assert round(bf16 / 1e9, 1) == 28.6  # Krea Realtime 14B in bf16: ~28.6 GB (14.3 billion parameters)


def test_a_self_forcing_targets_plan_holds_its_deferred_commit_of_every_earlier_block_and_its_mask():
    from samplers.models.memory_plan import WAN_1_3B, memory_plan

    def activations(name, **options):
        plan = memory_plan({name: (WAN_1_3B, "self_forcing", torch.bfloat16)}, width=832, height=480, num_blocks=7,
                           **options)
        return plan.models[name].activation_bytes

    per_token = (6 * 1536 + 2 * 8960 + 12 * 512) * 2
    assert activations("drafter") == 3 * 1560 * per_token  # one block
    # Blocks 0-5 in one forward before block 6, attending to the 21-frame cache ++ themselves under a mask.
    assert activations("target") == 18 * 1560 * per_token + (18 * 1560) * (21 * 1560) * (1 + 2)
    # A window of 9 frames caps the cache, hence the deferred forward, at 9 frames.
    assert activations("target", local_attn_frames=9, sink_frames=3) == 9 * 1560 * per_token + (9 * 1560) ** 2 * 3
    # Groups of at most 2 blocks: 6 frames per forward; 1 block: no mask.
    assert activations("target", deferred_blocks=2) == 6 * 1560 * per_token + (6 * 1560) * (21 * 1560) * 3
    assert activations("target", deferred_blocks=1) == activations("drafter")


def test_plan_within_splits_a_self_forcing_targets_deferred_commit_until_it_fits():
    from samplers.models.memory_plan import WAN_1_3B, WAN_14B, memory_plan, plan_within

    options = dict(width=832, height=480, num_blocks=7)
    models = {"drafter": (WAN_1_3B, "self_forcing", torch.bfloat16), "target": (WAN_14B, "self_forcing",
                                                                                 torch.bfloat16)}
    whole, *groups = (memory_plan(models, deferred_blocks=blocks, **options) for blocks in (None, 5, 4, 3, 2, 1))
    sizes = [plan.total_bytes for plan in [whole] + groups]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert plan_within(whole.total_bytes, models, **options).total_bytes == whole.total_bytes  # fits whole
    chosen = plan_within(groups[2].total_bytes + 1, models, **options)  # room for groups of 3, not 4
    assert chosen.inputs["deferred_blocks"] == 3 and chosen.total_bytes == groups[2].total_bytes
    smallest = plan_within(0, models, **options)  # nothing fits: the smallest plan, for check_fits to refuse
    assert smallest.inputs["deferred_blocks"] == 1 and smallest.total_bytes == groups[-1].total_bytes
    krea = {"drafter": models["drafter"], "target": (WAN_14B, "krea_realtime", torch.bfloat16)}
    assert "deferred_blocks" not in plan_within(0, krea, **options).inputs  # nothing deferred to split
