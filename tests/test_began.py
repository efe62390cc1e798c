"""BEGAN (Berthelot et al. 2017): the paper's networks at small size, the k_t update, L_D, L_G and M_global against hand
computations, training that logs M_global and k and resumes exactly, and one-paragraph errors for bad sizes and
settings."""
from __future__ import annotations

import json
import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from conftest import assert_same, compose_config, final_state, kill_and_resume, model_config, run_cli
from gan.errors import UserError
from gan.models.began import convergence_measure, k_update
from gan.nets.began import BEGANGenerator
from gan.train import build, train

pytestmark = pytest.mark.usefixtures("one_thread")

# 8 px digits (one scale), narrow networks: the smallest real BEGAN run
NARROW = ["model=began", "model.latent_dim=16", "model.generator.width=8", "model.discriminator.width=8",
          "model.discriminator.hidden=16"]
SMALL = [*NARROW, "data=digits", "data.image_size=8", "data.batch_size=16"]


def one_paragraph(text: str) -> str:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, text
    return lines[0]


def convs(net: nn.Module) -> list[tuple[int, int, int]]:
    """(in, out, stride) of each conv, in order; all are 3x3 with padding 1."""
    found = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in found)
    return [(m.in_channels, m.out_channels, m.stride[0]) for m in found]


# ---------------------------------------------------------------- the paper's networks
def test_the_networks_are_the_papers_autoencoder_and_decoder():
    """Section 3.5 at 32 px (base 8, three scales), n = 64, N_z = N_h = 64: the encoder's maps grow n, 2n, 3n with a
    stride-2 conv at each sub-sampling, an FC layer to h; the decoder (and G) an FC layer to 8x8xn, two convs a scale
    with nearest-neighbour upsampling between scales, a conv to the image's channels; ELU after every other conv."""
    module = instantiate(model_config("began", "", "data=cifar10"))
    g, d = module.generator, module.discriminator
    assert convs(d.encoder) == [(3, 64, 1), (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1),
                                (128, 192, 2), (192, 192, 1), (192, 192, 1)]
    assert (d.encoder.fc.in_features, d.encoder.fc.out_features) == (192 * 8 * 8, 64)
    decoder = [(64, 64, 1)] * 6 + [(64, 3, 1)]
    assert convs(d.decoder) == convs(g) == decoder
    fc = (64, 64 * 8 * 8)
    assert (d.decoder.fc.in_features, d.decoder.fc.out_features) == (g.fc.in_features, g.fc.out_features) == fc
    for net in (g, d):
        elus = sum(isinstance(m, nn.ELU) for m in net.modules())
        assert elus == len(convs(net)) - 1  # every conv but the image's
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.Tanh)) for m in net.modules())
    assert [m.mode for m in g.modules() if isinstance(m, nn.Upsample)] == ["nearest"] * 2
    x = g(torch.rand(5, 64) * 2 - 1)
    assert x.shape == d(x).shape == (5, 3, 32, 32)
    assert (module.latent_dim, module.gamma, module.lambda_k, module.loss.name) == (64, 0.5, 0.001, "began")
    assert module.k.item() == 0.0  # k_0
    assert "k" in module.state_dict()  # a buffer: checkpointed


def test_28_px_mnist_starts_from_7x7_maps():
    module = instantiate(model_config("began", "", "data=mnist5k"))
    g, d = module.generator, module.discriminator
    assert g.fc.out_features == 64 * 7 * 7 and d.encoder.fc.in_features == 192 * 7 * 7
    x = g(torch.rand(2, 64))
    assert x.shape == d(x).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("side", [12, 24, 36, 7, 4])
def test_other_image_sizes_are_refused_in_one_paragraph(side):
    with pytest.raises(UserError, match=re.escape(f"but the data has shape [1, {side}, {side}]")) as error:
        BEGANGenerator(shape=[1, side, side], latent_dim=8, width=8)
    assert "8 x 2^k" in str(error.value) and "data.image_size=" in str(error.value) and "\n" not in str(error.value)


def test_noise_is_uniform_in_minus_one_to_one():
    module = instantiate(model_config("began", "", *SMALL[1:]))
    z = module.noise(20000)
    assert z.shape == (20000, 16) and z.min() >= -1 and z.max() <= 1
    assert abs(z.mean().item()) < 0.01 and z.var().item() == pytest.approx(1 / 3, rel=0.02)  # U(-1, 1)
    x = module.sample(4, generator=torch.Generator().manual_seed(0))["x"]
    assert x.shape == (4, 1, 8, 8) and x.abs().max() <= 1


