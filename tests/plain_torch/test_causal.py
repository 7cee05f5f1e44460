"""The KV-cached runner equals the block-causal reference forward, block by block."""
import pytest
import torch

from samplers.models.causal_runner import (CausalWanRunner, cache_frames, kv_cache_bytes, pixel_buffer_frames,
                                         recompute_context)
from samplers.models.wan import WanConfig
from support.wan import tiny_inputs, tiny_wan, single_thread  # noqa: F401  (autouse fixture)

FRAMES_PER_BLOCK = 3


def reference_prediction(model, x, context, block, sigma, local_attn_frames=None, sink_frames=0):
    """Full block-causal forward over committed blocks ++ block `block` (committed ones at t = 0), restricted to the
    block."""
    start, end = block * FRAMES_PER_BLOCK, (block + 1) * FRAMES_PER_BLOCK
    timestep = torch.zeros(x.shape[0], end)
    timestep[:, start:] = sigma * 1000.0
    with torch.no_grad():
        out = model(x[:, :, :end], timestep, context, frames_per_block=FRAMES_PER_BLOCK,
                    local_attn_frames=local_attn_frames, sink_frames=sink_frames)
    return out[:, :, start:]


def make_runner(model, frames, batch=1, **options):
    return CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=frames,
                           frames_per_block=FRAMES_PER_BLOCK, batch_size=batch, **options)


def run_blocks(model, runner, x, context, num_blocks, sigma, **window):
    """Max |predict - reference| over the blocks, committing the clean latents x after each block."""
    runner.reset(context)
    worst = 0.0
    for block in range(num_blocks):
        current = x[:, :, block * FRAMES_PER_BLOCK:(block + 1) * FRAMES_PER_BLOCK]
        prediction = runner.predict(current, sigma)
        expected = reference_prediction(model, x, context, block, sigma, **window)
        worst = max(worst, (prediction - expected).abs().max().item())
        runner.commit(current)
    return worst


def test_kv_cached_predict_equals_block_causal_forward_over_several_blocks():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=12)
    assert run_blocks(model, make_runner(model, 12), x, context, 4, sigma=0.8) < 1e-5


def test_kv_cached_predict_equals_reference_with_batch_of_two():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=9, batch=2)
    assert run_blocks(model, make_runner(model, 9, batch=2), x, context, 3, sigma=0.5) < 1e-5


@pytest.mark.parametrize("local_attn_frames, sink_frames", [(6, 0), (7, 2), (4, 1), (9, 3)])
def test_window_and_sink_equal_masked_reference(local_attn_frames, sink_frames):
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=15)
    runner = make_runner(model, 15, local_attn_frames=local_attn_frames, sink_frames=sink_frames)
    window = dict(local_attn_frames=local_attn_frames, sink_frames=sink_frames)
    assert run_blocks(model, runner, x, context, 5, sigma=0.9, **window) < 1e-5


def test_window_changes_the_prediction():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=12)
    full = reference_prediction(model, x, context, 3, 0.9)
    windowed = reference_prediction(model, x, context, 3, 0.9, local_attn_frames=6)
    assert not torch.allclose(full, windowed)


def test_window_cache_holds_only_frames_later_blocks_see():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=15)
    runner = make_runner(model, 15, local_attn_frames=7, sink_frames=2)
    run_blocks(model, runner, x, context, 4, sigma=0.9, local_attn_frames=7, sink_frames=2)
    # The next block (frames 12..14) sees sink frames 0, 1 and the frames from 15 - (7 - 2) = 10 on.
    assert runner.cache.frames == [0, 1, 10, 11]
    assert runner.cache.capacity_frames == 7


def test_commit_advances_exactly_one_block():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    runner = make_runner(model, 6)
    runner.reset(context)
    runner.commit(x[:, :, :3])
    assert runner.committed_frames == 3
    assert runner.cache.end == 3 * 16 // 4  # 3 frames of (4/2) x (4/2) tokens


def test_predict_writes_nothing():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    runner = make_runner(model, 6)
    runner.reset(context)
    runner.commit(x[:, :, :3])
    first = runner.predict(x[:, :, 3:], 0.6)
    committed_keys = runner.cache.keys[1][:, :runner.cache.end].clone()
    runner.predict(torch.randn_like(x[:, :, 3:]), 0.3)
    assert runner.committed_frames == 3
    assert torch.equal(runner.cache.keys[1][:, :runner.cache.end], committed_keys)
    assert torch.equal(runner.predict(x[:, :, 3:], 0.6), first)


def test_reset_empties_the_cache():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    runner = make_runner(model, 6)
    runner.reset(context)
    fresh = runner.predict(x[:, :, :3], 0.7)
    runner.commit(x[:, :, :3])
    runner.reset(context)
    assert runner.committed_frames == 0
    assert torch.equal(runner.predict(x[:, :, :3], 0.7), fresh)


