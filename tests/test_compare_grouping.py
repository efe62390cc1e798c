"""`gan.compare` groups, colours and summarises runs by the factors a study varies, and leaves settings a run does not
use out of its row; run directories with configs composed by the real conf/ tree (test_compare.write_composed_run)."""
from __future__ import annotations

import base64
import re
import statistics
from pathlib import Path

from hydra import compose, initialize_config_dir
from matplotlib import colormaps
from matplotlib.colors import to_hex
from omegaconf import OmegaConf

from conftest import CONF
from gan.compare import main
from gan.report.analysis import select_hyperparameters
from gan.report.runs import find_run_dirs, load_run_dir
from test_compare import run_cli, table_rows, write_composed_run

AUGMENTS = {"none": ["model.augment=none"], "ada": ["model.augment=ada", "model.ada_kimg=10"]}
LIMITS = (0.1, 0.25)


def best_of(augment: str, limit: float, seed: int) -> float:
    """The best val/fid of a run of the study below: 10 * limit + 1 for ADA + 2 * seed, plus 20 (all distinct)."""
    return 20 + 10 * limit + (1 if augment == "ada" else 0) + 2 * seed


def write_study(root: Path) -> Path:
    """The data-efficient study in small: augment {none, ada} x data.train_limit {0.1, 0.25} x seeds {0, 1}, laid
    out as experiments/data_efficient/run.py lays it out (runs/<data>/<augment>/s<seed>)."""
    for augment, overrides in AUGMENTS.items():
        for limit in LIMITS:
            for seed in (0, 1):
                best = best_of(augment, limit, seed)
                write_composed_run(root / "runs" / f"digits{int(limit * 100)}" / augment / f"s{seed}",
                                   ["model=dcgan", *overrides, f"data.train_limit={limit}", f"seed={seed}"],
                                   [best + 5, best])
    return root / "runs"


def html_table(page: str, css_class: str) -> list[list[str]]:
    """The rows of a table of the report as lists of cell texts."""
    body = page.split(f'<table class="{css_class}">')[1].split("</table>")[0]
    return [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in body.split("<tr")[2:]]


def plot_colours(page: str, plot: int, style: str) -> set[str]:
    """The tab10 colours of the report's `plot`-th plot (0: curves against g_iter, 2: distribution of the best values)
    in SVG styles starting with `style` (the lines of the curves, not their markers: "fill: none; stroke: ")."""
    svg = base64.b64decode(page.split('src="data:image/svg+xml;base64,')[plot + 1].split('"')[0]).decode()
    drawn = set(re.findall(re.escape(style) + r"(#[0-9a-f]{6})", svg))
    return drawn & {to_hex(colormaps["tab10"](i)) for i in range(10)}


def test_two_varied_factors_with_two_seeds_make_four_groups(tmp_path, capsys):
    runs = write_study(tmp_path)
    report = tmp_path / "report.html"
    assert main([str(runs), "--out", str(report)]) == 0
    out = capsys.readouterr().out

    # the keys chosen are the ones the study varies: not the seed, nor model.seed / data.seed that follow from it,
    # nor model.ada_kimg, which only the ADA runs use
    assert "groups: model.augment, data.train_limit (4 groups; chosen automatically" in out
    over_groups = out.split("\n\n")[1].splitlines()
    assert re.split(r"\s{2,}", over_groups[0]) == ["model.augment", "data.train_limit", "runs", "seeds",
                                                    "best val/fid", "final fid"]
    cells = [re.split(r"\s{2,}", line.strip())[:4] for line in over_groups[2:6]]
    assert cells == [["ada", "0.1", "2", "0,1"], ["ada", "0.25", "2", "0,1"],
                     ["none", "0.1", "2", "0,1"], ["none", "0.25", "2", "0,1"]]
    assert "23 ± 1.4" in over_groups[2]  # ada, 0.1: best 22 and 24
    assert "over seeds: mean ± sample standard deviation of the runs that differ only in their seed." in out

    page = report.read_text()
    # a budget curve per group, labelled e.g. "augment=ada, train_limit=0.1": the expected best of 1 and of 2 seeds
    expected = [[f"augment={a}, train_limit={limit}", f"{(best_of(a, limit, 0) + best_of(a, limit, 1)) / 2:.4g}",
                 f"{best_of(a, limit, 0):.4g}"] for a in ("ada", "none") for limit in LIMITS]
    assert html_table(page, "budget") == expected
    assert "<h2>Best value per group</h2>" in page
    assert len(plot_colours(page, 0, "fill: none; stroke: ")) == 4  # a colour per group, its two seeds alike
    assert len(plot_colours(page, 2, "fill: ")) == 4  # a box per group, its points in the group's colour


