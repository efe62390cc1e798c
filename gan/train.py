"""The one place that builds objects from the config: data, model, callbacks, loggers, trainer; then fits."""
from __future__ import annotations

import inspect
import os
import re
import secrets
import shutil
import signal
import subprocess
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
from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator
from pytorch_lightning.utilities import rank_zero_only

from gan.callbacks.checkpoint import AtomicCheckpointIO, EmbedConfig
from gan.callbacks.progress import IterationBudget
from gan.checkpoints import SAFE_GLOBALS, load_run_checkpoint
from gan.errors import DivergenceError, Stopped, UserError
from gan.data import data_configs_serving
from gan.kinds import check_fields, check_model, get_kind
from gan.loggers import JsonlLogger
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


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run directory keeps the whole state of its latest iteration."""
    return run_dir / "checkpoints" / "last.ckpt"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory means its `checkpoints/last.ckpt`; a file is taken as it is."""
    path = Path(path).expanduser()
    ckpt = last_checkpoint(path) if path.is_dir() else path
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


def restarted_from(run_dir: Path) -> Path | None:
    """The checkpoint a job that its cluster runs again continues: a Slurm job requeued (SLURM_RESTART_COUNT, after a
    preemption, a time limit or `scontrol requeue`) or a torchrun restart (TORCHELASTIC_RESTART_COUNT) resumes its own
    run directory's `last.ckpt`, when it wrote one."""
    restarts = max(int(os.environ.get(name) or 0) for name in ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"))
    ckpt = last_checkpoint(run_dir)
    return ckpt if restarts and ckpt.is_file() else None


def _check_new_run_dir(run_dir: Path) -> None:
    """A new run never writes over another run's checkpoints (a fixed hydra.run.dir run twice)."""
    if last_checkpoint(run_dir).is_file():
        raise UserError(
            f"The run directory {run_dir} already holds a run (checkpoints/last.ckpt), and this command starts a new one "
            f"there, which would overwrite its checkpoints. Continue that run with `python -m gan.run resume={run_dir}`, "
            f"or give the new run its own directory (leave out hydra.run.dir, or name another one).")


def _resumed_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, dict[str, tuple[int, ...]], int]:
    """The saved run's config, with this command line's other overrides on top (e.g. `g_iters=4000`, or a
    group such as `trainer=default`), taken from the freshly composed config so Hydra's parsing holds; the shapes
    of the checkpoint's weights; and its iteration. Reading the file here also vets it (safe loading, clear errors)
    before anything is built or Lightning reads it. An override that makes it another model is refused."""
    checkpoint = load_run_checkpoint(cfg.resume)
    saved = OmegaConf.create(checkpoint["gan_config"])
    run_id = OmegaConf.select(saved, "logger.wandb.id")
    trained_as = saved.model.name
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+")
        if key.startswith(("resume", "hydra", "~")):
            continue
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    saved.resume = cfg.resume
    if run_id and "wandb" in (saved.get("logger") or {}) and OmegaConf.select(saved, "logger.wandb.id") is None:
        saved.logger.wandb.id = run_id  # `logger=wandb` again (a requeued job's command line): the same W&B run
    if saved.model.name != trained_as:
        raise UserError(_refused_resume(cfg.resume, trained_as, f"make it model {saved.model.name}"))
    return saved, {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}, checkpoint["gan_progress"]["g_iter"]


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
    precision = cfg.get("float32_matmul_precision", "highest")  # a run saved before the key keeps its full float32
    if precision not in ("highest", "high", "medium"):
        raise UserError(f"float32_matmul_precision must be highest (full float32), high (TF32 matmuls on GPUs that "
                        f"have them) or medium (bfloat16 inside them), got {precision!r}.")
    if isinstance(trainer.accelerator, CUDAAccelerator):  # the CPU ignores it; keep the process's setting there
        torch.set_float32_matmul_precision(precision)
    if cfg.trainer.get("sync_batchnorm") and isinstance(trainer.accelerator, CPUAccelerator) and trainer.world_size > 1:
        raise UserError("trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm, which it turns BatchNorm into, "
                        "refuses modules on the CPU. Leave it off for DDP on CPU processes (batch norm statistics are "
                        "then each process's own), or train on GPUs (trainer.accelerator=gpu).")
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
    restart = None if cfg.get("resume") else restarted_from(Path(cfg.paths.run_dir))
    if restart is not None:
        with open_dict(cfg):
            cfg.resume = str(restart)
        _say(f"Job restarted by the cluster: resuming {restart}.")
    resumed_at = 0
    if cfg.get("resume"):
        cfg, shapes, resumed_at = _resumed_config(cfg, list(overrides))
    run_dir = Path(cfg.paths.run_dir)
    new_run = not cfg.get("resume")
    if new_run:
        _check_new_run_dir(run_dir)
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
        for logger in trainer.loggers:  # what was logged after the checkpoint is logged again, once
            if isinstance(logger, JsonlLogger):
                logger.rewind(resumed_at)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    started, status, stopped = time.time(), "completed", None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):  # Lightning's resume reads the file the same safe way
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("resume") or None, weights_only=True)
        model.check_finite()  # the iterations since the last log step or checkpoint
    except Stopped as error:  # last.ckpt holds the iteration the signal arrived in
        stopped, status = error, "requeued" if _requeueable(error) else "cancelled"
    except BaseException as error:
        status = {DivergenceError: "diverged", KeyboardInterrupt: "interrupted"}.get(type(error), "failed")
        raise
    finally:
        if not trainer.fast_dev_run and status == "completed":
            trainer.save_checkpoint(last_checkpoint(run_dir), weights_only=False)  # the whole state
        summary = _summarise(cfg, trainer, model, run_dir, status, time.time() - started)
        if stopped is not None:
            summary |= {"stopped_by": stopped.signal_name, "resume": f"python -m gan.run resume={run_dir.resolve()}"}
        if trainer.is_global_zero:
            save_json(summary, run_dir / "summary.json")
        _print_summary(summary)
    if stopped is not None:
        if status == "requeued" and trainer.is_global_zero and not _requeue(_slurm_job()):  # last: Slurm ends the job
            save_json(summary | {"status": "cancelled"}, run_dir / "summary.json")  # Slurm refused: resume by hand
        stopped.requeued = status == "requeued"
        raise stopped
    return summary.get("objective")


