"""Task kinds: what a model is to the framework, declared instead of probed.

A model names its kind (`kind = "image"`: a class attribute, or a property where the config decides, as GANModule's
"image" or "conditional"). A kind is a `Kind` registered here by the module of this package that defines it
(`@register`); every module in `gan/kinds/` is imported when a kind is first looked up, so a new kind is one new file
and shared code gains no branch. A kind says:

- `fields`: the batch fields its models train on, checked against what the datamodule serves (`batch_fields`)
  before anything is built further (`check_fields`);
- `protocol`: the model's side of the contract, a `typing.Protocol` (what the kind calls on the model);
- `evaluate`: its evaluation suite (the `Evaluator` holds the shared parts: backbone, reference statistics, judges);
- `write_samples`: its sample grid layout (or a text file), `monitor`: the value that picks the best checkpoint,
  `format_table` and `sample_arrays`: how `gan.evaluate` prints and saves it.

The evaluator, the grid and evaluation callbacks, `gan.evaluate` and `gan.train` ask `kind_of(module)` and nothing
else; the kinds of this package are `image`, `conditional`, `likelihood` (gan.kinds.image), `paired`, `unpaired`,
`attributes` (gan.kinds.translation) and `tokens` (gan.kinds.tokens).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from gan.errors import UserError

if TYPE_CHECKING:
    from gan.metrics.evaluator import Evaluation, Evaluator

KINDS: dict[str, "Kind"] = {}


@dataclass(frozen=True)
class EvalRequest:
    """What one evaluation asks for (gan.evaluate's arguments, the evaluation callback's settings)."""
    split: str
    seed: int
    num_samples: int
    ema: bool | None = None
    ckpt: str | None = None
    keep_samples: bool = False
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = None


class Kind:
    """The framework's side of one kind of model. Subclasses set the class attributes and implement `evaluate`,
    `monitor` and `write_samples`; a subclass of a kind extends it (a likelihood model is an image generator with
    bounds on log p(x))."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()  # batch fields its models train on
    protocol: ClassVar[type]  # a runtime-checkable Protocol: what its models provide

    def needs(self, module) -> tuple[str, ...]:
        return self.fields

    def monitor(self, evaluator: "Evaluator") -> str:
        """The value (lower or higher is better: gan.metrics.directions) that picks the best checkpoint."""
        raise NotImplementedError

    def prepare(self, evaluator: "Evaluator") -> None:
        """Before training: load what evaluating needs (weights, a classifier trained once), so a missing file fails
        then and not at the first evaluation."""
        evaluator.backbone

    def evaluate(self, evaluator: "Evaluator", module, request: EvalRequest) -> "Evaluation":
        raise NotImplementedError

    def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
        """Write the samples of generator iteration `module.g_iter` at `path` (its suffix is the kind's choice) and
        the model's further grids beside it; returns {name: file}, the main samples first (PNG files are logged as
        images under their name)."""
        raise NotImplementedError

    def format_table(self, evaluation: "Evaluation") -> str:
        """gan.evaluate's printed table: a header of the provenance, one row per value."""
        p = evaluation.provenance
        header = f"{p['dataset']} / {p['split']} split, seed {p['seed']}, g_iter {p['g_iter']}"
        return header + "\n" + value_rows(evaluation.values)

    def sample_arrays(self, evaluation: "Evaluation") -> dict[str, Any]:
        """gan.evaluate's `save_samples=true` file: named numpy arrays (`arr_0` first)."""
        raise UserError(f"save_samples=true: models of kind {self.name} have no samples file. Leave save_samples at "
                        f"false for this model.")

    def context(self, module, request: EvalRequest) -> dict[str, Any]:
        """Provenance every kind records: what was evaluated."""
        return {"kind": self.name, "ckpt": None if request.ckpt is None else str(request.ckpt),
                "g_iter": int(module.g_iter),
                "float32_matmul_precision": torch.get_float32_matmul_precision()}  # "high": TF32 on GPUs


def value_rows(values: dict[str, float]) -> str:
    width = max([len(k) for k in values] + [len("metric")])
    return "\n".join([f"  {'metric':<{width}}  value", *(f"  {k:<{width}}  {v:.6g}" for k, v in values.items())])


def reference_table(values: dict[str, float], columns: list[tuple[str, str]],
                    fallback: dict[str, str] | None = None) -> list[str]:
    """A table's lines: one row per value whose key has no `/`, its value, then for each (prefix, title) of `columns`
    the value `<prefix>/<key>` (the reference rows: real data, identity, bicubic, shuffled captions), or the
    `fallback` text of that `<prefix>/<key>`, or "-"."""
    keys = [k for k in values if "/" not in k]
    width = max(len(k) for k in [*keys, "metric"])
    fallback = fallback or {}

    def cell(key: str) -> str:
        return f"{values[key]:<12.6g}" if key in values else f"{fallback.get(key, '-'):<12}"

    header = f"  {'metric':<{width}}  {'value':<12}  " + "  ".join(f"{title:<12}" for _, title in columns)
    rows = [f"  {k:<{width}}  {cell(k)}  " + "  ".join(cell(f"{prefix}/{k}") for prefix, _ in columns) for k in keys]
    return [line.rstrip() for line in (header, *rows)]


def register(cls: type[Kind]) -> type[Kind]:
    """Class decorator: make a kind known by its name."""
    if cls.name in KINDS and type(KINDS[cls.name]) is not cls:
        raise ValueError(f"two kinds are named {cls.name!r}: {type(KINDS[cls.name]).__qualname__} and {cls.__qualname__}")
    KINDS[cls.name] = cls()
    return cls


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        _discover()
    if name not in KINDS:
        raise UserError(f"Unknown task kind {name!r}: the kinds are {', '.join(sorted(KINDS))}. A model declares its "
                        f"kind with a class attribute `kind = \"<name>\"`; a new kind is a module in gan/kinds/ that "
                        f"defines a Kind subclass decorated with @register.")
    return KINDS[name]


def kind_of(module) -> Kind:
    return get_kind(module.kind)


def check_model(module) -> Kind:
    """The model's kind, after checking that the model provides what its kind calls (its protocol)."""
    kind = kind_of(module)
    missing = [name for name in protocol_members(kind.protocol) if not hasattr(module, name)]
    if missing:
        raise TypeError(f"{type(module).__qualname__} declares kind {kind.name!r} but lacks "
                        f"{', '.join(missing)} of {kind.protocol.__qualname__} (gan/kinds/).")
    return kind


def protocol_members(protocol: type) -> list[str]:
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if base is object or not getattr(base, "_is_protocol", False) or base.__module__ == "typing":
            continue
        names += [n for n in (*vars(base).get("__annotations__", {}), *vars(base)) if not n.startswith("_")]
    return list(dict.fromkeys(names))


def check_fields(module, datamodule) -> None:
    """Refuse, before training, a model whose kind needs batch fields the data does not serve, naming the data that
    fits."""
    kind = kind_of(module)
    needs = kind.needs(module)
    served = datamodule.batch_fields
    missing = [f for f in needs if f not in served]
    if not missing:
        return
    from gan.data import data_configs_serving

    fitting = data_configs_serving(needs)
    raise UserError(
        f"Model {module.name} (kind {kind.name}) trains on batches with the fields {', '.join(needs)}, but "
        f"data={datamodule.name} serves {', '.join(served) or 'none'} (missing: {', '.join(missing)}). Data that fits "
        f"this model: {', '.join('data=' + name for name in fitting) or 'none of the configs in conf/data'}. Choose "
        f"one of those, or a model for this data.")
