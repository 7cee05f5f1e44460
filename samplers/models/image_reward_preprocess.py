"""ComfyUI IMAGE frames -> ImageReward's input pixels, in torch (no PIL), as the published model was trained."""
import torch
import torch.nn.functional as F

from .image_reward import CLIP_MEAN, CLIP_STD


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