# ---------------------------------------------------------------- the equilibrium and the losses, by hand
@pytest.mark.parametrize("k, l_real, l_fake, gamma, lambda_k, expected", [
    (0.0, 0.4, 0.1, 0.5, 0.001, 0.0001),      # 0 + 0.001 (0.2 - 0.1)
    (0.5, 0.2, 0.3, 0.5, 0.1, 0.48),          # 0.5 + 0.1 (0.1 - 0.3)
    (0.3, 0.6, 0.3, 0.7, 0.01, 0.3012),       # 0.3 + 0.01 (0.42 - 0.3)
    (0.0, 0.2, 0.5, 0.5, 0.001, 0.0),         # 0 + 0.001 (0.1 - 0.5) = -0.0004, clipped to 0
    (0.9995, 1.0, 0.0, 1.0, 0.001, 1.0),      # 1.0005, clipped to 1
])
def test_k_update_by_hand(k, l_real, l_fake, gamma, lambda_k, expected):
    got = k_update(torch.tensor(k), torch.tensor(l_real), torch.tensor(l_fake), gamma, lambda_k)
    assert got.item() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("l_real, l_fake, expected", [
    (0.4, 0.3, 0.5),  # 0.4 + |0.2 - 0.3|
    (0.4, 0.1, 0.5),  # 0.4 + |0.2 - 0.1|
    (0.2, 0.1, 0.2),  # at equilibrium: L(x) alone
])
def test_convergence_measure_by_hand(l_real, l_fake, expected):
    assert convergence_measure(torch.tensor(l_real), torch.tensor(l_fake), 0.5).item() == pytest.approx(expected)


class Halve(nn.Module):
    """D(v) = v / 2, so L(v) = mean |v| / 2."""

    def forward(self, x):
        return 0.5 * x


