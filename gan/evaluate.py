"""Command line: `python -m gan.evaluate ckpt=<path> [metrics=[fid,is,kid,pr,memorization]] [num_samples=...] [split=test]`.

Rebuilds the run from its checkpoint, draws fresh samples, prints a table and writes `eval.json`
(values with provenance) next to the checkpoint; `save_samples=true` also writes the samples as .npz.
Arguments are `key=value` pairs over `conf/evaluate.yaml` (plain OmegaConf: `metrics=[...]` would
collide with Hydra's `metrics` config group).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from omegaconf import DictConfig, OmegaConf

from gan.errors import UserError

if TYPE_CHECKING:  # the metrics stack (torch-fidelity, torchvision) loads only once the arguments are good
    from gan.metrics.evaluator import Evaluation


HELP_FLAGS = ("-h", "--help")


def usage() -> str:
    """The `--help` text: what the command does, and every key of conf/evaluate.yaml with its default and comment."""
    from gan.run import config_dir

    path = Path(config_dir()) / "evaluate.yaml"
    defaults = OmegaConf.to_container(OmegaConf.load(path))  # the missing ckpt comes out as "???"
    comments = dict(re.findall(r"^(\w+):[^#\n]*#[ \t]*(.*)$", path.read_text(), flags=re.MULTILINE))
    comments.setdefault("ckpt", "a run directory (its checkpoints/last.ckpt is used) or a .ckpt file")

    def show(value) -> str:
        if isinstance(value, list):
            return "[" + ",".join(show(v) for v in value) + "]"
        if isinstance(value, bool) or value is None:
            return {None: "null", True: "true", False: "false"}[value]
        return "<required>" if value == "???" else str(value)

    pairs = {key: f"{key}={show(value)}" for key, value in defaults.items()}
    width = max(len(pair) for pair in pairs.values())
    return "\n".join([
        "Usage: python -m gan.evaluate ckpt=<run dir or .ckpt> [key=value ...]",
        "",
        ("Rebuilds a run from its checkpoint, draws fresh samples, prints a table of metrics and writes eval.json "
         "(values with provenance) next to the checkpoint. Arguments are key=value pairs over conf/evaluate.yaml; "
         "its keys, with their defaults:"),
        "",
        *(f"  {pair:<{width}}  {comments.get(key, '')}".rstrip() for key, pair in pairs.items()),
    ])


def parse_args(argv: Sequence[str]) -> DictConfig:
    from gan.run import config_dir

    defaults = OmegaConf.load(Path(config_dir()) / "evaluate.yaml")
    usage = "Usage: python -m gan.evaluate ckpt=<run dir or .ckpt> [metrics=[fid,is,kid,pr,memorization,ppl]] [num_samples=10000] [split=test] [truncation=0.7]"
    malformed = [a for a in argv if "=" not in a or a.startswith("=")]
    if malformed:
        raise UserError(f"Arguments must be key=value pairs, got {malformed}. {usage}. The keys are: {', '.join(defaults)}.")
    try:
        given = OmegaConf.from_dotlist(list(argv))
    except Exception as error:
        raise UserError(f"Could not parse the arguments {list(argv)} ({error}). {usage}.") from None
    unknown = [k for k in given if k not in defaults.keys()]  # `in` is False for the missing (???) ckpt
    if unknown:
        raise UserError(f"Unknown argument(s) {unknown}. Expected keys from conf/evaluate.yaml: {', '.join(defaults)}. {usage}.")
    cfg = OmegaConf.merge(defaults, given)
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise UserError(f"No checkpoint given. {usage}, where ckpt is a run directory (its checkpoints/last.ckpt is used) "
                        f"or a .ckpt file.")
    if isinstance(cfg.metrics, str):
        cfg.metrics = [cfg.metrics]
    return cfg


def evaluate_checkpoint(cfg: DictConfig) -> tuple[Evaluation, Path]:
    """Evaluate `cfg.ckpt`; returns the evaluation and the path of the eval.json written."""
    from gan.train import load_checkpoint, resolve_checkpoint

    ckpt = resolve_checkpoint(cfg.ckpt)  # a bad path fails here, before the metrics stack is loaded
    import torch

    from gan.metrics.evaluator import Evaluator
    from gan.storage import save_json

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    run_cfg, datamodule, module = load_checkpoint(ckpt)
    module.to(device)
    run_metrics = run_cfg.get("metrics") or {}
    sizes = {"num_samples": 10000} if cfg.num_samples is None else {"num_samples": cfg.num_samples,
                                                                    "toy_num_samples": cfg.num_samples}
    evaluator = Evaluator(
        datamodule, names=list(cfg.metrics), backbone=cfg.backbone, seed=cfg.seed, batch_size=cfg.batch_size,
        device=device, cache_dir=cfg.cache_dir or run_cfg.paths.cache_dir,
        inception_weights=cfg.inception_weights or run_metrics.get("inception_weights"),
        classifier=OmegaConf.to_container(run_metrics.classifier) if run_metrics.get("classifier") else None, **sizes,
    )
    evaluation = evaluator.evaluate(module, split=cfg.split, seed=cfg.seed, ema=cfg.ema, ckpt=str(ckpt),
                                    keep_samples=cfg.save_samples, truncation_psi=cfg.truncation,
                                    truncation_cutoff=cfg.truncation_cutoff)
    if cfg.save_samples:
        psi = "" if evaluation.provenance.get("truncation_psi", 1) == 1 else f"_psi{evaluation.provenance['truncation_psi']:g}"
        samples_path = ckpt.parent / f"samples_{ckpt.stem}_{cfg.split}_n{len(evaluation.samples)}_seed{cfg.seed}{psi}.npz"
        save_samples(evaluation, samples_path)
        evaluation.provenance["samples_file"] = str(samples_path)
    return evaluation, save_json(evaluation.to_dict(), ckpt.parent / "eval.json")


def save_samples(evaluation: Evaluation, path: Path) -> None:
    """The samples as named arrays (`arr_0`: uint8 [N, H, W, C] images, the layout other evaluators read; what else
    the model's kind saves: labels, a translation's inputs and targets), written atomically."""
    import numpy as np

    from gan.kinds import get_kind
    from gan.storage import atomic_write

    arrays = get_kind(evaluation.provenance["kind"]).sample_arrays(evaluation)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def format_table(evaluation: Evaluation) -> str:
    """The model's kind prints its values: a header of the provenance, a row per value (and its reference rows)."""
    from gan.kinds import get_kind

    return get_kind(evaluation.provenance["kind"]).format_table(evaluation)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in HELP_FLAGS for arg in argv):
        print(usage())
        return 0
    try:
        cfg = parse_args(argv)
        evaluation, out = evaluate_checkpoint(cfg)
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(format_table(evaluation))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
