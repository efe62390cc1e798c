"""InfoGAN (Chen et al. 2016) on the kinds contract: the paper's MNIST networks, the prior and the mutual-information
term against hand computations, the code-accuracy matching, training that resumes exactly, its evaluation suite and
grids, gan.evaluate and gan.compare, DDP, and one-paragraph errors for bad code sizes."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch import nn

from conftest import assert_same, compose_config, ddp_run, final_state, kill_and_resume, model_config, run_cli
from gan.compare import main as compare_main
from gan.evaluate import main as evaluate_main
from gan.kinds import check_model
from gan.kinds.latent_codes import matched_accuracy
from gan.nets.infogan import CodePosterior
from gan.errors import UserError
from gan.train import build, train

# 16 px digits, narrow networks: the smallest real InfoGAN run
SMALL = ["model=infogan", "data=digits", "data.batch_size=16", "model.generator.width=8", "model.generator.hidden=32",
         "model.discriminator.width=8", "model.discriminator.hidden=32", "model.discriminator.q_hidden=16"]


def one_paragraph(text: str) -> str:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------- the paper's networks and losses
def test_the_networks_are_the_papers_mnist_networks():
    """Appendix C.1 at 28x28: G FC 1024, FC 7x7x128, up-conv 64, up-conv 1; D conv 64, conv 128, FC 1024, a logit;
    Q FC 128 then 10 categorical logits and 2 Gaussian means (std fixed at 1, as the reference)."""
    module = instantiate(model_config("infogan", "", "data=mnist5k"))
    g, d = module.generator, module.discriminator
    linear = [(m.in_features, m.out_features) for m in g.modules() if isinstance(m, nn.Linear)]
    assert linear == [(62 + 10 + 2, 1024), (1024, 7 * 7 * 128)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in g.modules()
            if isinstance(m, nn.ConvTranspose2d)] == [(128, 64, (4, 4), (2, 2)), (64, 1, (4, 4), (2, 2))]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in d.body if isinstance(m, nn.Conv2d)] == \
        [(1, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2))]
    assert [(m.in_features, m.out_features) for m in d.modules() if isinstance(m, nn.Linear)] == \
        [(7 * 7 * 128, 1024), (1024, 1), (1024, 128), (128, 12)]
    assert {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    assert (module.latent_dim, module.categorical_codes, module.continuous_codes, module.info_weight) == (62, (10,), 2, 1.0)
    assert (module.players["generator"].lr, module.players["discriminator"].lr) == (1e-3, 2e-4)
    x = g(torch.randn(3, 74))
    assert x.shape == (3, 1, 28, 28) and d(x).shape == (3,)
    assert check_model(module).name == "latent_codes"


def test_the_prior_is_uniform_noise_a_categorical_and_uniform_continuous_codes():
    module = instantiate(model_config("infogan", "", *SMALL[1:]))
    u = torch.full((2, 62 + 1 + 2), 0.75)
    u[1, 62] = 0.999999
    z, cat, cont = module.split_prior(u)
    assert torch.equal(z, torch.full((2, 62), 0.5)) and cat.tolist() == [[7], [9]] and torch.equal(cont, torch.full((2, 2), 0.5))
    inputs = module.generator_inputs(z, cat, cont)
    assert inputs.shape == (2, 74) and inputs[0, 62 + 7] == 1 and inputs[0, 62:72].sum() == 1
    draws = module.split_prior(torch.rand(20000, 65, generator=torch.Generator().manual_seed(0)))[1][:, 0]
    assert set(draws.tolist()) == set(range(10)) and abs(draws.float().mean().item() - 4.5) < 0.1


def test_the_information_term_is_the_codes_negative_log_likelihood_under_q():
    module = instantiate(model_config("infogan", "", *SMALL[1:]))
    logits = torch.tensor([[2.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0, 0], [0.0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0]])
    mean = torch.tensor([[0.5, -0.5], [0.0, 0.25]])
    posterior = CodePosterior([logits], mean, torch.zeros_like(mean))
    cat, cont = torch.tensor([[0], [2]]), torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    # log softmax by hand: row 0 picks the 2 of (2, 0 x 9); row 1 picks a 0 of (0, 1, 0 x 8)
    log_cat = [2 - math.log(math.exp(2) + 9), 0 - math.log(math.e + 9)]
    gauss = lambda x, m: -0.5 * math.log(2 * math.pi) - 0.5 * (x - m) ** 2  # noqa: E731  std 1
    log_cont = [gauss(1, 0.5) + gauss(-1, -0.5), gauss(0, 0) + gauss(0, 0.25)]
    loss = module.information(posterior, cat, cont)
    assert loss.item() == pytest.approx(-(sum(log_cat) + sum(log_cont)) / 2, rel=1e-6)
    assert module._last["mi_categorical"].item() == pytest.approx(math.log(10) + sum(log_cat) / 2, rel=1e-6)
    assert module._last["mi_continuous"].item() == pytest.approx(2 * math.log(2) + sum(log_cont) / 2, rel=1e-6)


def test_matched_accuracy_finds_the_best_one_to_one_matching():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert matched_accuracy(np.array([2, 2, 0, 0, 1, 1]), labels) == 1.0  # a relabelling is perfect
    assert matched_accuracy(np.array([0, 0, 0, 0, 1, 1]), labels) == pytest.approx(4 / 6)  # one cluster, one class
    assert matched_accuracy(np.array([0, 1, 2, 3, 4, 5]), labels) == pytest.approx(3 / 6)


# ---------------------------------------------------------------- training, evaluation, grids
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("infogan") / "run"
    train(compose_config(run, *SMALL, "g_iters=4", "metrics=default", "metrics.names=[fid]", "metrics.num_samples=40",
                         "metrics.final_num_samples=40",
                         "metrics.every_n_g_iters=4", "model.log_every=2"))
    return run


def test_training_writes_a_grid_per_code_and_logs_the_information_bounds(trained):
    samples = trained / "samples"
    for name, columns in (("categorical_0", 10), ("continuous_0", 8), ("continuous_1", 8)):
        image = Image.open(samples / name / "iter_000004.png")
        assert image.size[0] == columns * (48 + 2) + 2  # 16-pixel digits enlarged to 48, 2 pixels of padding
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r}
    assert {"train/mi_categorical", "train/mi_continuous", "val/code_accuracy", "val/mi_categorical"} <= logged
    report = json.loads((trained / "eval.json").read_text())
    values = report["values"]
    for key in ("code_accuracy", "ref_real/code_accuracy", "ref_kmeans/code_accuracy", "ref_chance/code_accuracy"):
        assert 0 <= values[key] <= 1
    assert values["ref_real/code_accuracy"] > 0.8 > values["ref_chance/code_accuracy"]  # the classifier; chance
    assert values["mi_categorical"] <= math.log(10) == report["provenance"]["mi_categorical_max"]


def test_gan_evaluate_prints_the_code_values_and_saves_images_with_their_codes(trained, capsys):
    code = evaluate_main([f"ckpt={trained}", "metrics=[fid]", "num_samples=30", "split=test", "save_samples=true"])
    out = capsys.readouterr().out
    assert code == 0 and "code_accuracy" in out and "ref_kmeans/code_accuracy" in out and "mi_categorical" in out
    report = json.loads((trained / "checkpoints" / "eval.json").read_text())
    samples = np.load(report["provenance"]["samples_file"])
    assert samples["arr_0"].shape == (30, 16, 16, 1) and set(samples["labels"].tolist()) <= set(range(10))


def test_the_mutual_information_bound_sums_over_batches_to_the_one_shot_value(monkeypatch):
    """The evaluation's bound, drawn in batches of 7, equals H(c) + mean log Q(c | x) of the same 30 samples drawn at
    once and scored by hand (log-softmax at the code; Gaussian log-density with std 1)."""
    import gan.kinds.latent_codes as latent_codes
    from gan.kinds import EvalRequest

    module = instantiate(model_config("infogan", "", *SMALL[1:]))
    rng = torch.Generator().manual_seed(0)
    for parameter in module.parameters():  # away from N(0, 0.02), whose images and posteriors are all but constant
        torch.nn.init.normal_(parameter, 0, 0.5, generator=rng)
    monkeypatch.setattr(latent_codes, "MI_BATCH", 7)
    values = latent_codes.mutual_information(module, EvalRequest(split="val", seed=5, num_samples=30))
    samples = module.sample(30, generator=torch.Generator().manual_seed(5))
    module.discriminator.eval()
    flat = module.discriminator.q_head(module.discriminator.body(samples["x"])).detach()
    log_cat = torch.log_softmax(flat[:, :10], 1).gather(1, samples["categorical"]).squeeze(1)
    log_cont = (-0.5 * math.log(2 * math.pi) - 0.5 * (samples["continuous"] - flat[:, 10:]) ** 2).sum(1)
    assert abs(log_cat.mean().item() + math.log(10)) > 0.1  # Q is far from uniform: the bound is not ~0
    assert values["mi_categorical"] == pytest.approx(math.log(10) + log_cat.mean().item(), rel=1e-5)
    assert values["mi_continuous"] == pytest.approx(2 * math.log(2) + log_cont.mean().item(), rel=1e-5)


def test_gan_compare_reads_infogan_runs(trained, tmp_path, capsys):
    assert compare_main([str(trained), "--metric", "code_accuracy", "--out", str(tmp_path / "r.html")]) == 0
    assert "code_accuracy" in capsys.readouterr().out and (tmp_path / "r.html").is_file()


def test_infogan_trains_and_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_config(whole, *SMALL, "g_iters=5", "callbacks.checkpoint.every_g_iters=3"))
    train(compose_config(parts, *SMALL, "g_iters=3", "callbacks.checkpoint.every_g_iters=3"))
    from omegaconf import OmegaConf
    train(OmegaConf.merge(compose_config(parts, *SMALL, "g_iters=5", "callbacks.checkpoint.every_g_iters=3"),
                          {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=5"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 5
    assert_same(state, final_state(parts))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, says", [
    ("model.categorical_codes=[10,0]", "model.categorical_codes must be a list of code sizes, each an integer of at least 2"),
    ("model.categorical_codes=[2.5]", "model.categorical_codes must be a list of code sizes"),
    ("model.categorical_codes=ten", "model.categorical_codes must be a list of code sizes"),
    ("model.continuous_codes=-1", "model.continuous_codes must be a whole number of U(-1, 1) codes"),
    ("model.continuous_codes=1.5", "model.continuous_codes must be a whole number"),
    ("model.categorical_codes=[] model.continuous_codes=0", "needs at least one latent code"),
    ("model.conditioning=concat", "takes model.conditioning=none and model.pack=1"),
    ("model.pack=2", "takes model.conditioning=none and model.pack=1"),
])
def test_bad_code_sizes_and_options_are_refused_in_one_paragraph(tmp_path, override, says):
    with pytest.raises(UserError, match=re.escape(says)) as error:
        build(compose_config(tmp_path / "run", *SMALL, *override.split()), tmp_path / "run")
    assert "\n" not in str(error.value)


def test_a_bad_code_size_on_the_command_line_exits_2_before_training(tmp_path):
    result = run_cli(*SMALL, "model.categorical_codes=[10,1]", "g_iters=1", "logger=none", "metrics=none",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "each an integer of at least 2" in one_paragraph(result.stderr)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------- slow: a real kill, and DDP on 2 CPU processes
CLI = [*SMALL, "data.batch_size=8", "metrics=none", "logger=none"]


@pytest.mark.slow
def test_infogan_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    whole, parts = kill_and_resume(tmp_path, [*CLI, "g_iters=40", "callbacks.checkpoint.every_g_iters=3",
                                              "callbacks.samples.every_g_iters=20"])
    assert_same(final_state(whole), final_state(parts))


@pytest.mark.slow
def test_infogan_runs_under_ddp_on_two_cpu_processes(tmp_path):
    records = ddp_run(tmp_path, *CLI)
    assert all("train/mi_categorical" in r for r in records)
    assert records[-1]["images_seen"] == 4 * 8 * 2  # 2 ranks x batch 8
