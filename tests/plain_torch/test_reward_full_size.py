"""ImageReward at its real size (random weights, generated vocabulary), and against the `image-reward` package.

The default run saves a full-size random checkpoint, loads it back through the pack's loader and checks the scores
(slow: a ~1.7 GB file). The tests marked `reference` compare the pack with `image-reward` 1.5 itself, which cannot
be imported beside current transformers: they run it in a separate environment whose python is given by
IMAGE_REWARD_REFERENCE_PYTHON (.ci/reference_image_reward.sh builds one), on the same weights file, vocabulary and
frames.
"""
import gc
import json
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch

from support.reward import FULL, PROMPTS, random_frames, random_image_reward, write_image_reward_folder
from samplers.models.bert_tokenizer import BertTokenizer
from samplers.models.image_reward_preprocess import preprocess_frames
from samplers.models.reward_router import load_image_reward_router, score_frames
from support import REPO

REFERENCE_SCRIPT = os.path.join(REPO, "tests", "reward_reference", "run_reference.py")
LAYOUT_FILE = os.path.join(REPO, "tests", "reward_reference", "published_layout.json")
REFERENCE_PYTHON = os.environ.get("IMAGE_REWARD_REFERENCE_PYTHON")
SKIP_REFERENCE = ("IMAGE_REWARD_REFERENCE_PYTHON is not set: point it at the python of an environment where the "
                  "image-reward package imports (bash .ci/reference_image_reward.sh builds one and runs these)")
# Prompts that exercise every tokenizer rule; the last one is longer than 35 tokens.
TOKENIZER_PROMPTS = list(PROMPTS) + [
    "", "Héllo, WORLD!", "naïve café  résumé", "unaffable quick brown fox", "a中国b", "don't stop-motion #1 (4k)",
    "red\x00\u200b car\tblue\ncar", "a [SEP] b[ENC] [sep] [CLS]x", "Ωmega ✨ sky", "e\u0301 vs \u00e9",
    " ".join(["cinematic shot of a dog running on the beach at sunset"] * 5),
]


@pytest.fixture(scope="module")
def full_size():
    """A full-size random ImageReward folder (generated vocabulary), three 8-bit frames and the in-memory model's
    score of the first one."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="image_reward_full_")
    model = random_image_reward(FULL, seed=1)
    weights, _ = write_image_reward_folder(folder, FULL, model=model)
    # 8-bit frames so that the package's PIL path sees exactly the pixels the pack sees.
    frames = (random_frames(3, 480, 832, seed=12) * 255).round() / 255
    tokenizer = BertTokenizer.from_files(os.path.join(folder, "vocab.txt"),
                                         os.path.join(folder, "tokenizer_config.json"))
    # One frame keeps the default run short; the reference tests score all three.
    expected = score_frames(model, tokenizer, frames[:1], PROMPTS[0])
    del model
    gc.collect()
    yield SimpleNamespace(folder=folder, weights=weights, frames=frames, expected=expected)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)


@pytest.fixture(scope="module")
def full_size_router(full_size):
    return load_image_reward_router(full_size.weights)


@pytest.mark.slow
def test_full_size_checkpoint_saves_loads_and_scores_like_the_model_it_came_from(full_size, full_size_router):
    assert full_size_router.model.config == FULL
    torch.testing.assert_close(full_size_router.score(full_size.frames[:1], PROMPTS[0]), full_size.expected,
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Reference: the image-reward package in its own environment
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(full_size, tmp_path_factory):
    """Run tests/reward_reference/run_reference.py with the reference python on the shared files."""
    if not REFERENCE_PYTHON:
        pytest.skip(SKIP_REFERENCE)
    work = tmp_path_factory.mktemp("reference")
    prompts_path, frames_path, pixels_path, out_path = (str(work / name) for name in (
        "prompts.json", "frames.pt", "pixels.pt", "result.json"))
    with open(prompts_path, "w", encoding="utf-8") as handle:
        json.dump(TOKENIZER_PROMPTS, handle)
    torch.save((full_size.frames * 255).round().to(torch.uint8), frames_path)
    torch.save(preprocess_frames(full_size.frames), pixels_path)
    command = [REFERENCE_PYTHON, REFERENCE_SCRIPT, "--folder", full_size.folder, "--prompts", prompts_path,
               "--frames", frames_path, "--pixels", pixels_path, "--score-prompt", PROMPTS[0], "--out", out_path]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    assert result.returncode == 0, f"reference run failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    with open(out_path, encoding="utf-8") as handle:
        found = json.load(handle)
    print(f"reference environment: {found['versions']}")
    return found


@pytest.fixture(scope="module")
def pack_scores(full_size, full_size_router):
    """The pack's scores of the three frames (the reference tests compare against them)."""
    return full_size_router.score(full_size.frames, PROMPTS[0])


@pytest.mark.reference
@pytest.mark.slow
def test_published_layout_file_is_the_package_models_state_dict(reference):
    with open(LAYOUT_FILE, encoding="utf-8") as handle:
        committed = json.load(handle)
    assert reference["layout"]["state_dict"] == committed["state_dict"]
    assert reference["layout"]["parameters"] == committed["parameters"]


@pytest.mark.reference
@pytest.mark.slow
def test_tokenizer_matches_the_packages_bert_tokenizer(reference, full_size):
    tokenizer = BertTokenizer.from_files(os.path.join(full_size.folder, "vocab.txt"),
                                         os.path.join(full_size.folder, "tokenizer_config.json"))
    assert reference["tokenizer_size"] == tokenizer.vocab_size
    for prompt, expected in zip(TOKENIZER_PROMPTS, reference["tokens"], strict=True):
        assert tokenizer.encode(prompt) == (expected["input_ids"], expected["attention_mask"]), prompt


@pytest.mark.reference
@pytest.mark.slow
def test_network_scores_match_the_package_on_the_same_pixels(reference, pack_scores):
    """Tokenizer + network: the package's score_gard on the pack's preprocessed pixels, |difference| < 1e-4."""
    package = torch.tensor(reference["network_scores"])
    print(f"network: package {package.tolist()}, max |difference| {(pack_scores - package).abs().max():.2e}")
    assert package.std() > 1e-2  # the random model tells the frames apart: the comparison is not blind
    assert (pack_scores - package).abs().max() < 1e-4, (pack_scores, package)


@pytest.mark.reference
@pytest.mark.slow
def test_torch_preprocessing_scores_match_the_packages_pil_pipeline(reference, pack_scores):
    """The whole package path (PIL image, torchvision Resize/CenterCrop, score()) against the pack's torch-only
    preprocessing on the same 8-bit frames: |difference| < 1e-3."""
    package = torch.tensor(reference["package_scores"])
    print(f"PIL pipeline: package {package.tolist()}, max |difference| {(pack_scores - package).abs().max():.2e}")
    assert (pack_scores - package).abs().max() < 1e-3, (pack_scores, package)
