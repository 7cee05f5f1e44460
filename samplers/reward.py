"""Reward routing for SDVG: per-frame ImageReward scores and their aggregation over a block.

A router is any object with `score(frames [F, H, W, 3] float 0..1, prompt) -> tensor [F]` and an attribute
`aggregation` ("min" | "mean" | "quantile:q"); SDVG accepts a drafted block when `aggregate(scores, aggregation)`
reaches its threshold tau. `ImageRewardRouter` is the ImageReward one: frames are preprocessed in torch (bicubic
resize of the short side to 224, centre crop, CLIP normalisation, no PIL), scored in batches, and the prompt's
tokens and embeddings are computed once and reused for every block.
"""
import math
import os
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .bert_tokenizer import BertTokenizer
from .image_reward_model import CLIP_MEAN, CLIP_STD, TEXT_MAX_LENGTH, load_image_reward

WEIGHTS_FILENAMES = ("ImageReward.safetensors", "ImageReward.pt")
# name -> where it comes from; everything ImageReward would otherwise fetch from a hub at first use.
SUPPORT_FILES = {
    "med_config.json": "the THUDM/ImageReward repository on Hugging Face (file med_config.json)",
    "vocab.txt": "the bert-base-uncased repository on Hugging Face (file vocab.txt)",
    "tokenizer_config.json": "the bert-base-uncased repository on Hugging Face (file tokenizer_config.json)",
}
WEIGHTS_SOURCE = "the THUDM/ImageReward repository on Hugging Face (file ImageReward.pt)"