def test_cache_is_preallocated_in_the_compute_dtype():
    model = tiny_wan().to(torch.bfloat16)
    runner = make_runner(model, 6)
    assert runner.dtype == torch.bfloat16
    assert all(k.dtype == torch.bfloat16 and k.shape == (1, 6 * 4, 2, 32) for k in runner.cache.keys)
    assert runner.cache.nbytes == kv_cache_bytes(model, tokens_per_frame=4, max_frames=6, dtype=torch.bfloat16)


def test_bfloat16_runner_is_close_to_float32_reference():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    runner = make_runner(tiny_wan().to(torch.bfloat16), 6)
    runner.reset(context)
    runner.commit(x[:, :, :3])
    prediction = runner.predict(x[:, :, 3:], 0.8)
    assert prediction.dtype == torch.bfloat16
    expected = reference_prediction(model, x, context, 1, 0.8)
    assert (prediction.float() - expected).abs().max() < 0.1 * expected.abs().max()


def test_kv_cache_bytes_of_wan_1_3b_and_14b_at_832x480_81_frames():
    gib = 2 ** 30
    tokens_per_frame = (480 // 16) * (832 // 16)  # 1560
    max_frames = (81 - 1) // 4 + 1  # 21 latent frames
    small = WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
    large = WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
    assert kv_cache_bytes(small, tokens_per_frame=tokens_per_frame, max_frames=max_frames,
                          dtype=torch.bfloat16) / gib == pytest.approx(5.62, abs=0.01)
    assert kv_cache_bytes(large, tokens_per_frame=tokens_per_frame, max_frames=max_frames,
                          dtype=torch.bfloat16) / gib == pytest.approx(25.0, abs=0.01)


def test_predict_before_reset_raises():
    model = tiny_wan()
    x, _ = tiny_inputs(model, frames=3)
    with pytest.raises(RuntimeError, match="reset"):
        make_runner(model, 3).predict(x, 0.5)


def test_block_beyond_max_frames_raises():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=3)
    runner = make_runner(model, 3)
    runner.reset(context)
    runner.commit(x)
    with pytest.raises(ValueError, match="max_frames"):
        runner.predict(x, 0.5)


def test_block_of_wrong_shape_raises():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=2)
    runner = make_runner(model, 6)
    runner.reset(context)
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        runner.predict(x, 0.5)


def test_bad_window_raises():
    with pytest.raises(ValueError, match="local_attn_frames"):
        make_runner(tiny_wan(), 9, local_attn_frames=2)


def test_krea_recompute_context_is_first_latent_then_reencoded_oldest_pixel():
    latents = torch.arange(12.0).view(1, 1, 12, 1, 1).expand(1, 2, 12, 1, 1)

    def frames(context):
        return context[0, 0, :, 0, 0].tolist()

    def encoded():
        return torch.full((1, 2, 1, 1, 1), -1.0)

    # Krea's get_clean_context_frames with K = 3, 3 frames per block: block 1 reads latents 0-2, block k >= 2
    # [encode(oldest pixel), 3k - 2, 3k - 1].
    assert frames(recompute_context(latents[:, :, :3], 3, 3, encoded)) == [0, 1, 2]
    assert frames(recompute_context(latents[:, :, :6], 3, 3, encoded)) == [-1, 4, 5]
    assert frames(recompute_context(latents[:, :, :9], 3, 3, encoded)) == [-1, 7, 8]
    # K = 6: the first latent frame stays while (k - 1) F < K.
    assert frames(recompute_context(latents[:, :, :6], 6, 3, encoded)) == [0, 1, 2, 3, 4, 5]
    assert frames(recompute_context(latents[:, :, :9], 6, 3, encoded)) == [-1, 4, 5, 6, 7, 8]
    assert frames(recompute_context(latents[:, :, :12], 6, 3, encoded)) == [-1, 7, 8, 9, 10, 11]
    assert pixel_buffer_frames(3) == 9


def test_krea_runner_cache_holds_context_plus_one_block_at_positions_from_k():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=3)
    runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=15, frames_per_block=3,
                             protocol="krea_realtime", context_frames=3)
    runner.reset(context)
    assert runner.cache.capacity_frames == 6 == cache_frames("krea_realtime", 15, 3, context_frames=3)
    assert runner.block_start_frame == 0
    for block in range(1, 5):
        runner.commit(x, context=x)
        assert runner.cache.frames == [0, 1, 2] and runner.block_start_frame == 3
        assert runner.committed_frames == 3 * block
        runner.predict(x, 0.5)
        assert runner.cache.end == 3 * runner.tokens_per_frame  # predict wrote scratch only


def test_krea_runner_block_equals_masked_full_forward_over_context_and_block():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=15, frames_per_block=3,
                             protocol="krea_realtime", context_frames=3)
    runner.reset(context)
    runner.commit(x[:, :, :3], context=x[:, :, :3])
    ours = runner.predict(x[:, :, 3:], 0.7, 640.0)
    # Full forward over [context at t = 0, block at t = 640], positions 0-5, block-causal mask in blocks of 3.
    timestep = torch.tensor([[0.0] * 3 + [640.0] * 3])
    full = model(x, timestep, context, frames_per_block=3)[:, :, 3:]
    assert torch.allclose(ours, full, atol=1e-5)
