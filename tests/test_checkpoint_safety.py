"""Checkpoints of unknown origin: loaded without running code from them, truncated or foreign files refused with one
clear paragraph (gan.evaluate and gan.run resume=), real ones loaded through the same safe path; `--help`."""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, compose_config, run_cli
from gan.checkpoints import load, load_run_checkpoint
from gan.errors import UserError
from gan.evaluate import main as evaluate_main
from gan.train import train


class CreatesFile:
    """Unpickling this calls `open(marker, "w")`: any function could be called the same way."""

    def __init__(self, marker: Path, via_exec: bool = False):
        self.marker, self.via_exec = str(marker), via_exec

    def __reduce__(self):
        if self.via_exec:
            return exec, (f"open({self.marker!r}, 'w').close()",)
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """4 generator iterations of the MLP GAN on the 2-D ring, checkpoints at 2 and 4, by the real training code."""
    run = tmp_path_factory.mktemp("ring") / "run"
    train(compose_config(run, "model=gan", "data=ring", "model.log_every=1"))
    return run


def crafted_run(tmp_path: Path, marker: Path) -> Path:
    """A run directory whose last.ckpt looks like ours (a gan_config, a state_dict) and carries the payload."""
    ckpt = tmp_path / "crafted" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"gan_config": {"model": {"name": "gan"}}, "state_dict": {}, "payload": CreatesFile(marker)}, ckpt)
    return ckpt


def command(kind: str, ckpt: Path) -> list[str]:
    return [f"ckpt={ckpt}", "metrics=[fid]"] if kind == "evaluate" else [f"resume={ckpt}"]


@pytest.mark.parametrize("kind", ["evaluate", "resume"])
def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, kind):
    marker = tmp_path / "code_ran"
    ckpt = crafted_run(tmp_path, marker)
    result = run_cli(*command(kind, ckpt), cwd=tmp_path, module="gan.evaluate" if kind == "evaluate" else "gan.run")
    assert result.returncode == 2, result.stderr
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    message = result.stderr
    assert "Traceback" not in message
    assert f"Refused to load {ckpt}" in message and "`io.open`" in message and "execute code" in message
    assert "never writes" in message and "weights_only=False" in message  # the way out for a trusted file
    assert sorted(p.name for p in ckpt.parent.parent.iterdir()) in (["checkpoints"], ["checkpoints", "run.log"])
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.ckpt"]  # nothing trained, nothing written


def test_every_payload_and_foreign_type_is_refused_in_process(tmp_path):
    marker = tmp_path / "code_ran"
    for name, payload in [("exec", CreatesFile(marker, via_exec=True)), ("open", CreatesFile(marker)),
                          ("partial", functools.partial(print, "hi"))]:
        path = tmp_path / f"{name}.pt"
        torch.save({"gan_config": {}, "x": payload}, path)
        with pytest.raises(UserError, match="Refused to load .* execute code"):
            load(path)
    with pytest.raises(UserError, match="never writes into its cache files"):
        load(tmp_path / "open.pt", cache=True)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["evaluate", "resume"])
def test_a_truncated_checkpoint_gets_a_clear_error_and_no_traceback(tmp_path, real_run, kind):
    run = tmp_path / "run"
    shutil.copytree(real_run / "checkpoints", run / "checkpoints")
    ckpt = run / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    target = ckpt if kind == "evaluate" else run  # a run directory means its last.ckpt
    result = run_cli(*command(kind, target), cwd=tmp_path, module="gan.evaluate" if kind == "evaluate" else "gan.run")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Could not read {ckpt} ({len(data) // 2} bytes)" in result.stderr
    assert "truncated" in result.stderr and "not a PyTorch checkpoint" in result.stderr
    assert "g000002.ckpt" in result.stderr  # the earlier checkpoint to use instead
    assert not (run / "config.yaml").exists() and not (run / "summary.json").exists()


def test_a_torch_file_that_is_no_checkpoint_of_ours_and_an_empty_file(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "weights.pt")
    assert evaluate_main([f"ckpt={tmp_path / 'weights.pt'}"]) == 2
    assert "not a checkpoint of this framework (it carries no `gan_config`)" in capsys.readouterr().err
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match=r"\(0 bytes\): the file is truncated"):
        load_run_checkpoint(tmp_path / "empty.ckpt")


def test_every_checkpoint_of_a_real_run_loads_with_weights_only(real_run):
    for path in sorted((real_run / "checkpoints").glob("*.ckpt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # no allow-list needed
        assert checkpoint["gan_progress"]["g_iter"] in (2, 4) and "gan_config" in checkpoint


def test_a_real_checkpoint_evaluates_through_the_safe_path(tmp_path, real_run):
    evaluated = run_cli(f"ckpt={real_run / 'checkpoints' / 'g000004.ckpt'}", "num_samples=100", "split=val",
                        f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path, module="gan.evaluate")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "reverse_kl" in evaluated.stdout
    assert json.loads((real_run / "checkpoints" / "eval.json").read_text())["provenance"]["g_iter"] == 4


def test_a_real_checkpoint_resumes_through_the_safe_path(tmp_path, real_run):
    # In place (the saved config names the run directory), after every other use of the run in this module.
    last = real_run / "checkpoints" / "last.ckpt"
    checkpoints = sorted(p.name for p in last.parent.iterdir())
    # A resume that fails before training leaves the run as it was: its checkpoints are the only copy of its training.
    with pytest.raises(UserError, match="model.g_lr"):
        train(OmegaConf.merge(compose_config(real_run, "model.g_lr=fast"), {"resume": str(last)}), ["model.g_lr=fast"])
    assert sorted(p.name for p in last.parent.iterdir()) == checkpoints
    resumed = run_cli(f"resume={real_run}", "g_iters=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Restored all states" in resumed.stdout + resumed.stderr
    assert "weights_only" not in resumed.stdout + resumed.stderr  # Lightning's "was not set, defaulting to False"
    assert json.loads((real_run / "summary.json").read_text())["g_iter"] == 6
    assert not (real_run / ".hydra").exists()  # a resume writes no Hydra record over the one of the run's first command
    # A run already at its budget stops before its first step.
    train(OmegaConf.merge(compose_config(real_run, "g_iters=6"), {"resume": str(last)}), ["g_iters=6"])
    assert json.loads((real_run / "summary.json").read_text())["g_iter"] == 6
    assert load_run_checkpoint(last)["gan_progress"]["g_iter"] == 6


def test_evaluate_and_compare_help(tmp_path):
    defaults = OmegaConf.load(CONF / "evaluate.yaml")
    for flag in ("--help", "-h"):
        result = run_cli(flag, cwd=tmp_path, module="gan.evaluate")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: python -m gan.evaluate ckpt=")
        assert all(f"  {key}=" in result.stdout for key in defaults)
        assert "split=test" in result.stdout and "batch_size=250" in result.stdout and "metrics=[fid,is,kid,pr]" in result.stdout
    compare = run_cli("--help", cwd=tmp_path, module="gan.compare")
    assert compare.returncode == 0, compare.stderr
    assert "usage" in compare.stdout.lower()
