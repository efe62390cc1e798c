"""Command line: `python -m gan.run [group=option ...] [key=value ...] [resume=<run dir or ckpt>] [-m]`."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def config_dir() -> str:
    """`conf/` ships inside the wheel as `gan/conf`; in a source checkout it sits beside the package."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf")


_SWEEP = {"jobs": 0, "failed": []}  # outcomes of a multirun, read from its run directories (SweepReport)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _task(cfg: DictConfig) -> float | None:
    from gan.errors import DivergenceError, Stopped, UserError
    from gan.train import stop_exit_code, train

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    try:
        return train(cfg, list(hydra_cfg.overrides.task))
    except Stopped as stopped:
        if stopped.requeued or not multirun:  # no result: submitit's launcher waits for the requeued job
            sys.exit(stop_exit_code(stopped))
        print(f"\nRun {hydra_cfg.job.num} of the sweep was {stopped}; its run directory resumes it.", file=sys.stderr)
        return None
    except (UserError, DivergenceError) as error:
        if not multirun:
            print(f"\nError: {error}", file=sys.stderr)
            sys.exit(2 if isinstance(error, UserError) else 3)
        # In a sweep a failed run is recorded (its summary.json, read by SweepReport wherever the job ran) and the
        # sweep goes on: the Optuna sweeper marks the trial FAIL when the job raises; the basic sweeper would stop at
        # the first failure instead.
        print(f"\nRun {hydra_cfg.job.num} of the sweep failed: {error}", file=sys.stderr)
        _record_failure(Path(hydra_cfg.runtime.output_dir), error)
        if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
            raise
        return None


def _record_failure(run_dir: Path, error: Exception) -> None:
    """A run that failed before training leaves nothing behind (gan.train): in a sweep, a summary.json says why."""
    from pytorch_lightning.utilities import rank_zero_only

    from gan.storage import save_json

    if rank_zero_only.rank == 0 and not (run_dir / "summary.json").is_file():
        save_json({"status": "failed", "error": str(error)}, run_dir / "summary.json")


class SweepReport(Callback):
    """After a multirun, in the process that launched it (the jobs may have run on a cluster): which runs did not
    complete, from the summary.json in every job's directory (the sweep directory's folders, less .submitit)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        jobs = sorted(p for p in Path(config.hydra.sweep.dir).iterdir() if p.is_dir() and not p.name.startswith("."))
        _SWEEP["jobs"] = len(jobs)
        for job in jobs:
            summary = json.loads((job / "summary.json").read_text()) if (job / "summary.json").is_file() else {}
            if summary.get("status") != "completed":
                _SWEEP["failed"].append(f"{job.name} ({summary.get('status', 'no summary: the job was killed')}"
                                        f"{': ' + summary['error'].split('. ')[0] if summary.get('error') else ''})")


def _resume_into_same_directory(argv: list[str]) -> list[str]:
    """`resume=X` continues in X's run directory: point Hydra there instead of at a new one."""
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not resume or not resume[0] or resume[0] == "null":
        return argv
    from gan.checkpoints import load_run_checkpoint
    from gan.errors import UserError
    from gan.train import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(resume[0])
        load_run_checkpoint(ckpt)  # a refused, truncated or foreign file fails before Hydra opens the run's log
    except UserError as error:
        print(f"\nError: {error}", file=sys.stderr)
        sys.exit(2)
    run_dir = ckpt.parent.parent
    kept = [a for a in argv if not a.startswith("resume=")]
    return kept + [f"resume={ckpt}", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


def main() -> None:
    sys.argv = [sys.argv[0]] + _resume_into_same_directory(sys.argv[1:])
    _task()
    # Hydra built the callback from `gan.run.SweepReport`: under `python -m gan.run` that module is not this __main__.
    sweep = importlib.import_module("gan.run")._SWEEP
    if not sweep["failed"]:
        return
    listing = "; ".join(sweep["failed"])
    if len(sweep["failed"]) == sweep["jobs"]:
        print(f"\nError: all {sweep['jobs']} runs of the sweep failed ({listing}), so the sweep produced nothing to "
              "compare. Fix the cause named in the messages (often a learning rate that diverges or an option the data "
              "does not support) and run the sweep again.", file=sys.stderr)
        sys.exit(1)
    print(f"{len(sweep['failed'])} of {sweep['jobs']} runs of the sweep did not complete: {listing}.", file=sys.stderr)


if __name__ == "__main__":
    main()
