"""GAN research framework: every classic GAN as a Lightning module, composed by Hydra."""
import os
from datetime import datetime

from omegaconf import OmegaConf

# `${len:${data.attributes}}`: a config that sizes a network by a list in another config group (StarGAN's domains).
OmegaConf.register_new_resolver("len", len, replace=True)
# `${sum:${data.channels},${data.channels}}`: pix2pix's D judges (input, output) stacked along channels.
OmegaConf.register_new_resolver("sum", lambda *values: sum(values), replace=True)


def run_stamp(pattern: str) -> str:
    """The stamp in a run directory's name (conf/train.yaml's hydra.run.dir): the time, or inside a Slurm job's task
    `slurm<job id>[.<step id>]`, which every task of an `srun` step shares (one run directory for all DDP ranks) and a
    requeued job keeps (it finds its checkpoint again)."""
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if job and os.environ.get("SLURM_PROCID") is not None:  # a task of a job (an `salloc` shell is not one)
        return f"slurm{job}" + (f".{step}" if step else "")
    return datetime.now().strftime(pattern)


OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True, replace=True)
