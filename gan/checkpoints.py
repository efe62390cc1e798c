"""Reading the framework's own .ckpt/.pt files without letting them run code.

Unpickling can call any function a file names, so `torch.load(weights_only=False)` of a crafted checkpoint
(`gan.evaluate ckpt=...`, `gan.run resume=...`) would run its code. Every file this framework writes (Lightning's
checkpoints with our `gan_config`, `gan_progress` and datamodule state, the reference statistics, the trained
classifiers) holds only tensors, plain containers (dict, OrderedDict, list, tuple) and scalars (int, float,
bool, str, None), which torch's weights-only unpickler accepts as they are. SAFE_GLOBALS lists what it would
need beyond those: nothing. Keep it so: store new state as tensors, lists and dicts (a torch.Generator's state
is a uint8 tensor; numpy arrays go in as tensors), rather than allow-listing classes here.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from gan.errors import UserError

# Non-tensor, non-plain types the framework (and Lightning) writes into its files: none (see the module docstring).
SAFE_GLOBALS: list[Any] = []

# Messages of torch's weights-only unpickler when a file names a function or class it does not allow.
_REFUSED = ("Unsupported global", "is blocked", "Can only create new object", "Can only build",
            "unrecognized function")


def load(path: str | os.PathLike, map_location: Any = "cpu", cache: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` under SAFE_GLOBALS, with a UserError for a file that would need
    anything else (it could run code), and for a truncated or corrupt one. `cache`: the file is a cache entry
    (recomputed when deleted) rather than a checkpoint, which changes the advice in the message."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign file: the error says it
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if any(marker in str(error) for marker in _REFUSED):
            raise UserError(_refused_message(path, str(error), cache)) from None
        raise UserError(_unreadable_message(path, error, cache)) from None
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EIO, None):  # e.g. permission denied, not a file
            raise UserError(f"Could not read {path}: {error.strerror or error}. Check the path and the file's "
                            f"permissions.") from None
        raise UserError(_unreadable_message(path, error, cache)) from None
    except RuntimeError as error:
        if "CUDA" in str(error) and "deserialize" in str(error):  # a map_location problem, not a bad file
            raise
        raise UserError(_unreadable_message(path, error, cache)) from None
    except (EOFError, ValueError, KeyError, IndexError, TypeError, AssertionError) as error:  # a damaged file
        raise UserError(_unreadable_message(path, error, cache)) from None


def load_run_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by `python -m gan.run` (it carries the run's `gan_config`), loaded safely."""
    checkpoint = load(path, map_location)
    if not isinstance(checkpoint, dict) or "gan_config" not in checkpoint:
        raise UserError(
            f"{path} is a PyTorch file but not a checkpoint of this framework (it carries no `gan_config`). "
            f"Expected a .ckpt written by `python -m gan.run` (in <run dir>/checkpoints/) or the run directory itself."
        )
    return checkpoint


def _refused_message(path: Path, error: str, cache: bool) -> str:
    found = re.search(r"GLOBAL (\S+?)(?: was not| whose|\s*$)", error) or re.search(r"got (<[^>]+>|\S+)", error)
    name = f"`{found.group(1)}`" if found else "an object"
    return (
        f"Refused to load {path}: unpickling it needs {name}, which this framework never writes into its "
        f"{'cache files' if cache else 'checkpoints'} (they hold only tensors, numbers, strings, lists and dicts), "
        f"and loading it could execute code from the file. "
        + ("Delete it: the cache entry is computed again. " if cache else
           "Use a checkpoint written by `python -m gan.run`. ")
        + "There is no switch to load such a file anyway: if you trust it, load it yourself with "
          "`torch.load(path, weights_only=False)` and `torch.save` its tensors and plain values into a new file."
    )


def _unreadable_message(path: Path, error: BaseException, cache: bool) -> str:
    size = path.stat().st_size if path.is_file() else 0
    text = str(error).split("WeightsUnpickler error:")[-1].strip()
    reason = text.split(". ")[0].splitlines()[0][:160] if text else "the file ends too early"
    if cache:
        advice = "It is a cache entry: delete it and it will be computed again."
    else:
        in_run = path.parent.name == "checkpoints"
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path) if in_run else []
        there = f" (that directory holds {', '.join(others[-4:])})" if others else ""
        advice = (f"Use the run's previous checkpoint instead, e.g. checkpoints/g000500.ckpt or checkpoints/last.ckpt"
                  f"{there}: a run killed while saving leaves the checkpoints written before intact.")
    return (f"Could not read {path} ({size} bytes): the file is truncated or corrupt, or not a PyTorch checkpoint "
            f"({type(error).__name__}: {reason}). {advice}")
