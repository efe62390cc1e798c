"""The one place that builds objects from the config: data, model, callbacks, loggers, trainer; then fits."""
from __future__ import annotations

import inspect
import os
import re
import secrets
import shutil
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError
from pytorch_lightning.utilities import rank_zero_only

from gan.callbacks.checkpoint import AtomicCheckpointIO, EmbedConfig
from gan.callbacks.progress import IterationBudget
from gan.checkpoints import SAFE_GLOBALS, load_run_checkpoint
from gan.errors import DivergenceError, UserError
from gan.data import data_configs_serving
from gan.kinds import check_fields, check_model, get_kind
from gan.storage import save_json

# Checkpoints land after the generator update by design (see GIterCheckpoint), not a surprise to warn about.
warnings.filterwarnings("ignore", message=".*manual optimization and every_n_train_steps.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def instantiate(cfg, **kwargs):
    """Hydra's instantiate, letting our UserError through instead of wrapped in an InstantiationException,
    and turning a key the target does not take into a UserError that lists the keys it does take."""
    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        target = cfg.get("_target_") if isinstance(cfg, DictConfig) else None
        if isinstance(cause, TypeError) and unexpected and target:
            accepted = accepted_keys(get_object(target))
            raise UserError(
                f"Unknown key '{unexpected.group(1)}' in the config of {target}. It accepts: {', '.join(accepted)}. "
                f"Check the spelling in the YAML file or the command line (e.g. model.n_critic, not model.n_critc)."
            ) from None
        if isinstance(cause, (TypeError, ValueError)) and target:
            node = cfg._get_full_key(None) or "the config"
            raise UserError(
                f"Could not build {target} from the values under `{node}`: {type(cause).__name__}: {cause}. A value "
                f"there has the wrong type or range (e.g. text where a number belongs: `{node}.<key>=abc`). Print the "
                f"composed values with `python -m gan.run <your overrides> --cfg job` and correct the override."
            ) from None
        raise


def accepted_keys(target) -> list[str]:
    """The keyword arguments a class (through the __init__ chain of its bases, while they pass **kwargs on) or a
    function accepts."""
    keys: list[str] = []
    for owner in (target.__mro__ if isinstance(target, type) else [target]):
        init = owner.__init__ if isinstance(target, type) else owner
        if isinstance(target, type) and "__init__" not in vars(owner):
            continue
        parameters = inspect.signature(init).parameters.values()
        keys += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                 and p.name != "self" and p.name not in keys]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return keys


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory means its `checkpoints/last.ckpt`; a file is taken as it is."""
    path = Path(path).expanduser()
    ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise UserError(
            f"No checkpoint at {ckpt}. Expected a run directory that contains checkpoints/last.ckpt "
            f"(as written by `python -m gan.run`) or the path of a .ckpt file. Check the path; run "
            f"directories are under runs/ by default."
        )
    return ckpt.resolve()


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu"):
    """Rebuild (config, datamodule, module) from a checkpoint written by a training run."""
    checkpoint = load_run_checkpoint(resolve_checkpoint(path), map_location)
    cfg = OmegaConf.create(checkpoint["gan_config"])
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return cfg, datamodule, module.eval()


def _resumed_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, dict[str, tuple[int, ...]]]:
    """The saved run's config, with this command line's other overrides on top (e.g. `g_iters=4000`, or a
    group such as `trainer=default`), taken from the freshly composed config so Hydra's parsing holds; and the shapes
    of the checkpoint's weights. Reading the file here also vets it (safe loading, clear errors) before anything is
    built or Lightning reads it. An override that makes it another model is refused."""
    checkpoint = load_run_checkpoint(cfg.resume)
    saved = OmegaConf.create(checkpoint["gan_config"])
    trained_as = saved.model.name
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+")
        if key.startswith(("resume", "hydra", "~")):
            continue
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    saved.resume = cfg.resume
    if saved.model.name != trained_as:
        raise UserError(_refused_resume(cfg.resume, trained_as, f"make it model {saved.model.name}"))
    return saved, {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}


def _refused_resume(ckpt, trained_as: str, change: str) -> str:
    return (f"Cannot resume {ckpt}: it holds a {trained_as} model, and this command's overrides {change}. A checkpoint "
            f"continues the model it was trained as. Start a new run with these settings (leave out resume=...), or "
            f"resume without the overrides that change the model or its networks (python -m gan.run resume=<run dir>).")


def _check_resumable(model, shapes: dict[str, tuple[int, ...]], ckpt, trained_as: str) -> None:
    """Refuse a resume whose overrides change a network's shape, before Lightning fails to load the weights."""
    now = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    changed = [f"{k} {list(shapes.get(k, ()))} -> {list(now.get(k, ()))}" for k in sorted(set(now) | set(shapes))
               if now.get(k) != shapes.get(k)]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(_refused_resume(ckpt, trained_as, f"change the shape of its weights ({'; '.join(changed[:3])}"
                                                          f"{more})"))


def _build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from gan.loggers import JsonlLogger

    loggers = [JsonlLogger(run_dir)]
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is not None and "_target_" in logger_cfg:
            loggers.append(instantiate(logger_cfg))
    return loggers