class Constant(nn.Module):
    """G(z) = images of one value, whatever z."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, z, y=None):
        return torch.full((len(z), 1, 8, 8), self.value)


def test_losses_measure_and_k_on_known_networks():
    """x = 0.8 everywhere, G(z) = -0.6, D(v) = v / 2: L(x) = 0.4 and L(G(z)) = 0.3. With k_t = 0.25:
    L_D = 0.4 - 0.25 x 0.3 = 0.325, L_G = 0.3, M_global = 0.4 + |0.5 x 0.4 - 0.3| = 0.5,
    k_{t+1} = 0.25 + 0.001 (0.2 - 0.3) = 0.2499."""
    module = instantiate(model_config("began", "", *SMALL[1:]))
    module.discriminator, module.generator = Halve(), Constant(-0.6)
    module.k.fill_(0.25)
    batch = {"x": torch.full((4, 1, 8, 8), 0.8)}
    assert module.energy(batch["x"]).tolist() == pytest.approx([0.4] * 4)
    assert module.discriminator_loss(batch).item() == pytest.approx(0.325)
    assert (module._last["d_real"].item(), module._last["d_fake"].item()) == pytest.approx((0.4, 0.3))
    assert module.generator_loss(batch).item() == pytest.approx(0.3)
    d_phase, g_phase = module.phases
    module.after_step(d_phase)
    assert module.k.item() == 0.25  # k moves once per iteration, after G's step
    module.after_step(g_phase)
    assert module.k.item() == pytest.approx(0.2499)
    assert module._last["m_global"].item() == pytest.approx(0.5)
    assert module._last["k"].item() == pytest.approx(0.2499)
    # D's loss weights the fakes by k_t: with k = 1 it is eq. 4's L(x) - L(G(z)) = 0.1
    module.k.fill_(1.0)
    assert module.discriminator_loss(batch).item() == pytest.approx(0.1)


def test_d_loss_trains_d_to_reconstruct_real_and_not_fake_images():
    """The gradient of L_D reaches D only: the fakes are drawn without a graph to G."""
    module = instantiate(model_config("began", "", *SMALL[1:]))
    module.k.fill_(0.5)
    module.discriminator_loss({"x": torch.rand(4, 1, 8, 8) * 2 - 1}).backward()
    assert all(p.grad is None for p in module.generator.parameters())
    assert all(p.grad is not None for p in module.discriminator.parameters())


# ---------------------------------------------------------------- training and resume
def test_training_logs_m_global_and_k_as_the_equations_give_them(tmp_path):
    """`python -m gan.run model=began data=digits`: every logged k is the clipped update of the previous one from the
    iteration's L(x) (d_real) and L(G(z_G)) (g_loss), and M_global is their measure; the checkpoint holds k."""
    run = tmp_path / "run"
    result = run_cli(*SMALL, "g_iters=6", "model.log_every=1", "model.lambda_k=0.05", "logger=none", "metrics=none",
                     "callbacks.samples.every_g_iters=6", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_iter"] for r in records] == [1, 2, 3, 4, 5, 6]
    k = 0.0
    for r in records:
        l_real, l_fake = r["train/d_real"], r["train/g_loss"]
        assert r["train/d_loss"] == pytest.approx(l_real - k * r["train/d_fake"], rel=1e-5)  # k_t before the update
        k = min(1.0, max(0.0, k + 0.05 * (0.5 * l_real - l_fake)))
        assert r["train/k"] == pytest.approx(k, rel=1e-4, abs=1e-7)
        assert r["train/m_global"] == pytest.approx(l_real + abs(0.5 * l_real - l_fake), rel=1e-5)
    assert 0 < k < 1  # k moved and was not clipped: the checks above are not trivial
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"]["k"].item() == pytest.approx(k, rel=1e-4)
    assert (run / "samples" / "iter_000006.png").is_file()


def test_began_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = [*SMALL, "model.lambda_k=0.05", "callbacks.checkpoint.every_g_iters=3"]
    train(compose_config(whole, *args, "g_iters=6"))
    train(compose_config(parts, *args, "g_iters=3"))
    train(OmegaConf.merge(compose_config(parts, *args, "g_iters=6"),
                          {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=6"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 6 and state["state_dict"]["k"] > 0
    assert_same(state, final_state(parts))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, says", [
    ("model.gamma=0", "model.gamma must be a number in (0, 1]"),
    ("model.gamma=1.5", "model.gamma must be a number in (0, 1]"),
    ("model.gamma=high", "model.gamma must be a number in (0, 1]"),
    ("model.lambda_k=-0.001", "model.lambda_k must be a number in [0, 1]"),
    ("model.lambda_k=2", "model.lambda_k must be a number in [0, 1]"),
    ("model.k_0=1.5", "model.k_0 must be a number in [0, 1]"),
    ("model.loss=hinge", "does not honour model.loss=hinge"),
    ("model.regularizer=gp model.reg_weight=10", "does not honour model.regularizer=gp"),
    ("model.pack=2", "does not honour model.pack=2"),
    ("model.conditioning=concat", "does not honour model.conditioning=concat"),
    ("model.n_critic=5", "does not honour model.n_critic=5"),
    ("model.augment=diffaugment", "does not honour model.augment=diffaugment"),
    ("model.unroll_steps=5", "does not honour model.unroll_steps=5"),
    ("model.historical_averaging=0.1", "does not honour model.historical_averaging=0.1"),
    ("data=mnist5k data.image_size=24", "but the data has shape [1, 24, 24]"),
    ("data=ring", "but the data has shape [2]"),
])
def test_bad_settings_are_refused_in_one_paragraph(tmp_path, override, says):
    data = [] if "data=" in override else SMALL[len(NARROW):]
    with pytest.raises(UserError, match=re.escape(says)) as error:
        build(compose_config(tmp_path / "run", *NARROW, *data, *override.split()), tmp_path / "run")
    assert "\n" not in str(error.value)


def test_a_bad_gamma_on_the_command_line_exits_2_before_training(tmp_path):
    result = run_cli(*SMALL, "model.gamma=0", "g_iters=1", "logger=none", "metrics=none",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "model.gamma must be a number in (0, 1]" in one_paragraph(result.stderr)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------- slow: a real kill
@pytest.mark.slow
def test_began_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    whole, parts = kill_and_resume(tmp_path, [*SMALL, "model.lambda_k=0.05", "metrics=none", "logger=none",
                                              "g_iters=40", "callbacks.checkpoint.every_g_iters=3",
                                              "callbacks.samples.every_g_iters=20"])
    state = final_state(whole)
    assert state["state_dict"]["k"] > 0
    assert_same(state, final_state(parts))