def aggregate(scores, how="min"):
    """Aggregate per-frame scores `[F]` into one block score (a Python float).

    how: "min" (the paper: a block is as good as its worst frame), "mean", or "quantile:q" with q in [0, 1].
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if scores.numel() == 0:
        raise ValueError("aggregate: scores is empty; expected at least one frame score")
    if how == "min":
        return float(scores.min())
    if how == "mean":
        return float(scores.mean())
    if isinstance(how, str) and how.startswith("quantile:"):
        try:
            q = float(how.split(":", 1)[1])
        except ValueError:
            q = float("nan")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"aggregation {how!r}: expected 'quantile:q' with q in [0, 1]")
        return float(torch.quantile(scores, q))
    raise ValueError(f"aggregation {how!r}: expected 'min', 'mean' or 'quantile:q'")


def check_aggregation(how):
    """Raise ValueError unless `how` is an aggregation `aggregate` understands; return it."""
    aggregate([0.0], how)
    return how


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------------------------
def resized_size(height, width, size):
    """Output (height, width) of torchvision's Resize(size) for an int size: short side -> size, long side
    truncated to int(size * long / short)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess_frames(frames, image_size=224):
    """ComfyUI IMAGE frames -> ImageReward pixels.

    frames: [F, H, W, C] float in 0..1 (C = 3; an alpha channel is dropped, one channel is repeated).
    Returns [F, 3, image_size, image_size] float32, CLIP-normalised, on the frames' device: the short side resized
    to `image_size` with antialiased bicubic (the filter PIL uses), horizontal then vertical, each pass rounded to
    8-bit levels as PIL's are, centre crop (torchvision's rounding), then (x - mean) / std.
    """
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames: expected an IMAGE tensor [F, H, W, 3] with values in 0..1, got shape "
                         f"{tuple(frames.shape)}")
    pixels = frames.float()
    if pixels.shape[-1] == 1:
        pixels = pixels.expand(-1, -1, -1, 3)
    pixels = pixels[..., :3].permute(0, 3, 1, 2)
    height, width = pixels.shape[-2:]
    new_height, new_width = resized_size(height, width, image_size)
    # ImageReward was trained and is published with PIL's resize: two passes (horizontal, then vertical), each
    # rounded to 8 bits. Doing the same keeps the pack's scores within PIL's fixed-point rounding of the package's.
    for size in ((height, new_width), (new_height, new_width)):
        if size != tuple(pixels.shape[-2:]):
            pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False)
            pixels = pixels.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)
    top = int(round((new_height - image_size) / 2.0))
    left = int(round((new_width - image_size) / 2.0))
    pixels = pixels[:, :, top: top + image_size, left: left + image_size]
    mean = torch.tensor(CLIP_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
def model_device(model):
    return next(model.parameters()).device


def encode_prompt(model, tokenizer, prompt, device):
    """Prompt -> (text embeddings [1, L, hidden], None), L = number of real tokens (<= 35).

    Padding is dropped instead of masked: ImageReward masks padded keys with -10000 before the softmax, which is
    an exact zero weight, so the first token's output does not depend on them.
    """
    input_ids, attention_mask = tokenizer.encode(prompt, max_length=TEXT_MAX_LENGTH)
    length = sum(attention_mask)
    ids = torch.tensor([input_ids[:length]], dtype=torch.long, device=device)
    with torch.inference_mode():
        return model.encode_text(ids)


def score_frames(model, tokenizer, frames, prompt, *, frames_per_batch=None, device=None, text_embeds=None,
                 interrupt=None):
    """ImageReward of each frame: frames [F, H, W, 3] float 0..1, prompt str -> tensor [F] float32 (CPU).

    All frames go through the network in one batch, or in sub-batches of `frames_per_batch` (memory bound).
    `text_embeds` (from `encode_prompt`) skips tokenization and the embedding layer; `interrupt` is called
    between sub-batches (it raises to cancel).
    """
    device = device if device is not None else model_device(model)
    if text_embeds is None:
        text_embeds = encode_prompt(model, tokenizer, prompt, device)
    if frames.ndim == 3:
        frames = frames[None]
    count = frames.shape[0]
    if count == 0:
        raise ValueError("frames: expected at least one frame, got an empty batch")
    step = count if not frames_per_batch else max(1, int(frames_per_batch))
    image_size = model.config.image_size
    rewards = []
    with torch.inference_mode():
        for start in range(0, count, step):
            if interrupt is not None and start > 0:
                interrupt()
            pixels = preprocess_frames(frames[start: start + step].to(device), image_size).to(model.dtype)
            rewards.append(model.reward(pixels, text_embeds).float().cpu())
    return torch.cat(rewards)


class ImageRewardRouter:
    """The ImageReward router SDVG consumes: `score(frames, prompt) -> [F]` and its settings.

    model: `ImageReward` (samplers.image_reward_model); tokenizer: `BertTokenizer` built from the local vocab.
    aggregation: "min" | "mean" | "quantile:q", read by SDVG through `aggregate`.
    frames_per_batch: frames per network call (0 or None: the whole block at once).
    prepare: optional callable run before each scoring that makes the weights ready and returns the device to
        compute on (ComfyUI: load the ModelPatcher with `load_models_gpu`); default: the weights' device.
    patcher: optional ComfyUI ModelPatcher wrapping `model`, for consumers that load it themselves.
    interrupt: optional callable invoked between sub-batches (raises to cancel).
    """

    def __init__(self, model, tokenizer, aggregation="min", frames_per_batch=16, prepare=None, patcher=None,
                 interrupt=None, text_cache_size=8):
        self.model = model
        self.tokenizer = tokenizer
        self.aggregation = check_aggregation(aggregation)
        self.frames_per_batch = frames_per_batch
        self.prepare = prepare
        self.patcher = patcher
        self.interrupt = interrupt
        self.text_cache_size = text_cache_size
        self._text_cache = OrderedDict()

    def text_embeddings(self, prompt, device):
        """The prompt's text embeddings on `device`, computed once per (prompt, device, dtype) and reused."""
        key = (prompt, str(device), self.model.dtype)
        cached = self._text_cache.get(key)
        if cached is None:
            cached = encode_prompt(self.model, self.tokenizer, prompt, device)
            self._text_cache[key] = cached
            while len(self._text_cache) > self.text_cache_size:
                self._text_cache.popitem(last=False)
        else:
            self._text_cache.move_to_end(key)
        return cached

    def score(self, frames, prompt):
        """frames [F, H, W, 3] float 0..1 (ComfyUI IMAGE), prompt str -> per-frame rewards [F] float32 (CPU)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        device = self.prepare() if self.prepare is not None else model_device(self.model)
        return score_frames(self.model, self.tokenizer, frames, prompt, frames_per_batch=self.frames_per_batch,
                            device=device, text_embeds=self.text_embeddings(prompt, device),
                            interrupt=self.interrupt)

    def score_block(self, frames, prompt):
        """(per-frame scores [F], aggregate over the block as a float)."""
        scores = self.score(frames, prompt)
        return scores, aggregate(scores, self.aggregation)

    def __repr__(self):
        return (f"ImageRewardRouter(aggregation={self.aggregation!r}, frames_per_batch={self.frames_per_batch}, "
                f"dtype={self.model.dtype})")


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------
class ImageRewardFilesMissing(FileNotFoundError):
    """ImageReward files are missing; `missing` lists the file names, the message says where they must go."""

    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = list(missing)


def _unique(paths):
    seen, out = set(), []
    for path in paths:
        if path and os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            out.append(path)
    return out


def locate_image_reward_files(weights_path, search_dirs=()):
    """Find the weights and the support files; never downloads anything.

    weights_path: path of ImageReward.pt / .safetensors. Each support file (med_config.json, vocab.txt,
    tokenizer_config.json) is taken from the weights' folder first, then from `search_dirs` in order.
    Returns {"weights", "med_config.json", "vocab.txt", "tokenizer_config.json"} -> path.
    Raises ImageRewardFilesMissing naming every missing file, where it comes from and where it must go.
    """
    search_dirs = _unique(list(search_dirs))
    places = ", ".join(search_dirs) if search_dirs else "(no image_reward model folder is configured)"
    if not weights_path or not os.path.isfile(weights_path):
        raise ImageRewardFilesMissing(
            f"ImageReward weights not found: {weights_path!r} is not a file. Download ImageReward.pt from "
            f"{WEIGHTS_SOURCE} (or convert it to ImageReward.safetensors with scripts/convert_image_reward.py) and "
            f"put it in one of: {places}", [os.path.basename(weights_path or "ImageReward.pt")])
    folders = _unique([os.path.dirname(os.path.abspath(weights_path))] + search_dirs)
    found, missing = {"weights": weights_path}, []
    for name in SUPPORT_FILES:
        path = next((os.path.join(folder, name) for folder in folders
                     if os.path.isfile(os.path.join(folder, name))), None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        lines = [f"  - {name}: download it from {SUPPORT_FILES[name]}" for name in missing]
        raise ImageRewardFilesMissing(
            "ImageReward needs files that are missing (nothing is downloaded at run time):\n" + "\n".join(lines)
            + f"\nPut them next to the weights, in {folders[0]}" + (
                f" (or in any of: {', '.join(folders[1:])})" if len(folders) > 1 else ""), missing)
    return found


def load_image_reward_router(weights_path, search_dirs=(), *, aggregation="min", device="cpu",
                             dtype=torch.float32, frames_per_batch=16, operations=None):
    """Locate the files, load the model (strict, memory-mapped) and the tokenizer, and return a router.

    The returned router computes on the weights' device; ComfyUI's node replaces `prepare`/`patcher`.
    """
    check_aggregation(aggregation)
    files = locate_image_reward_files(weights_path, search_dirs)
    tokenizer = BertTokenizer.from_files(files["vocab.txt"], files["tokenizer_config.json"])
    model = load_image_reward(files["weights"], files["med_config.json"], device=device, dtype=dtype,
                              operations=operations)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"vocab.txt ({files['vocab.txt']}) plus [DEC]/[ENC] has {tokenizer.vocab_size} tokens but "
                         f"the model has {model.config.vocab_size} word embeddings: use bert-base-uncased's vocab.txt")
    return ImageRewardRouter(model, tokenizer, aggregation=aggregation, frames_per_batch=frames_per_batch)


def quantile_aggregation(q):
    """The aggregation string for the q-quantile, e.g. quantile_aggregation(0.1) == 'quantile:0.1'."""
    if not (isinstance(q, (int, float)) and math.isfinite(q) and 0.0 <= q <= 1.0):
        raise ValueError(f"quantile: expected a number in [0, 1], got {q!r}")
    return f"quantile:{float(q):g}"