def build(cfg: DictConfig, run_dir: Path):
    """Instantiate everything. Raises UserError for bad input before anything is trained or written."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    with open_dict(cfg):  # what the data knows and the config left open (StarGAN's domains), the model takes from it
        for key, value in datamodule.settings_from_data().items():
            if cfg.data.get(key) is None:
                cfg.data[key] = value
    model = _build_model(cfg, datamodule)
    check_model(model)
    check_fields(model, datamodule)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    if cfg.get("metrics") and cfg.metrics.get("_target_"):
        callbacks.append(instantiate(cfg.metrics))
    callbacks.append(EmbedConfig(OmegaConf.to_container(cfg, resolve=True)))
    callbacks.append(IterationBudget(cfg.g_iters))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=_build_loggers(cfg, run_dir),
                          plugins=[AtomicCheckpointIO()], use_distributed_sampler=False, limit_val_batches=0,
                          num_sanity_val_steps=0)
    return datamodule, model, trainer


def _build_model(cfg: DictConfig, datamodule):
    """The model; a model config that reads a data setting this data lacks (SRGAN's `data.scale`, StarGAN's
    `data.num_attributes`) needs another kind of data: said as check_fields says it, naming the data that fits."""
    try:
        return instantiate(cfg.model)
    except (InterpolationKeyError, InstantiationException) as error:
        missing = re.search(r"Interpolation key '(data\.[\w.]+)' not found", str(error))
        if missing is None:
            raise
        kind = inspect.getattr_static(get_object(cfg.model._target_), "kind", None)  # declared on the class
        fits = data_configs_serving(get_kind(kind).fields) if isinstance(kind, str) else []
        raise UserError(
            f"Model {cfg.model.name} reads {missing.group(1)}, which data={datamodule.name} does not have: it trains on "
            f"another kind of data ({kind}: batches with the fields {', '.join(get_kind(kind).fields)}). Data that "
            f"fits this model: {', '.join('data=' + name for name in fits) or 'none of the configs in conf/data'}. "
            f"Choose one of those, or a model for this data."
            if isinstance(kind, str) else
            f"Model {cfg.model.name} reads {missing.group(1)}, which data={datamodule.name} does not have. See the "
            f"header of conf/model/{cfg.model.name}.yaml for the data it needs.") from None


def _prepare_new_run(cfg: DictConfig, run_dir: Path) -> None:
    if cfg.get("logger") and cfg.logger.get("wandb") and cfg.logger.wandb.get("id") is None:
        with open_dict(cfg):
            cfg.logger.wandb.id = secrets.token_hex(4)  # fixed now, so a resume reopens the same W&B run


def train(cfg: DictConfig, overrides: list[str] = ()) -> float | None:
    """Train one run in `cfg.paths.run_dir`. Returns the monitored validation metric when there is one."""
    if cfg.get("resume"):
        cfg, shapes = _resumed_config(cfg, list(overrides))
    run_dir = Path(cfg.paths.run_dir)
    new_run = not cfg.get("resume")
    try:
        if new_run:
            _prepare_new_run(cfg, run_dir)
        _announce_preset(cfg)
        datamodule, model, trainer = build(cfg, run_dir)
        if not new_run:
            _check_resumable(model, shapes, cfg.resume, cfg.model.name)
    except BaseException:
        if new_run and rank_zero_only.rank == 0:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing trained: leave nothing a resume could mistake
        raise
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    started, status = time.time(), "completed"
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):  # Lightning's resume reads the file the same safe way
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("resume") or None, weights_only=True)
    except BaseException as error:
        status = {DivergenceError: "diverged", KeyboardInterrupt: "interrupted"}.get(type(error), "failed")
        raise
    finally:
        if not trainer.fast_dev_run and status == "completed":
            trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)  # the whole state
        summary = _summarise(cfg, trainer, model, run_dir, status, time.time() - started)
        if trainer.is_global_zero:
            save_json(summary, run_dir / "summary.json")
        _print_summary(summary)
    return summary.get("objective")


@rank_zero_only
def _announce_preset(cfg: DictConfig) -> None:
    """A preset (conf/scale/<model>_<data>.yaml) changes the model's settings: say so before anything runs."""
    if cfg.get("preset", "none") != "none":
        print(f"Preset {cfg.preset}: conf/scale/{cfg.preset}.yaml sizes {cfg.model.name} for {cfg.data.name} (its "
              f"values replace the model config's; recorded as `preset` in config.yaml and summary.json). Add "
              f"scale=none to train with the model config's own values.", flush=True)


def _summarise(cfg, trainer, model, run_dir: Path, status: str, seconds: float) -> dict:
    from gan.callbacks.evaluation import EvaluationCallback
    from gan.callbacks.samples import SampleGrid

    grids = [c.last_path for c in trainer.callbacks if isinstance(c, SampleGrid) and c.last_path]
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    summary = {
        "status": status, "model": cfg.model.name, "data": cfg.data.name, "preset": cfg.get("preset", "none"),
        "seed": cfg.seed,
        "g_iter": model.g_iter, "images_seen": model.images_seen, "wall_time_s": round(seconds, 2),
        "train_seconds": round(model.train_seconds, 2), "run_dir": str(run_dir.resolve()),
        "last_ckpt": str(last_ckpt.resolve()) if last_ckpt.is_file() else None,
        "last_samples": str(grids[-1].resolve()) if grids else None,
    }
    for callback in trainer.callbacks:  # the evaluation callback reports what it measured
        if isinstance(callback, EvaluationCallback):
            summary.update(callback.summary())
    return summary


@rank_zero_only
def _print_summary(summary: dict) -> None:
    from rich.console import Console

    console = Console(stderr=False)
    colour = "green" if summary["status"] == "completed" else "red"
    console.print(
        f"[{colour}]Run {summary['status']}[/]: {summary['model']} on {summary['data']}, "
        f"{summary['g_iter']} generator iterations in {summary['wall_time_s']:.0f}s.\n"
        f"  run directory: {summary['run_dir']}\n  last samples:  {summary['last_samples']}\n"
        f"  checkpoint:    {summary['last_ckpt']}"
    )
