"""ImageReward router: tokenizer, preprocessing, network layout, offline loading, batched scoring, aggregation.

Random weights stand in for ImageReward.pt: `TINY` (same code, small dims) for the unit tests, the full size with a
tiny generated vocabulary where the size matters. The comparison with the `image-reward` package itself is in
test_reward_reference.py (it needs a separate environment).
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from support.reward import (FULL, PROMPTS, PUBLISHED, TINY, VOCAB_TOKENS, random_frames, write_image_reward_folder,
                            write_support_files, write_vocab)
from samplers.models.bert_tokenizer import BertTokenizer, load_vocab
from samplers.models.image_reward import (CLIP_MEAN, CLIP_STD, REWARD_MEAN, REWARD_STD, build_image_reward,
                                         count_parameters, load_image_reward, load_state_dict_file,
                                         save_state_dict_safetensors)
from samplers.methods.sdvg import aggregate, quantile_aggregation
from samplers.models.image_reward_files import ImageRewardFilesMissing, locate_image_reward_files
from samplers.models.image_reward_preprocess import preprocess_frames, resized_size
from samplers.models.reward_router import ImageRewardRouter, encode_prompt, load_image_reward_router, score_frames
from support import REPO

LAYOUT_FILE = os.path.join(REPO, "tests", "reward_reference", "published_layout.json")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return BertTokenizer(load_vocab(write_vocab(str(tmp_path_factory.mktemp("vocab")))))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """models/image_reward/ with a tiny random ImageReward.pt and its support files: (folder, weights, model)."""
    folder = str(tmp_path_factory.mktemp("image_reward"))
    weights, model = write_image_reward_folder(folder, TINY, seed=0)
    return folder, weights, model


@pytest.fixture(scope="module")
def tiny_router(tiny_folder):
    return load_image_reward_router(tiny_folder[1], frames_per_batch=None)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer (bert-base-uncased rules, ImageReward's special tokens, max length 35)
# ---------------------------------------------------------------------------------------------------------------
def test_tokenizer_lowercases_strips_accents_and_splits_punctuation(tokenizer):
    assert tokenizer.tokenize("Héllo,  WORLD!") == ["hello", ",", "world", "!"]


def test_wordpiece_takes_the_longest_known_prefix_first(tokenizer):
    assert tokenizer.tokenize("unaffable") == ["un", "##aff", "##able"]


def test_word_with_an_unknown_character_becomes_a_single_unk(tokenizer):
    assert tokenizer.tokenize("cat Ωmega dog") == ["cat", "[UNK]", "dog"]


def test_cjk_characters_are_split_into_single_tokens(tokenizer):
    assert tokenizer.tokenize("a中国b") == ["a", "中", "国", "b"]


def test_control_characters_are_removed_and_whitespace_normalised(tokenizer):
    assert tokenizer.tokenize("red\x00\u200b car\tblue\ncar") == ["red", "car", "blue", "car"]


def test_literal_special_tokens_stay_whole_and_case_sensitive(tokenizer):
    assert tokenizer.tokenize("a [SEP] b[ENC]") == ["a", "[SEP]", "b", "[ENC]"]
    assert tokenizer.tokenize("[sep]") == ["[", "s", "##e", "##p", "]"]


def test_blip_added_tokens_follow_the_vocabulary(tokenizer):
    assert tokenizer.vocab["[DEC]"] == len(VOCAB_TOKENS)
    assert tokenizer.enc_token_id == len(VOCAB_TOKENS) + 1
    assert tokenizer.vocab_size == len(VOCAB_TOKENS) + 2


def test_encode_is_cls_tokens_sep_padded_to_35(tokenizer):
    ids, mask = tokenizer.encode("a red car")
    vocab = tokenizer.vocab
    # The package scores with the tokenizer's ids as they are: the first token stays [CLS] (never [ENC]).
    assert ids[:5] == [vocab["[CLS]"], vocab["a"], vocab["red"], vocab["car"], vocab["[SEP]"]]
    assert ids[5:] == [vocab["[PAD]"]] * 30
    assert mask == [1] * 5 + [0] * 30


def test_encode_truncates_long_prompts_to_35_keeping_sep(tokenizer):
    ids, mask = tokenizer.encode("cat " * 100)
    assert len(ids) == 35 and mask == [1] * 35
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1:-1] == [tokenizer.vocab["cat"]] * 33


def test_tokenizer_config_can_turn_lower_casing_off(tmp_path):
    vocab = write_vocab(str(tmp_path))
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"do_lower_case": False}))
    cased = BertTokenizer.from_files(vocab, str(config))
    assert cased.tokenize("Cat cat") == ["[UNK]", "cat"]


def test_vocabulary_without_bert_special_tokens_is_rejected():
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        BertTokenizer({"[PAD]": 0, "[UNK]": 1, "[SEP]": 2, "[MASK]": 3, "cat": 4})


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing (torch only)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width, expected", [
    ((480), 832, (224, 388)), (832, 480, (388, 224)), (224, 224, (224, 224)), (100, 150, (224, 336)),
])
def test_resized_size_follows_torchvision_short_side_rule(height, width, expected):
    assert resized_size(height, width, 224) == expected


def test_preprocess_gives_normalised_224_crops_of_each_frame():
    frames = torch.full((3, 48, 80, 3), 153 / 255)
    pixels = preprocess_frames(frames)
    assert pixels.shape == (3, 3, 224, 224) and pixels.dtype == torch.float32
    expected = (153 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(pixels, expected.view(1, 3, 1, 1).expand_as(pixels), atol=1e-5, rtol=0)


def test_preprocess_drops_an_alpha_channel():
    frames = random_frames(2, 40, 60, seed=3)
    with_alpha = torch.cat([frames, torch.rand(2, 40, 60, 1)], dim=-1)
    assert torch.equal(preprocess_frames(with_alpha), preprocess_frames(frames))


@pytest.mark.parametrize("height, width", [(480, 832), (64, 96), (300, 200)])
def test_preprocess_matches_pil_bicubic_resize_and_centre_crop_to_rounding(height, width):
    """The package resizes 8-bit PIL images with BICUBIC; torch's antialiased bicubic is the same filter, run in
    PIL's two 8-bit passes, so the two differ only where PIL's fixed-point arithmetic rounds the other way."""
    Image = pytest.importorskip("PIL.Image")
    import numpy as np

    frames = (random_frames(2, height, width, seed=1) * 255).round() / 255
    ours = preprocess_frames(frames) * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(
        1, 3, 1, 1)
    new_height, new_width = resized_size(height, width, 224)
    top, left = int(round((new_height - 224) / 2.0)), int(round((new_width - 224) / 2.0))
    reference = []
    for frame in frames:
        image = Image.fromarray((frame.numpy() * 255).round().astype(np.uint8))
        image = image.resize((new_width, new_height), Image.BICUBIC)
        array = torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255
        reference.append(array[:, top: top + 224, left: left + 224])
    difference = (ours - torch.stack(reference)).abs() * 255
    assert difference.max() < 2.01  # 8-bit levels
    assert difference.mean() < 0.05


# ---------------------------------------------------------------------------------------------------------------
# Network layout and weights
# ---------------------------------------------------------------------------------------------------------------
def layout(config):
    model = build_image_reward(config, device="meta")
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def test_full_size_layout_equals_the_published_checkpoint_layout():
    """Every key and shape of ImageReward.pt (recorded from the `image-reward` package's model by
    tests/reward_reference/run_reference.py) and nothing else: the published file loads with strict=True."""
    with open(LAYOUT_FILE, encoding="utf-8") as handle:
        published = json.load(handle)
    assert layout(PUBLISHED) == published["state_dict"]


def test_full_size_parameter_count_is_imagereward_s():
    with open(LAYOUT_FILE, encoding="utf-8") as handle:
        published = json.load(handle)
    model = build_image_reward(PUBLISHED, device="meta")
    assert count_parameters(model.state_dict()) == published["parameters"]
    assert 440e6 < published["parameters"] < 455e6


def test_tiny_config_has_the_same_key_names_as_the_full_size_up_to_layer_count():
    def names(config):
        return {re.sub(r"\.(blocks|layer)\.\d+\.", r".\1.N.", name) for name in layout(config)}

    assert names(TINY) == names(FULL)


def test_loaded_weights_equal_the_saved_ones(tiny_folder, tiny_router):
    _, _, model = tiny_folder
    saved, loaded = model.state_dict(), tiny_router.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)


def test_pt_weights_are_read_with_weights_only(tmp_path):
    """A pickle that references arbitrary code (here: a Python function) is refused, as weights_only=True does."""
    path = str(tmp_path / "ImageReward.pt")
    torch.save({"blip.visual_encoder.pos_embed": torch.zeros(1), "hook": os.getcwd}, path)
    with pytest.raises(Exception, match="weights_only|Weights only|Unsupported"):
        load_state_dict_file(path)


def test_safetensors_conversion_keeps_every_tensor_and_the_scores(tiny_folder, tiny_router, tmp_path):
    folder, weights, _ = tiny_folder
    converted = str(tmp_path / "ImageReward.safetensors")
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_image_reward.py"), weights,
                             converted], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    original, safetensors = load_state_dict_file(weights), load_state_dict_file(converted)
    assert original.keys() == safetensors.keys()
    assert all(torch.equal(original[key], safetensors[key]) for key in original)
    router = load_image_reward_router(converted, [folder], frames_per_batch=None)
    frames = random_frames(3, 40, 72, seed=5)
    torch.testing.assert_close(router.score(frames, PROMPTS[0]), tiny_router.score(frames, PROMPTS[0]), atol=1e-6,
                               rtol=0)


def test_missing_position_ids_buffer_is_rebuilt(tiny_folder, tmp_path):
    folder, _, model = tiny_folder
    state_dict = dict(model.state_dict())
    del state_dict["blip.text_encoder.embeddings.position_ids"]
    path = str(tmp_path / "no_position_ids.safetensors")
    save_state_dict_safetensors(state_dict, path)
    loaded = load_image_reward(path, os.path.join(folder, "med_config.json"))
    assert torch.equal(loaded.blip.text_encoder.embeddings.position_ids, torch.arange(64)[None])


def test_checkpoint_missing_a_weight_is_rejected_naming_it(tiny_folder, tmp_path):
    folder, _, model = tiny_folder
    state_dict = dict(model.state_dict())
    del state_dict["mlp.layers.7.bias"]
    path = str(tmp_path / "broken.safetensors")
    save_state_dict_safetensors(state_dict, path)
    with pytest.raises(ValueError, match=r"mlp\.layers\.7\.bias"):
        load_image_reward(path, os.path.join(folder, "med_config.json"))


def test_med_config_with_another_vocab_size_is_rejected(tiny_folder, tmp_path):
    _, weights, _ = tiny_folder
    med = json.loads(open(os.path.join(tiny_folder[0], "med_config.json")).read())
    med["vocab_size"] = 30524
    (tmp_path / "med_config.json").write_text(json.dumps(med))
    with pytest.raises(ValueError, match="vocab_size 30524"):
        load_image_reward(weights, str(tmp_path / "med_config.json"))


# ---------------------------------------------------------------------------------------------------------------
# Files: found offline, each missing one named with where it goes
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["med_config.json", "vocab.txt", "tokenizer_config.json"])
def test_each_missing_support_file_is_named_with_its_source_and_folder(tiny_folder, tmp_path, missing):
    present = [name for name in ("med_config.json", "vocab.txt", "tokenizer_config.json") if name != missing]
    write_support_files(str(tmp_path), TINY, files=present)
    weights = tmp_path / "ImageReward.pt"
    weights.symlink_to(tiny_folder[1])
    with pytest.raises(ImageRewardFilesMissing) as error:
        load_image_reward_router(str(weights))
    assert error.value.missing == [missing]
    message = str(error.value)
    assert missing in message and str(tmp_path) in message
    assert ("THUDM/ImageReward" if missing == "med_config.json" else "bert-base-uncased") in message
    assert all(name not in message for name in present)


def test_all_missing_support_files_are_listed_together(tiny_folder, tmp_path):
    weights = tmp_path / "ImageReward.pt"
    weights.symlink_to(tiny_folder[1])
    with pytest.raises(ImageRewardFilesMissing) as error:
        locate_image_reward_files(str(weights))
    assert error.value.missing == ["med_config.json", "vocab.txt", "tokenizer_config.json"]


def test_missing_weights_file_names_imagereward_pt_and_the_model_folders(tmp_path):
    with pytest.raises(ImageRewardFilesMissing) as error:
        locate_image_reward_files(str(tmp_path / "ImageReward.pt"), [str(tmp_path / "models" / "image_reward")])
    message = str(error.value)
    assert "ImageReward.pt" in message and "THUDM/ImageReward" in message
    assert str(tmp_path / "models" / "image_reward") in message


def test_support_files_are_found_in_another_model_folder(tiny_folder, tmp_path):
    folder, weights_source, _ = tiny_folder
    (tmp_path / "weights_only").mkdir()
    weights = tmp_path / "weights_only" / "ImageReward.pt"
    weights.symlink_to(weights_source)
    files = locate_image_reward_files(str(weights), [folder])
    assert files["med_config.json"] == os.path.join(folder, "med_config.json")
    assert files["weights"] == str(weights)


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
def test_router_scores_are_one_float32_cpu_value_per_frame(tiny_router):
    scores = tiny_router.score(random_frames(5, 40, 72), PROMPTS[0])
    assert scores.shape == (5,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.isfinite(scores).all()


def test_scores_depend_on_the_frame_and_on_the_prompt(tiny_router):
    frames = random_frames(4, 40, 72, seed=2)
    first, second = tiny_router.score(frames, PROMPTS[0]), tiny_router.score(frames, PROMPTS[1])
    assert first.std() > 1e-2
    assert (first - second).abs().max() > 1e-2


def test_batched_scoring_equals_one_by_one_scoring(tiny_router):
    frames = random_frames(6, 40, 72, seed=4)
    together = tiny_router.score(frames, PROMPTS[2])
    alone = torch.cat([tiny_router.score(frames[index: index + 1], PROMPTS[2]) for index in range(6)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_sub_batches_give_the_scores_of_one_batch(tiny_folder, tiny_router):
    frames = random_frames(7, 40, 72, seed=6)
    router = ImageRewardRouter(tiny_router.model, tiny_router.tokenizer, frames_per_batch=3)
    torch.testing.assert_close(router.score(frames, PROMPTS[0]), tiny_router.score(frames, PROMPTS[0]), atol=1e-5,
                               rtol=0)


def test_reward_is_the_normalised_head_output_of_the_first_text_token(tiny_router):
    model, tokenizer = tiny_router.model, tiny_router.tokenizer
    frames = random_frames(2, 40, 72, seed=7)
    ids, mask = tokenizer.encode(PROMPTS[0])
    with torch.no_grad():
        image_embeds = model.blip.visual_encoder(preprocess_frames(frames, model.config.image_size))
        hidden = model.blip.text_encoder(model.encode_text(torch.tensor([ids])), image_embeds, torch.tensor([mask]))
        head = model.mlp(hidden[:, 0]).squeeze(-1)
    torch.testing.assert_close(tiny_router.score(frames, PROMPTS[0]), (head - REWARD_MEAN) / REWARD_STD, atol=1e-5,
                               rtol=0)


def test_dropping_padding_equals_masking_it(tiny_router):
    model, tokenizer = tiny_router.model, tiny_router.tokenizer
    pixels = preprocess_frames(random_frames(3, 40, 72, seed=8), model.config.image_size)
    ids, mask = tokenizer.encode(PROMPTS[1])
    with torch.no_grad():
        padded = model.reward(pixels, model.encode_text(torch.tensor([ids])), torch.tensor([mask]))
        trimmed = model.reward(pixels, encode_prompt(model, tokenizer, PROMPTS[1], torch.device("cpu")))
    torch.testing.assert_close(trimmed, padded, atol=1e-5, rtol=0)


class CountingModel(torch.nn.Module):
    """Wraps an ImageReward and counts calls of the text embedding and of the image + text network."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.text_calls, self.reward_batches = 0, []

    @property
    def dtype(self):
        return self.inner.dtype

    def encode_text(self, input_ids):
        self.text_calls += 1
        return self.inner.encode_text(input_ids)

    def reward(self, pixels, text_embeds, attention_mask=None):
        self.reward_batches.append(pixels.shape[0])
        return self.inner.reward(pixels, text_embeds, attention_mask)


