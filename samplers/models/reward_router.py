"""The ImageReward router: per-frame scores of decoded frames against a prompt.

A router is any object with `score(frames [F, H, W, 3] float 0..1, prompt) -> [F]` and an attribute `aggregation`
("min" | "mean" | "quantile:q") that SDVG hands to its `aggregate`. `ImageRewardRouter` is the ImageReward one:
frames are preprocessed in torch (image_reward_preprocess.py), scored in batches, and the prompt's embeddings are
computed once and reused for every block.
"""
from collections import OrderedDict

import torch

from ..methods.sdvg import check_aggregation
from .bert_tokenizer import BertTokenizer
from .device import model_device
from .image_reward import TEXT_MAX_LENGTH, load_image_reward
from .image_reward_files import locate_image_reward_files
from .image_reward_preprocess import preprocess_frames


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

    model: `ImageReward` (samplers/models/image_reward.py); tokenizer: `BertTokenizer` built from the local vocab.
    aggregation: "min" | "mean" | "quantile:q", read by SDVG through `aggregate`.
    frames_per_batch: frames per network call (0 or None: the whole block at once).
    device: where to compute (ComfyUI: the patcher's load device); None: where the weights are.
    interrupt: optional callable invoked between sub-batches (raises to cancel).
    """

    TEXT_CACHE_SIZE = 8  # prompts whose embeddings are kept

    def __init__(self, model, tokenizer, aggregation="min", frames_per_batch=16, device=None, interrupt=None):
        self.model = model
        self.tokenizer = tokenizer
        self.aggregation = check_aggregation(aggregation)
        self.frames_per_batch = frames_per_batch
        self.device = device
        self.interrupt = interrupt
        self._text_cache = OrderedDict()

    def text_embeddings(self, prompt, device):
        """The prompt's text embeddings on `device`, computed once per (prompt, device, dtype) and reused."""
        key = (prompt, str(device), self.model.dtype)
        cached = self._text_cache.get(key)
        if cached is None:
            cached = encode_prompt(self.model, self.tokenizer, prompt, device)
            self._text_cache[key] = cached
            while len(self._text_cache) > self.TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        else:
            self._text_cache.move_to_end(key)
        return cached

    def score(self, frames, prompt):
        """frames [F, H, W, 3] float 0..1 (ComfyUI IMAGE), prompt str -> per-frame rewards [F] float32 (CPU)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        device = self.device if self.device is not None else model_device(self.model)
        return score_frames(self.model, self.tokenizer, frames, prompt, frames_per_batch=self.frames_per_batch,
                            device=device, text_embeds=self.text_embeddings(prompt, device),
                            interrupt=self.interrupt)

    def __repr__(self):
        return (f"ImageRewardRouter(aggregation={self.aggregation!r}, frames_per_batch={self.frames_per_batch}, "
                f"dtype={self.model.dtype})")


def load_image_reward_router(weights_path, search_dirs=(), *, aggregation="min", device="cpu",
                             dtype=torch.float32, frames_per_batch=16, operations=None):
    """Locate the files, load the model (strict, memory-mapped) and the tokenizer, and return a router.

    The returned router computes on the weights' device unless told otherwise (its `device`).
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
