"""`python -m gan.compare` on run directories written in the format training writes."""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_config
from gan.compare import main
from gan.metrics.directions import HIGHER_IS_BETTER
from gan.report.analysis import budget_curve, expected_best_of_k, metric_spec
from gan.report.wandb_source import record_from_history_row

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"

PROVENANCE = {
    "backbone": "classifier", "weights_sha256": "ab12cd34", "resize": "bilinear-antialias", "image_size": 32,
    "dataset": "digits", "split": "val", "num_real": 2000, "num_fake": 2000, "seed": 0, "ckpt": None, "ema": True,
}

# (job, model, seed, val/fid at g_iter 500/1000/1500, test/fid or None when the run crashed)
RUNS = [
    ("0", "dcgan", 0, [40.0, 25.5, 30.0], 27.25),
    ("1", "dcgan", 1, [38.0, 31.0, 29.0], 30.5),
    ("2", "wgan_gp", 0, [35.0, 22.0, 21.5], None),
    ("3", "wgan_gp", 1, [33.0, 20.25, 24.0], 23.0),
    ("4", "wgan_gp", 2, [36.0, 28.0, 26.0], 24.5),
]
EVAL_ITERS = (500, 1000, 1500)
REF_VAL, REF_TEST = 3.25, 3.5  # val/ref_real/fid and test/ref_real/fid of the runs with composed configs
COMPOSED_PROVENANCE = {"backbone": "classifier", "weights_sha256": "ab12", "resize": "none-16x16", "image_size": 16,
                       "dataset": "digits", "split": "val", "num_real": 180, "num_fake": 2000}


def write_run(run_dir: Path, model: str, seed: int, fids: list[float], test_fid: float | None,
              num_fake: int = 2000, crashed: bool = False) -> Path:
    """A run directory as training writes it: config, metrics lines, summary, sample grids."""
    run_dir.mkdir(parents=True)
    model_config = {"name": model, "g_lr": 2e-4, "d_lr": 2e-4, "betas": [0.5, 0.999], "loss": "bce"}
    if model == "wgan_gp":
        model_config.update(g_lr=1e-4, d_lr=1e-4, betas=[0.0, 0.9], loss="wasserstein", n_critic=5,
                            regularizer="gradient_penalty", reg_weight=10.0)
    config = {
        "model": model_config,
        "data": {"name": "digits", "batch_size": 64, "image_size": 32, "root": str(run_dir / "data")},
        "seed": seed, "g_iters": 1500,
        "paths": {"output_dir": str(run_dir)}, "logger": {"project": "gan", "id": f"id{seed}{model}"},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    lines = []
    for step in range(100, 1600, 100):
        lines.append({"g_iter": step, "images_seen": step * 64, "elapsed_s": step * 0.2,
                      "train/d_loss": 1.2, "train/g_loss": 0.8, "train/d_real": 0.6, "train/d_fake": 0.3})
        if step in EVAL_ITERS:
            fid = fids[EVAL_ITERS.index(step)]
            lines.append({"g_iter": step, "images_seen": step * 64, "elapsed_s": step * 0.2 + 5, "val/fid": fid,
                          "val/is": 8.0, "val/kid": fid / 1000,
                          "provenance": {**PROVENANCE, "num_fake": num_fake, "g_iter": step}})
    if test_fid is not None:
        lines.append({"g_iter": 1500, "elapsed_s": 310.0, "test/fid": test_fid,
                      "provenance": {**PROVENANCE, "split": "test", "num_fake": num_fake, "g_iter": 1500}})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if crashed:
        text += '{"g_iter": 1600, "images_seen": 102400, "elapsed_s": 3'  # killed mid-write
    (run_dir / "metrics.jsonl").write_text(text)
    if not crashed:
        summary = {"status": "completed", "g_iter": 1500, "wall_time_s": 312.5, "run_dir": str(run_dir),
                   "last_ckpt": str(run_dir / "checkpoints/last.ckpt"),
                   "last_samples": str(run_dir / "samples/iter_001500.png")}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "samples").mkdir()
    for step in EVAL_ITERS:
        sample_grid(random.Random(f"{model}{seed}{step}"), blue=80 if model == "dcgan" else 200).save(
            run_dir / "samples" / f"iter_{step:06d}.png")
    return run_dir