def test_a_fourteen_frame_block_is_scored_in_one_network_call(tiny_router):
    counting = CountingModel(tiny_router.model)
    router = ImageRewardRouter(counting, tiny_router.tokenizer, frames_per_batch=16)
    scores = router.score(random_frames(14, 48, 80, seed=9), PROMPTS[0])
    assert scores.shape == (14,)
    assert counting.reward_batches == [14]


def test_the_prompt_is_encoded_once_and_reused_across_blocks(tiny_router):
    counting = CountingModel(tiny_router.model)
    router = ImageRewardRouter(counting, tiny_router.tokenizer)
    for block in range(3):
        router.score(random_frames(2, 40, 72, seed=block), PROMPTS[0])
    assert counting.text_calls == 1
    router.score(random_frames(2, 40, 72), PROMPTS[1])
    assert counting.text_calls == 2


def test_score_frames_function_equals_the_router(tiny_router):
    frames = random_frames(3, 40, 72, seed=10)
    direct = score_frames(tiny_router.model, tiny_router.tokenizer, frames, PROMPTS[2])
    torch.testing.assert_close(direct, tiny_router.score(frames, PROMPTS[2]), atol=1e-6, rtol=0)


def test_bfloat16_router_scores_close_to_float32(tiny_folder, tiny_router):
    router = load_image_reward_router(tiny_folder[1], dtype=torch.bfloat16)
    frames = random_frames(3, 40, 72, seed=11)
    half = router.score(frames, PROMPTS[0])
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, tiny_router.score(frames, PROMPTS[0]), atol=0.1, rtol=0)


