"""Command line: `python -m gan.run [group=option ...] [key=value ...] [resume=<run dir or ckpt>] [-m]`."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def config_dir() -> str:
    """`conf/` ships inside the wheel as `gan/conf`; in a source checkout it sits beside the package."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf")


_SWEEP = {"jobs": 0, "failed": []}  # outcomes of the jobs this process ran in a multirun


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _task(cfg: DictConfig) -> float | None:
    from gan.errors import DivergenceError, UserError
    from gan.train import train

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    _SWEEP["jobs"] += multirun
    try:
        return train(cfg, list(hydra_cfg.overrides.task))
    except (UserError, DivergenceError) as error:
        if not multirun:
            print(f"\nError: {error}", file=sys.stderr)
            sys.exit(2 if isinstance(error, UserError) else 3)
        # In a sweep a failed run is recorded and the sweep goes on: the Optuna sweeper marks the
        # trial FAIL when the job raises; the basic sweeper would stop at the first failure instead.
        print(f"\nRun {hydra_cfg.job.num} of the sweep failed: {error}", file=sys.stderr)
        _SWEEP["failed"].append(hydra_cfg.job.num)
        if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
            raise
        return None


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
    if _SWEEP["jobs"] and len(_SWEEP["failed"]) == _SWEEP["jobs"]:
        print(f"\nError: all {_SWEEP['jobs']} runs of the sweep failed (messages above), so the sweep produced "
              "nothing to compare. Fix the cause named in the messages (often a learning rate that diverges or "
              "an option the data does not support) and run the sweep again.", file=sys.stderr)
        sys.exit(1)
    if _SWEEP["failed"]:
        print(f"{len(_SWEEP['failed'])} of {_SWEEP['jobs']} runs failed: jobs {_SWEEP['failed']}.", file=sys.stderr)


if __name__ == "__main__":
    main()
