"""Shared test helpers: compose the real Hydra config, run the real CLI."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# Short runs everywhere: a few generator iterations, frequent samples and checkpoints, no W&B.
FAST = ["g_iters=4", "logger=none", "callbacks.samples.every_g_iters=2", "callbacks.checkpoint.every_g_iters=2",
        "metrics=none"]


# The tests train on the 8x8 digits at 16 px, not on the default run's 28 px MNIST digits (conf/train.yaml): a test
# that does not choose its data gets these.
TEST_DATA = "data=digits"


def with_test_data(args) -> list[str]:
    """`args` and TEST_DATA unless they choose the data, an experiment (which chooses its own) or resume a run."""
    args = list(args)
    if any(a.startswith(("data=", "resume=", "ckpt=", "experiment=")) for a in args):
        return args
    # beside the first override: Hydra's command line takes its overrides as one run of positionals (-m, --cfg job)
    at = next((i + 1 for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    return [*args[:at], TEST_DATA, *args[at:]]


def compose_config(run_dir: Path, *overrides: str, fast: bool = True):
    """The training config as `python -m gan.run` composes it (on TEST_DATA unless `overrides` choose the data),
    with the run directory given."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=with_test_data([*(FAST if fast else []), *overrides,
                                                          f"paths.run_dir={run_dir}"]))


def model_config(model: str, node: str = "", *overrides: str) -> DictConfig:
    """conf/model/<model>.yaml as a run composes it (on TEST_DATA unless `overrides` choose other), or the
    config of the object under `node` (e.g. "generator"). A test that builds a model or a network directly takes its
    settings from here, so that the YAML stays the one home of every value (tests/test_settings_home.py)."""
    cfg = compose_config(Path("unused"), f"model={model}", *overrides, fast=False)
    return OmegaConf.select(cfg.model, node) if node else cfg.model


def model_settings(model: str, node: str = "", *overrides: str) -> dict:
    """The values of `model_config`, resolved, less Hydra's keys and the objects nested under it (networks,
    optimisers), which the test builds itself: `GANModule(G, D, None, None, **{**model_settings("gan"), "pack": 2})`."""
    import gan  # noqa: F401  registers the resolvers the configs use (sum, len)

    settings = OmegaConf.to_container(model_config(model, node, *overrides), resolve=True)
    return {key: value for key, value in settings.items()
            if not key.startswith("_") and not (isinstance(value, dict) and "_target_" in value)}


@pytest.fixture
def hydra_run_dir(tmp_path) -> Path:
    """`tmp_path / "run"` as `python -m gan.run` hands it to train(): Hydra has already made it and written its
    `.hydra/` record and the job's log there. A test that a failed start leaves no run directory behind needs
    it to exist first, or it passes whether train() cleans up or not."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("{}\n")
    (run / "run.log").write_text("[gan.run][INFO] - composed\n")
    return run


def run_cli(*args: str, cwd: Path, env: dict | None = None, module: str = "gan.run",
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}  # None removes a variable
    if module == "gan.run" and "--help" not in args:
        args = with_test_data(args)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def single_thread():
    """Threads spin-wait badly on a loaded machine; the metric tests' problems are small."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(threads)


def kill_and_resume(tmp_path: Path, args: list[str], kill_after: str = "g000009.ckpt") -> tuple[Path, Path]:
    """Run `gan.run *args` once whole and once SIGKILLed as soon as `kill_after` is written, then resumed.
    Returns (whole, parts), the two run directories."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = with_test_data(args)
    assert run_cli(*args, f"hydra.run.dir={whole}", cwd=tmp_path).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "gan.run", *args, f"hydra.run.dir={parts}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (parts / "checkpoints" / kill_after).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before the kill: the kill should land mid-run"
    resumed = run_cli(f"resume={parts}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    return whole, parts


def ddp_run(tmp_path: Path, *args: str) -> list[dict]:
    """`gan.run *args` as 4 iterations of DDP on 2 CPU processes, checkpoints and grids every 2. Asserts what every
    such run must show (it exits 0; rank 0 alone writes metrics.jsonl, each iteration once, with finite training
    values; one set of checkpoints) and returns the metrics records for the model's own assertions."""
    import json
    import math

    run = tmp_path / "ddp"
    result = run_cli(*args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "g_iters=4",
                     "model.log_every=1", "callbacks.checkpoint.every_g_iters=2", "callbacks.samples.every_g_iters=2",
                     f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records] == [1, 2, 3, 4]  # written once, by rank 0
    assert all(math.isfinite(v) for r in records for k, v in r.items() if k.startswith("train/"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["g000002.ckpt", "g000004.ckpt", "last.ckpt"]
    return records


@pytest.fixture
def one_thread():
    """One torch thread for the test: small networks run faster so on a shared 2-core machine (use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_digits():
    """Overrides for the smallest real image run: 8x8 digits through the DCGAN code path."""
    return ["data=digits", "data.image_size=8", "data.batch_size=16", "model.generator.dcgan.width=8",
            "model.discriminator.dcgan.width=8"]


def logged_iterations(run: Path) -> list[int]:
    """The iteration of each record in a run's metrics.jsonl, in order."""
    import json

    return [json.loads(line)["g_iter"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_state(run: Path) -> dict:
    """What a run's last checkpoint holds that must not depend on interruptions: weights, optimiser states,
    counters and RNG, the data stream's position."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    data_state = {k: v for k, v in ckpt.items() if k.endswith("DataModule")}
    return {"state_dict": ckpt["state_dict"], "optimizers": ckpt["optimizer_states"], "data": data_state,
            "progress": {k: v for k, v in ckpt["gan_progress"].items() if k != "train_seconds"}}


def assert_same(a, b, path=""):
    """Nested dicts/lists/tensors equal (tensors to float tolerance), naming the first place they differ."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, torch.Tensor):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), path
    else:
        assert a == b, path


class ImageGeneratorStandIn:
    """What the image kind calls on a generator (gan.kinds.image.ImageGenerator), for stand-ins that define `sample`."""

    kind, name, g_iter, images_seen, train_seconds = "image", "stand-in", 0, 0, 0.0
    sampling_options = frozenset()

    def uses_ema(self, ema):
        return False

    def sampling_context(self):
        return {}

    def extra_grids(self, generator, size):
        return {}


def slurm_answers() -> bool:
    """`sinfo` reaches a cluster with a node that takes jobs."""
    if shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout
    return any(state.strip().rstrip("*") in ("idle", "mixed", "allocated") for state in states.split())


@pytest.fixture(scope="session")
def slurm():
    """A cluster to submit to: the one `sinfo` reaches, else the local cluster .ci/slurm-local starts on this machine
    (root, Debian's slurm-wlm and munge; two node entries), stopped again after the tests."""
    started = False
    if not slurm_answers():
        up = subprocess.run(["bash", str(REPO / ".ci" / "slurm-local"), "up"], capture_output=True, text=True,
                            timeout=900)
        if up.returncode != 0 or not slurm_answers():
            pytest.skip("no Slurm cluster to submit to, and .ci/slurm-local could not start one here: "
                        + (up.stderr or up.stdout).strip()[-400:])
        started = True
    yield
    if started:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm-local"), "down"], capture_output=True, timeout=120)
