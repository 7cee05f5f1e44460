"""Finding ImageReward's weights and support files on disk; nothing is ever downloaded."""
import os

WEIGHTS_FILENAMES = ("ImageReward.safetensors", "ImageReward.pt")
# name -> where it comes from; everything ImageReward would otherwise fetch from a hub at first use.
SUPPORT_FILES = {
    "med_config.json": "the THUDM/ImageReward repository on Hugging Face (file med_config.json)",
    "vocab.txt": "the bert-base-uncased repository on Hugging Face (file vocab.txt)",
    "tokenizer_config.json": "the bert-base-uncased repository on Hugging Face (file tokenizer_config.json)",
}
WEIGHTS_SOURCE = "the THUDM/ImageReward repository on Hugging Face (file ImageReward.pt)"


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