def write_composed_run(run_dir: Path, overrides: Sequence[str], fids: Sequence[float], hydra_dir: bool = True) -> Path:
    """A run as training leaves it, its config composed by the real conf/ tree from `overrides` (resolved in
    config.yaml, unresolved in .hydra/config.yaml): val/fid `fids` at g_iter 500, 1000, ... with real-data reference
    rows, the last value + 1 as test/fid, a summary."""
    cfg = compose_config(run_dir, *overrides, fast=False)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if hydra_dir:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    lines = []
    for step, fid in zip(range(500, 500 * len(fids) + 1, 500), fids):
        lines.append({"g_iter": step, "images_seen": step * 64, "elapsed_s": step * 0.1, "train/d_loss": 1.0})
        lines.append({"g_iter": step, "images_seen": step * 64, "elapsed_s": step * 0.1, "val/fid": fid,
                      "val/ref_real/fid": REF_VAL, "provenance": {**COMPOSED_PROVENANCE, "g_iter": step}})
    test_provenance = {**COMPOSED_PROVENANCE, "split": "test", "g_iter": step}
    lines.append({"g_iter": step, "images_seen": step * 64, "elapsed_s": step * 0.1, "test/fid": fids[-1] + 1,
                  "test/ref_real/fid": REF_TEST, "provenance": test_provenance})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "wall_time_s": 210.0}))
    return run_dir


