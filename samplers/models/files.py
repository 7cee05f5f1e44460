"""Reading model files: the one place that turns a damaged or wrong file into an error naming it.

Every error says which file, what was expected there and what to do (`remedy`, given by the caller, who knows
where the file comes from). Only the reading errors of the formats are caught, never `Exception`.
"""
import json
import pickle

import torch


class ModelFileError(ValueError):
    """A weights or support file cannot be used; the message names the file, what was expected and what to do."""


def _reason(error):
    """The informative line of a reader's error (torch's weights-only refusal buries it in a paragraph)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.endswith("WeightsUnpickler error:") and index + 1 < len(lines):
            return lines[index + 1]
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return (lines[0] if lines else type(error).__name__)[:200]


def load_tensors(path, what, remedy, flat=True):
    """The tensors in a weights file: `.safetensors` / `.sft`, or a PyTorch file read with weights_only=True
    (memory-mapped when its format allows, so loading does not hold two copies in RAM).

    what: what the file should hold, e.g. "ImageReward weights (a flat dict of tensors)"; remedy: what to do when it
    is damaged, e.g. "download ImageReward.pt again from ...". flat: require {name: tensor} (else any dict).
    Raises ModelFileError for a truncated or corrupt file, a pickle that is not a weights file, or other contents.
    """
    if str(path).lower().endswith((".safetensors", ".sft")):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise ModelFileError(f"{path}: not a readable safetensors file ({_reason(error)}); expected {what}. It is "
                                 f"damaged or incomplete (an interrupted download or copy?): {remedy}") from None
    try:
        try:
            contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # only the legacy (pre-zip) format cannot be memory-mapped
                raise
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelFileError(f"{path}: not a PyTorch weights file ({_reason(error)}); expected {what}, saved with "
                             "torch.save. Other pickles are refused, since loading them could run code. "
                             f"{remedy}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise ModelFileError(f"{path}: a truncated or damaged PyTorch file ({_reason(error)}); expected {what}. "
                             f"{remedy}") from None
    if not isinstance(contents, dict) or (flat and not all(torch.is_tensor(value) for value in contents.values())):
        found = type(contents).__name__
        if isinstance(contents, dict):
            found = "a dict with " + ", ".join(sorted({type(value).__name__ for value in contents.values()}))
        raise ModelFileError(f"{path}: expected {what}, got {found}. {remedy}")
    return contents


def load_json_object(path, what, remedy):
    """A JSON file that must hold an object (a configuration); errors name the file, the position and `remedy`."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            contents = json.load(handle)
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                             f"expected {what}. {remedy}") from None
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: not a text file (not UTF-8); expected {what}. {remedy}") from None
    if not isinstance(contents, dict):
        raise ModelFileError(f"{path}: expected {what} (a JSON object), got a JSON {type(contents).__name__}. "
                             f"{remedy}")
    return contents
