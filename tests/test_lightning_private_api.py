"""The private members of Lightning that gan/ still relies on (issue 19), checked against the installed Lightning.

They are not API: any Lightning release may rename, remove or reshape them, which is why pyproject.toml bounds
pytorch-lightning from above. When a test here fails after an upgrade, its message names the member and the place in
gan/ that uses it: adapt that place (or move it to a public API), then update PRIVATE_MEMBERS and the bound.
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop

GAN = Path(__file__).resolve().parent.parent / "gan"
LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric", "lightning", "torchmetrics")


@dataclass(frozen=True)
class Private:
    owner: type
    name: str
    where: str  # the file under gan/ that uses it
    use: str
    arity: int | None = None  # a method: the positional arguments gan passes (or its override takes) after self
    instance: Callable[[Any], Any] | None = None  # an attribute set by __init__: builds an owner (given tmp_path)
    holds: type | tuple[type, ...] = object  # an attribute: the type of value gan expects there


PRIVATE_MEMBERS = [
    Private(ModelCheckpoint, "_should_skip_saving_checkpoint", "callbacks/checkpoint.py",
            "GIterCheckpoint.on_train_batch_end skips when Lightning would (fast_dev_run, not fitting, saved already)",
            arity=1),
    Private(ModelCheckpoint, "_monitor_candidates", "callbacks/checkpoint.py",
            "GIterCheckpoint overrides it (adds g_iter for the file name) and calls it", arity=1),
    Private(ModelCheckpoint, "_save_topk_checkpoint", "callbacks/checkpoint.py",
            "GIterCheckpoint writes g000500.ckpt through it", arity=2),
    Private(ModelCheckpoint, "_save_last_checkpoint", "callbacks/checkpoint.py",
            "GIterCheckpoint writes last.ckpt through it", arity=2),
    Private(RichProgressBar, "_get_train_description", "callbacks/progress.py",
            "GANProgressBar overrides it: the bar's label", arity=1),
    Private(RichProgressBar, "_initialize_train_progress_bar_id", "callbacks/progress.py",
            "GANProgressBar creates the bar with it when a resumed run starts mid-epoch", arity=0),
    Private(RichProgressBar, "_update_metrics", "callbacks/progress.py",
            "GANProgressBar shows the losses with it on logging iterations only", arity=2),
    Private(_TrainingEpochLoop, "_broadcast_sigterm_tensor", "callbacks/checkpoint.py",
            "GIterCheckpoint switches off the per-step DDP broadcast of Lightning's SIGTERM flag (it catches SIGTERM)",
            arity=0),
    Private(WandbLogger, "_wandb_init", "loggers.py",
            "GanWandbLogger drops anonymous=None from wandb.init's arguments (wandb warns about it)",
            instance=lambda tmp: WandbLogger(save_dir=str(tmp), offline=True), holds=dict),
]


def _where(member: Private) -> str:
    return f"{member.owner.__qualname__}.{member.name} (used in gan/{member.where}: {member.use})"


@pytest.mark.parametrize("member", PRIVATE_MEMBERS, ids=lambda m: f"{m.owner.__name__}.{m.name}")
def test_each_private_member_gan_uses_is_still_there_in_the_same_form(member, tmp_path):
    found = inspect.getattr_static(member.owner, member.name, None)
    if member.instance is None:
        assert found is not None, f"Lightning {pl.__version__} has no {_where(member)}. Adapt gan/{member.where}."
        assert inspect.isfunction(found), (f"Lightning {pl.__version__} changed {_where(member)} from a method into "
                                           f"{type(found).__name__}. Adapt gan/{member.where}.")
        parameters = list(inspect.signature(found).parameters.values())[1:]
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        takes_more = any(p.kind is p.VAR_POSITIONAL for p in parameters)
        assert len(required) <= member.arity and (member.arity <= len(positional) or takes_more), (
            f"Lightning {pl.__version__} changed the signature of {_where(member)} to {inspect.signature(found)}; "
            f"gan passes {member.arity} argument(s). Adapt gan/{member.where}.")
    else:
        assert not isinstance(found, property) and not inspect.isfunction(found), (
            f"Lightning {pl.__version__} turned the attribute {_where(member)} into {type(found).__name__}. "
            f"Adapt gan/{member.where}.")
        state = vars(member.instance(tmp_path))
        assert member.name in state, (f"Lightning {pl.__version__} no longer sets {_where(member)} in __init__. "
                                      f"Adapt gan/{member.where}.")
        assert isinstance(state[member.name], member.holds), (
            f"Lightning {pl.__version__} keeps a {type(state[member.name]).__name__} in {_where(member)}, gan expects "
            f"{member.holds}. Adapt gan/{member.where}.")


def _private_names(cls: type) -> dict[str, type]:
    """Lightning's private members of `cls` and its Lightning bases: class attributes and what __init__ sets."""
    names: dict[str, type] = {}
    for base in cls.__mro__:
        if base.__module__.split(".")[0] not in LIGHTNING_PACKAGES:
            continue
        assigned = re.findall(r"self\.(_[A-Za-z]\w*)\s*(?::[^=\n]+)?=(?!=)", inspect.getsource(base))
        for name in [*vars(base), *assigned]:
            if name.startswith("_") and not name.startswith("__"):
                names.setdefault(name, base)
    return names