def sample_grid(rng: random.Random, blue: int, tiles: int = 4, tile: int = 8) -> Image.Image:
    """A grid of small random tiles, like the 4x4 sample grids training saves."""
    grid = Image.new("RGB", (tiles * tile + tiles + 1,) * 2, "white")
    for row, column in itertools.product(range(tiles), repeat=2):
        shade = rng.randrange(256)
        grid.paste(Image.new("RGB", (tile, tile), (shade, 255 - shade, blue)),
                   (1 + column * (tile + 1), 1 + row * (tile + 1)))
    return grid


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    for job, model, seed, fids, test_fid in RUNS:
        write_run(sweep_dir / job, model, seed, fids, test_fid, crashed=test_fid is None)
    (sweep_dir / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    return sweep_dir


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    """Rows of the printed table by run label, as {column header: cell}; columns are 2+ spaces apart."""
    lines = stdout.splitlines()
    headers = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == len(headers):
            rows[cells[0]] = dict(zip(headers, cells))
    return rows


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "gan.compare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_table_and_writes_self_contained_report(sweep: Path, tmp_path: Path):
    report = tmp_path / "out" / "report.html"
    result = run_cli(str(sweep), "--metric", "fid", "--out", str(report), cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    rows = table_rows(result.stdout)
    assert set(rows) == {f"sweep/{job}" for job, *_ in RUNS}
    columns = list(rows["sweep/0"])
    # data is the same for every run: a footnote, not a column
    assert columns[:8] == ["run", "model", "seed", "status", "best val/fid", "at g_iter", "final fid", "wall time"]
    assert "every run: data digits." in result.stdout
    # hyperparameters that differ, and none of the paths/ids/launcher noise; the models' own settings that do not
    # fit 120 columns are named below the table and kept in the HTML report
    assert columns[8:] == ["model.loss", "model.regularizer"]
    assert "not shown, to fit 120 columns: model.n_critic, model.g_lr, model.d_lr, model.betas" in result.stdout
    assert not {"data.root", "paths.output_dir", "logger.id", "trainer.accelerator", "data.batch_size"} & set(columns)
    assert max(len(line) for line in result.stdout.splitlines()) <= 120
    # best val/fid and its g_iter, final test/fid (or the last val/fid, starred, for the crashed run)
    best_columns = ["best val/fid", "at g_iter", "final fid"]
    assert [rows["sweep/0"][c] for c in best_columns] == ["25.5", "1000", "27.25"]
    assert [rows["sweep/1"][c] for c in best_columns] == ["29", "1500", "30.5"]
    assert [rows["sweep/2"][c] for c in best_columns] == ["21.5", "1500", "21.5*"]
    assert [rows["sweep/3"][c] for c in best_columns] == ["20.25", "1000", "23"]
    assert rows["sweep/2"]["status"] == "no summary" and rows["sweep/3"]["status"] == "completed"
    assert rows["sweep/0"]["wall time"] == "5m12s" and rows["sweep/2"]["wall time"] == "5m05s"
    assert rows["sweep/3"]["model.regularizer"] == "gradient_penalty" and rows["sweep/0"]["model.regularizer"] == "-"
    assert rows["sweep/0"]["seed"] == "0"
    assert "best: sweep/3 (wgan_gp) val/fid=20.25 at g_iter 1000" in result.stdout
    assert "truncated" in result.stderr

    page = report.read_text()
    assert "dcgan" in page and "wgan_gp" in page
    for key in ("model.n_critic", "model.loss", "model.g_lr", "model.betas"):  # the HTML table has every column
        assert f'<th class="text">{key}</th>' in page
    assert '<td class="text">(0, 0.9)</td>' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/svg+xml;base64,') == 4  # two curves, distribution, budget
    latest = base64.b64encode((sweep / "3" / "samples" / "iter_001500.png").read_bytes()).decode()
    older = base64.b64encode((sweep / "3" / "samples" / "iter_000500.png").read_bytes()).decode()
    assert latest in page and older not in page
    assert page.count('src="data:image/png;base64,') == len(RUNS)


def test_budget_curve_in_report_matches_hand_computation(sweep: Path, tmp_path: Path):
    report = tmp_path / "report.html"
    assert main([str(sweep / "*"), "--out", str(report)]) == 0
    page = report.read_text()
    # wgan_gp bests {21.5, 20.25, 26}: k=1 mean 22.583; k=2 pairs give (20.25 + 20.25 + 21.5)/3 = 20.667; k=3 20.25
    assert "<td>22.58</td><td>20.67</td><td>20.25</td>" in page
    # dcgan bests {25.5, 29}: k=1 27.25, k=2 25.5
    assert "<td>27.25</td><td>25.5</td><td></td>" in page


def test_expected_best_equals_brute_force_over_subsets():
    rng = random.Random(0)
    values = [rng.uniform(5, 50) for _ in range(6)]
    for lower_is_better, pick in ((True, min), (False, max)):
        for k in range(1, 7):
            subsets = list(itertools.combinations(values, k))
            brute = sum(pick(s) for s in subsets) / len(subsets)
            assert expected_best_of_k(values, k, lower_is_better) == pytest.approx(brute)
    assert budget_curve([3.0, 1.0, 2.0], lower_is_better=True) == pytest.approx([2.0, 4 / 3, 1.0])


def test_direction_of_every_metric_value_comes_from_the_one_table():
    lower = {name for name in HIGHER_IS_BETTER if metric_spec(f"val/{name}").lower_is_better}
    assert lower == {"fid", "kid", "reverse_kl", "l1", "fid_ab", "fid_ba", "cycle_l1",  # distances and divergences
                     "nll_oracle", "nll_test", "nll_elbo", "nll_iwae", "bpd_elbo", "bpd_iwae",  # likelihood bounds
                     "recon_l1"}  # and reconstruction errors
    assert {"diversity", "modes", "high_quality"} < HIGHER_IS_BETTER.keys()


def test_best_diversity_is_the_highest(tmp_path: Path, capsys):
    run = write_run(tmp_path / "runs" / "0", "dcgan", 0, [40.0, 25.5, 30.0], 27.25)
    with open(run / "metrics.jsonl", "a") as f:
        for g_iter, diversity in ((500, 0.52), (1000, 0.91), (1500, 0.7)):
            f.write(json.dumps({"g_iter": g_iter, "val/diversity": diversity,
                                "provenance": {**PROVENANCE, "g_iter": g_iter}}) + "\n")
    assert main([str(tmp_path / "runs"), "--metric", "diversity", "--out", str(tmp_path / "r.html")]) == 0
    row = table_rows(capsys.readouterr().out)["runs/0"]
    assert (row["best val/diversity"], row["at g_iter"]) == ("0.91", "1000")


def test_incompatible_provenance_is_refused(sweep: Path, tmp_path: Path, capsys):
    other = write_run(tmp_path / "big_eval", "dcgan", 5, [30.0, 20.0, 25.0], 21.0, num_fake=5000)
    report = tmp_path / "report.html"
    assert main([str(sweep), str(other), "--out", str(report)]) == 2
    captured = capsys.readouterr()
    assert "Refusing to compare val/fid" in captured.err and "num_fake" in captured.err
    assert "[num_fake=5000] big_eval\n" in captured.err and "[num_fake=2000] sweep/0, sweep/1" in captured.err
    assert f"python -m gan.compare {other}" in captured.err  # a command for each group
    assert not report.exists() and captured.out == ""


def test_run_without_evaluations_is_listed_but_left_out_of_statistics(sweep: Path, tmp_path: Path, capsys):
    early = sweep / "5"
    early.mkdir()
    OmegaConf.save(OmegaConf.create({"model": {"name": "dcgan"}, "data": {"name": "digits"}, "seed": 7}),
                   early / "config.yaml")
    (early / "metrics.jsonl").write_text(json.dumps({"g_iter": 100, "elapsed_s": 20.0, "train/d_loss": 1.3}) + "\n")
    report = tmp_path / "report.html"
    assert main([str(sweep), "--out", str(report)]) == 0
    captured = capsys.readouterr()
    row = table_rows(captured.out)["sweep/5"]
    assert [row[c] for c in ("best val/fid", "at g_iter", "final fid", "status", "wall time")] == \
        ["-", "-", "-", "no summary", "20.0s"]
    assert "sweep/5: no val/fid recorded" in captured.err
    # dcgan's budget still comes from its two evaluated runs only
    assert "<td>27.25</td><td>25.5</td><td></td>" in report.read_text()


def test_directory_without_runs_fails_with_message(tmp_path: Path):
    (tmp_path / "empty" / "half_run").mkdir(parents=True)
    (tmp_path / "empty" / "half_run" / "config.yaml").write_text("seed: 0\n")
    result = run_cli(str(tmp_path / "empty"), "--out", str(tmp_path / "r.html"), cwd=tmp_path)
    assert result.returncode == 2
    assert "No runs found" in result.stderr and "config.yaml but no metrics.jsonl" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.html").exists()


def test_metric_that_no_run_logged_fails_and_lists_available(sweep: Path, tmp_path: Path, capsys):
    assert main([str(sweep), "--metric", "modes", "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "recorded val/modes" in err and "fid, is, kid" in err
    assert main([str(sweep), "--metric", "sharpness", "--out", str(tmp_path / "r.html")]) == 2
    assert "--direction" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


class StubFile:
    def __init__(self, payload: bytes, path: str):
        self.payload, self.path = payload, path

    def download(self, root: str, replace: bool = False):
        target = Path(root) / self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.payload)


class StubRun:
    """The attributes of `wandb.apis.public.Run` that the mapping reads."""

    def __init__(self, run_id: str, model: str, seed: int, fids: list[float], png: bytes):
        self.id, self.name, self.state = run_id, f"{model}-s{seed}", "finished"
        # W&B may keep the nested config or flatten it to dotted keys: exercise both
        self.config = {"model.name": model, "model.g_lr": 2e-4 if model == "dcgan" else 1e-4,
                       "data": {"name": "digits"}, "seed": seed}
        self.summary_metrics = {"_runtime": 100.0 + seed, "g_iter": 1500}
        self.png = png
        self.rows = [{"_step": 100, "_runtime": 10.0, "train/d_loss": 1.0, "g_iter": 100}]
        for step, fid in zip(EVAL_ITERS, fids):
            self.rows.append({"_step": step, "_runtime": step / 10, "val/fid": fid,
                              "provenance": dict(PROVENANCE, g_iter=step)})
        self.rows.append({"_step": 1500, "samples": {"_type": "image-file", "path": "media/images/samples_1500.png"}})
        # flattened provenance keys, as a history export may give them
        self.rows.append({"_step": 1500, "test/fid": fids[-1] + 1, "provenance.split": "test",
                          **{f"provenance.{k}": v for k, v in PROVENANCE.items() if k != "split"}})

    def scan_history(self):
        return iter(self.rows)

    def file(self, path: str) -> StubFile:
        return StubFile(self.png, path)


class StubApi:
    def __init__(self, runs=None, error: Exception | None = None):
        self._runs, self.error, self.paths = runs or [], error, []

    def runs(self, path: str):
        self.paths.append(path)
        if self.error:
            raise self.error
        return self._runs


def test_wandb_runs_go_through_the_same_comparison(tmp_path: Path, capsys):
    png_path = tmp_path / "grid.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(png_path)
    png = png_path.read_bytes()
    api = StubApi([StubRun("a1", "dcgan", 0, [30.0, 18.0, 19.0], png), StubRun("b2", "wgan_gp", 0, [31.0, 25.0, 22.5], png)])
    report = tmp_path / "wandb.html"
    assert main(["--wandb", "me/gans", "--out", str(report)], wandb_api=api) == 0
    assert api.paths == ["me/gans"]
    out = capsys.readouterr().out
    dcgan = table_rows(out)["dcgan-s0"]
    assert [dcgan[c] for c in ("best val/fid", "at g_iter", "final fid", "wall time")] == ["18", "1000", "20", "1m40s"]
    assert dcgan["model.g_lr"] == "0.0002" and "every run: data digits, status completed." in out
    assert base64.b64encode(png).decode() in report.read_text()


def test_wandb_history_row_maps_to_metrics_record():
    row = {"_step": 700, "_runtime": 12.5, "_timestamp": 1.7e9, "val/fid": 9.5, "val/is": None,
           "provenance/backbone": "classifier", "provenance/num_fake": 2000}
    assert record_from_history_row(row) == {
        "val/fid": 9.5, "g_iter": 700, "elapsed_s": 12.5,
        "provenance": {"backbone": "classifier", "num_fake": 2000},
    }


def test_wandb_unreachable_gives_clear_error(tmp_path: Path, capsys):
    api = StubApi(error=ConnectionError("Failed to resolve 'api.wandb.ai'"))
    assert main(["--wandb", "me/gans", "--out", str(tmp_path / "r.html")], wandb_api=api) == 2
    err = capsys.readouterr().err
    assert "Could not read the runs of W&B project 'me/gans'" in err and "wandb login" in err
    assert main(["--wandb", "not-a-project", "--out", str(tmp_path / "r.html")]) == 2
    assert "<entity>/<project>" in capsys.readouterr().err


def test_wandb_without_login_fails_cleanly_through_the_real_client(tmp_path: Path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / ".config"),
               PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "gan.compare", "--wandb", "me/gans", "--out", str(tmp_path / "r.html")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Could not read the runs of W&B project" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.browser
def test_report_renders_in_headless_chromium(sweep: Path, tmp_path: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install -y chromium)")
    report = tmp_path / "report.html"
    assert main([str(sweep), "--out", str(report)]) == 0
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", "--window-size=1400,2000"]

    dom = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    assert '<table class="runs">' in dom.stdout and "wgan_gp" in dom.stdout
    assert dom.stdout.count("data:image/svg+xml;base64,") == 4
    assert dom.stdout.count("data:image/png;base64,") == len(RUNS)
    assert "Uncaught" not in dom.stderr

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "compare-report.png"
    screenshot.unlink(missing_ok=True)
    shot = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={screenshot}",
                           report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr
    assert "Uncaught" not in shot.stderr
    with Image.open(screenshot) as image:
        assert image.size == (1400, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # rendered content, not a blank page


def test_an_f_gan_run_is_labelled_with_its_divergence():
    from gan.report.runs import Run

    def record(loss: str) -> Run:
        return Run(source="run", config={"model": {"name": "gan", "loss": loss}}, records=[])

    assert record("f_pearson").model == "gan f_pearson" and record("non_saturating").model == "gan"