def _slurm_job() -> str | None:
    """This process's Slurm job (`<array job>_<task>` for an array), or None outside a Slurm job's task."""
    if os.environ.get("SLURM_PROCID") is None:
        return None
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")


def _requeueable(stopped: Stopped) -> bool:
    """Slurm's warning signals (SIGUSR1, SIGUSR2: a time limit or a preemption ahead) put a job back in the queue;
    SIGTERM (`scancel`), or any signal outside a Slurm job, ends the run."""
    return _slurm_job() is not None and stopped.signal_name in ("SIGUSR1", "SIGUSR2")


def _requeue(job: str) -> bool:
    """`scontrol requeue`, once summary.json says "requeued"; the requeued job resumes last.ckpt (restarted_from)."""
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"Could not requeue Slurm job {job} (scontrol requeue: {done.stderr.strip()}). The run directory holds the "
              f"checkpoint of the last iteration: resume it with `python -m gan.run resume=<run dir>`, and check that "
              f"the partition allows requeueing (sbatch --requeue, JobRequeue=1).", flush=True)
    return done.returncode == 0


def stop_exit_code(stopped: Stopped) -> int:
    """The shell's code for a process ended by that signal (143 for SIGTERM)."""
    return 128 + signal.Signals[stopped.signal_name].value


@rank_zero_only
def _say(message: str) -> None:
    print(message, flush=True)


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
    last_ckpt = last_checkpoint(run_dir)
    summary = {
        "status": status, "model": cfg.model.name, "data": cfg.data.name, "preset": cfg.get("preset", "none"),
        "seed": cfg.seed, "float32_matmul_precision": torch.get_float32_matmul_precision(),
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
        + (f"\n  stopped by {summary['stopped_by']}; continue with: {summary['resume']}" if summary.get("resume") else "")
    )