def _lightning_imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) of each `from <Lightning package>... import ...` and `import <Lightning package>...`."""
    packages = "|".join(LIGHTNING_PACKAGES)
    pattern = r"^\s*from ((?:%s)[\w.]*) import (?:\(([^)]*)\)|([^\n]*))|^\s*import ((?:%s)[\w.]*)" % (packages, packages)
    return [(module or plain, re.findall(r"\w+", (grouped or inline).split("#")[0]))
            for module, grouped, inline, plain in re.findall(pattern, source, re.M)]


def _lightning_classes(source: str) -> set[type]:
    """The Lightning classes a file imports or names as `pl.X`, and those every file can reach (the module through
    pl_module and self, the trainer, callbacks)."""
    classes = {pl.LightningModule, pl.Trainer, pl.Callback}
    candidates = [getattr(importlib.import_module(module), name, None)
                  for module, names in _lightning_imports(source) for name in names if name != "as"]
    candidates += [getattr(pl, name, None) for name in re.findall(r"\bpl\.(\w+)", source)]
    return classes | {c for c in candidates if inspect.isclass(c)}


def test_the_list_names_every_private_lightning_member_gan_uses():
    """Every `._name` (and `def _name`, an override) in gan/ that is a private member of a Lightning class the file
    uses is in PRIVATE_MEMBERS, and every entry there is still used where it says."""
    used: dict[tuple[str, str], str] = {}
    for path in sorted(GAN.rglob("*.py")):
        source = path.read_text()
        private = {}
        for cls in _lightning_classes(source):
            for name, owner in _private_names(cls).items():
                private.setdefault(name, owner)
        for number, line in enumerate(source.splitlines(), 1):
            for name in re.findall(r"(?:\.|\bdef )(_[A-Za-z]\w*)", line):
                if name in private and not name.startswith("__"):
                    used.setdefault((name, path.relative_to(GAN).as_posix()),
                                    f"gan/{path.relative_to(GAN).as_posix()}:{number} uses {private[name].__qualname__}"
                                    f".{name}")
    listed = {(m.name, m.where) for m in PRIVATE_MEMBERS}
    unlisted = [where for key, where in sorted(used.items()) if key not in listed]
    assert not unlisted, ("gan/ uses private Lightning members that PRIVATE_MEMBERS does not list: "
                          + "; ".join(unlisted) + ". Use a public API instead, or add them to PRIVATE_MEMBERS.")
    stale = [_where(m) for m in PRIVATE_MEMBERS
             if not re.search(rf"(?:\.|\bdef ){m.name}\b", (GAN / m.where).read_text())]
    assert not stale, f"PRIVATE_MEMBERS lists members gan/ no longer uses there: {'; '.join(stale)}. Remove them."


def test_gan_imports_nothing_from_private_lightning_modules():
    private = []
    for path in sorted(GAN.rglob("*.py")):
        for module, names in _lightning_imports(path.read_text()):
            if any(part.startswith("_") for part in module.split(".") + names):
                private.append(f"gan/{path.relative_to(GAN).as_posix()}: {module} {names}")
    assert not private, f"gan/ imports private Lightning modules or names: {private}. Use their public homes."