def test_settings_a_run_does_not_use_are_left_out_of_its_row(tmp_path, capsys):
    root = tmp_path / "runs"
    write_composed_run(root / "none", ["model.augment=none"], [30.0, 25.0])
    write_composed_run(root / "ada10", ["model.augment=ada", "model.ada_kimg=10"], [30.0, 24.0])
    write_composed_run(root / "ada20", ["model.augment=ada", "model.ada_kimg=20"], [30.0, 23.0])
    write_composed_run(root / "diffaugment", ["model.augment=diffaugment", "model.augment_policy=[color]"],
                       [30.0, 22.0])
    runs = [load_run_dir(path) for path in find_run_dirs([str(root)])]
    flats = dict(zip((Path(run.source).name for run in runs), select_hyperparameters(runs).flats))
    assert not [key for key in flats["none"] if key.startswith("model.ada_") or key == "model.augment_policy"]
    assert not [key for key in flats["diffaugment"] if key.startswith("model.ada_")]
    assert flats["diffaugment"]["model.augment_policy"] == ["color"] and flats["ada10"]["model.ada_kimg"] == 10
    assert "model.reg_weight" not in flats["none"]  # model.regularizer=none

    report = tmp_path / "report.html"
    assert main([str(root), "--out", str(report)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [rows[run]["model.ada_kimg"] for run in ("ada10", "ada20", "none", "diffaugment")] == ["10", "20", "-", "-"]
    assert "groups: model.augment, model.ada_kimg (4 groups;" in out
    page = report.read_text()
    assert "500" not in str(html_table(page, "runs"))  # the ada_kimg default of the runs without ADA
    assert [row[0] for row in html_table(page, "budget")] == ["augment=ada, ada_kimg=10", "augment=ada, ada_kimg=20",
                                                              "augment=diffaugment", "augment=none"]


def test_by_groups_by_the_keys_given_and_refuses_an_unknown_one(tmp_path):
    runs = write_study(tmp_path)
    report = tmp_path / "report.html"
    result = run_cli(str(runs), "--by", "model.augment,data.train_limt", "--out", str(report), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and not report.exists()
    message = result.stderr
    assert message.startswith("error: --by 'model.augment,data.train_limt': 'data.train_limt' is not a setting")
    assert "Did you mean data.train_limit?" in message and "Traceback" not in message
    assert message.count("\n") == 1  # one paragraph

    result = run_cli(str(runs), "--by", "model.augment", "--out", str(report), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "groups: model.augment (2 groups; given with --by)." in result.stdout
    bests = {a: [best_of(a, limit, seed) for limit in LIMITS for seed in (0, 1)] for a in AUGMENTS}
    summary = {a: f"{statistics.mean(bests[a]):.4g} ± {statistics.stdev(bests[a]):.2g}" for a in bests}
    assert [row[:4] for row in html_table(report.read_text(), "seeds")] == \
        [["ada", "4", "0,1", summary["ada"]], ["none", "4", "0,1", summary["none"]]]
    assert "per group (model.augment): mean ± sample standard deviation over its runs" in result.stdout


def test_a_search_stays_grouped_by_model(tmp_path, capsys):
    """The learning rates a random search draws are no factor: its trials stay together, as its budget curve needs."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        search = compose("train", overrides=["hparams_search=digits_random"], return_hydra_config=True)
    hydra_yaml = OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(search.hydra)}))
    for trial, (model, lr) in enumerate([("dcgan", 1.3e-4), ("dcgan", 4.1e-3), ("lsgan", 2.2e-5), ("lsgan", 7e-4)]):
        run = write_composed_run(tmp_path / "search" / str(trial), [f"model={model}", f"model.g_lr={lr}",
                                                                    f"model.d_lr={lr * 2}"], [40.0, 30.0 + trial])
        (run / ".hydra" / "hydra.yaml").write_text(hydra_yaml)
    assert main([str(tmp_path / "search"), "--out", str(tmp_path / "report.html")]) == 0
    out = capsys.readouterr().out
    assert "groups: model (2 groups; chosen automatically" in out
    assert "not grouped by model.g_lr, model.d_lr: values drawn by a hyperparameter search" in out
    budget = html_table((tmp_path / "report.html").read_text(), "budget")
    assert budget == [["dcgan", "30.5", "30"], ["lsgan", "32.5", "32"]]


def test_preset_is_a_column_and_older_runs_show_none_recorded(tmp_path, capsys):
    root = tmp_path / "runs"
    write_composed_run(root / "preset", ["model=stylegan2"], [30.0, 25.0])
    write_composed_run(root / "paper", ["model=stylegan2", "scale=none"], [30.0, 26.0])
    old = write_composed_run(root / "older", ["model=stylegan2"], [30.0, 27.0], hydra_dir=False)
    config = OmegaConf.load(old / "config.yaml")
    del config["preset"]  # a run from before the preset was recorded
    OmegaConf.save(config, old / "config.yaml")
    report = tmp_path / "report.html"
    assert main([str(root), "--out", str(report)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert {run: rows[run]["preset"] for run in ("preset", "paper", "older")} == \
        {"preset": "stylegan2_digits", "paper": "none", "older": "-"}
    # the preset stands for the settings it changes (g_iters, batch size, widths, ...): they are no factors of their own
    assert "groups: preset (3 groups; chosen automatically" in out
    page = report.read_text()
    assert '<th class="text">preset</th>' in page
    assert [row[:4] for row in html_table(page, "runs")] == [["paper", "stylegan2", "digits", "none"],
                                                             ["preset", "stylegan2", "digits", "stylegan2_digits"],
                                                             ["older", "stylegan2", "digits", "-"],
                                                             ["real data", "", "", ""]]


def test_a_setting_older_runs_lack_is_no_factor(tmp_path, capsys):
    """Runs recorded before a setting existed lack its key: where every run that has it agrees, it is no factor."""
    runs = write_study(tmp_path)
    for config in (runs / "digits10").glob("*/s0/config.yaml"):
        cfg = OmegaConf.load(config)
        del cfg.model["g_batch_multiple"]
        config.write_text(OmegaConf.to_yaml(cfg))
    assert main([str(runs), "--out", str(tmp_path / "report.html")]) == 0
    assert "groups: model.augment, data.train_limit (4 groups; chosen automatically" in capsys.readouterr().out