def test_non_string_prompt_is_rejected(tiny_router):
    with pytest.raises(TypeError, match="prompt"):
        tiny_router.score(random_frames(1, 40, 72), None)


def test_frames_of_the_wrong_shape_are_rejected(tiny_router):
    with pytest.raises(ValueError, match=r"frames: expected an IMAGE tensor"):
        tiny_router.score(torch.rand(2, 3, 40, 72, 5), PROMPTS[0])


# ---------------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------------
SCORES = torch.tensor([0.5, -1.0, 2.0, 0.25, 1.0])


def test_min_aggregation_is_the_worst_frame():
    assert aggregate(SCORES, "min") == -1.0


def test_mean_aggregation_is_the_average_frame():
    assert aggregate(SCORES, "mean") == pytest.approx(0.55)


@pytest.mark.parametrize("q, expected", [(0.0, -1.0), (0.5, 0.5), (1.0, 2.0), (0.25, 0.25), (0.1, -0.5)])
def test_quantile_aggregation_interpolates_linearly(q, expected):
    assert aggregate(SCORES, quantile_aggregation(q)) == pytest.approx(expected)


@pytest.mark.parametrize("how", ["max", "quantile:1.5", "quantile:x", "", None])
def test_unknown_aggregation_is_rejected(how):
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(SCORES, how)


def test_router_rejects_an_unknown_aggregation(tiny_router):
    with pytest.raises(ValueError, match="aggregation"):
        ImageRewardRouter(tiny_router.model, tiny_router.tokenizer, aggregation="median")


def test_quantile_aggregation_names_q():
    assert quantile_aggregation(0.1) == "quantile:0.1"
    with pytest.raises(ValueError, match="quantile"):
        quantile_aggregation(1.5)
