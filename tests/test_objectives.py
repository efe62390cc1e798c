"""The lectures' objectives and tricks as options of the GAN family: relativistic losses (Jolicoeur-Martineau 2019),
unrolled D (Metz et al. 2017), Improved GAN's techniques (Salimans et al. 2016). Each against hand-computed values,
refused where it does not apply, and trained and resumed exactly."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from conftest import assert_same, compose_config, final_state
from gan.errors import UserError
from gan.improved import (HistoricalAverage, VirtualBatchNorm, check_feature_matching, feature_matching_loss,
                          one_sided_smoothing, smoothed_d)
from gan.losses import LOSSES
from gan.nets.conditioning import MinibatchDiscrimination
from gan.nets.mlp import MLPDiscriminator
from gan.train import train
from gan.unrolled import check_unrollable, unrolled_parameters

REAL, FAKE = [0.5, -0.5, 2.0], [0.25, -0.75, -1.0]


# ---------------------------------------------------------------- relativistic losses (values: test_losses.py)
def test_relativistic_g_loss_judges_the_real_minibatch(tmp_path):
    module = instantiate(compose_config(tmp_path, "model=gan", "data=ring", "model.loss=relativistic_average").model)
    batch = {"x": torch.randn(8, 2)}
    seen = []
    module.discriminator.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    module.generator_loss(batch)
    assert seen == [8, 8]  # the fakes, then the iteration's real minibatch


@pytest.mark.parametrize("overrides, says", [
    (["model=infogan", "model.loss=relativistic_average"], "InfoGAN does not use"),
    (["model=acgan", "model.unroll_steps=5"], "ACGAN does not use"),
    (["model=gan", "data=ring", "model.loss=relativistic", "model.g_batch_multiple=2"], "G's batch must equal D's"),
    (["model=wgan", "model.arch=mlp", "data=ring", "model.unroll_steps=5"], "written out for Adam"),
    (["model=gan", "data=ring", "model.unroll_steps=-1"], "model.unroll_steps must be a positive integer"),
    (["model=gan", "data=ring", "model.label_smoothing=1.0"], "a number in [0, 1)"),
    (["model=gan", "data=ring", "model.loss=wasserstein", "model.label_smoothing=0.1"], "has none"),
    (["model=gan", "data=ring", "model.feature_matching=true", "model.unroll_steps=5"], "would have no effect"),
    (["model=cgan", "model.discriminator.minibatch_kernels=10"], "for an unconditional D"),
    (["model=cgan", "model.arch=dcgan", "model.virtual_batch_norm=16"], "G of an unconditional GAN"),
])
def test_options_that_do_not_apply_are_refused_in_one_paragraph(tmp_path, overrides, says):
    with pytest.raises(Exception) as error:
        instantiate(compose_config(tmp_path, *overrides).model)
    cause = error.value if isinstance(error.value, UserError) else error.value.__cause__
    assert isinstance(cause, UserError), error.value
    assert says in str(cause) and "\n" not in str(cause)


# ---------------------------------------------------------------- unrolled GAN
class Linear1D(nn.Module):
    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.w * x


@pytest.mark.parametrize("steps", [1, 3])
def test_unrolled_sgd_steps_give_the_closed_form_gradient(steps):
    """D(x) = w x, G's output theta, Wasserstein losses: D's loss w theta - w r, so k SGD steps give
    w_k = w - k lr (theta - r), and G's loss -w_k theta has d/dtheta = -w + k lr (2 theta - r). The plain
    (unrolled 0) gradient is -w; D's parameter and its optimiser are left as they were."""
    w, theta, r, lr = 0.7, 0.3, -1.2, 0.1
    d = Linear1D(w)
    g = nn.Parameter(torch.tensor(theta))
    optimizer = torch.optim.SGD(d.parameters(), lr=lr)
    loss = LOSSES["wasserstein"]
    real = torch.tensor([r])
    judge, params = unrolled_parameters(d, lambda judge: loss.d(judge(real), judge(g.reshape(1))), optimizer, steps)
    loss.g(judge(g.reshape(1))).backward()
    assert g.grad.item() == pytest.approx(-w + steps * lr * (2 * theta - r), rel=1e-6)
    assert params["w"].item() == pytest.approx(w - steps * lr * (theta - r), rel=1e-6)
    assert torch.equal(d.w.detach(), torch.tensor(w)) and d.w.grad is None and not optimizer.state


def test_unrolled_adam_steps_are_torch_adams():
    """Two unrolled steps from an Adam that has already stepped twice (its moments and step count in use) land
    where torch.optim.Adam's own next two steps do (with weight decay)."""
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    optimizer = torch.optim.Adam(d.parameters(), lr=0.01, betas=(0.5, 0.9), weight_decay=0.01)
    x = torch.randn(5, 3)
    for _ in range(2):
        optimizer.zero_grad()
        d(x).square().mean().backward()
        optimizer.step()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    state_before = [{k: v.clone() for k, v in s.items()} for s in optimizer.state.values()]
    _, params = unrolled_parameters(d, lambda judge: judge(x).square().mean(), optimizer, 2)
    assert all(torch.equal(v, before[k]) for k, v in d.state_dict().items())  # D untouched
    assert all(torch.equal(v, s[k]) for s, now in zip(state_before, optimizer.state.values()) for k, v in now.items())
    for _ in range(2):
        optimizer.zero_grad()
        d(x).square().mean().backward()
        optimizer.step()
    for name, p in d.named_parameters():
        torch.testing.assert_close(params[name], p, rtol=1e-5, atol=1e-7)


def test_only_adam_and_plain_sgd_unroll():
    check_unrollable(torch.optim.Adam, 5)
    check_unrollable(torch.optim.SGD, 5)
    check_unrollable(torch.optim.RMSprop, 0)  # not unrolled: anything goes
    from functools import partial
    refused = (torch.optim.RMSprop, partial(torch.optim.SGD, momentum=0.9), partial(torch.optim.Adam, amsgrad=True))
    for optimizer in refused:
        with pytest.raises(UserError, match="written out for Adam"):
            check_unrollable(optimizer, 5)


# ---------------------------------------------------------------- Improved GAN's techniques
def test_one_sided_label_smoothing_is_cross_entropy_with_real_targets_below_one():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    want = (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    assert smoothed_d(real, fake, 0.1).item() == pytest.approx(want.item(), rel=1e-6)
    smoothed = one_sided_smoothing(LOSSES["non_saturating"], 0.1)
    assert smoothed.d(real, fake).item() == pytest.approx(want.item(), rel=1e-6)
    assert smoothed.g is LOSSES["non_saturating"].g  # G's loss is not smoothed
    assert one_sided_smoothing(LOSSES["hinge"], 0.0) is LOSSES["hinge"]


def test_minibatch_discrimination_sums_the_other_samples_closeness():
    """B = 1 kernel of C = 2 dimensions, T the identity on 2 features: M_i = h_i, o(x_i) = sum over j != i of
    exp(-||h_i - h_j||_1), plus the bias b = -1."""
    layer = MinibatchDiscrimination(2, kernels=1, kernel_dim=2)
    with torch.no_grad():
        layer.T.copy_(torch.eye(2))
    h = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    out = layer(h)
    l1 = lambda a, b: sum(abs(x - y) for x, y in zip(a, b))  # noqa: E731
    rows = h.tolist()
    want = [sum(math.exp(-l1(a, b)) for j, b in enumerate(rows) if j != i) - 1 for i, a in enumerate(rows)]
    assert torch.equal(out[:, :2], h)
    assert out[:, 2].tolist() == pytest.approx(want, rel=1e-6)


def test_historical_average_is_the_mean_of_the_parameters_so_far():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    history = HistoricalAverage([p])
    seen = [p.detach().clone()]
    for value in ([3.0, 0.0], [2.0, 4.0]):
        with torch.no_grad():
            p.copy_(torch.tensor(value))
        history.update()
        seen.append(p.detach().clone())
    average = torch.stack(seen).mean(0)
    torch.testing.assert_close(history.mean0, average)
    with torch.no_grad():
        p.copy_(torch.tensor([0.0, 0.0]))
    assert history.penalty().item() == pytest.approx(average.square().sum().item(), rel=1e-6)
    assert set(history.state_dict()) == {"mean0", "count"}


def test_feature_matching_loss_is_the_mean_squared_difference_of_feature_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)
    assert feature_matching_loss(real, fake).item() == pytest.approx(((1 - 2) ** 2 + (1 - 3) ** 2) / 2)


def test_feature_matching_needs_a_d_with_a_head():
    check_feature_matching(MLPDiscriminator((2,), hidden=4, depth=1, norm="none"))
    with pytest.raises(UserError, match="has no such head"):
        check_feature_matching(nn.Linear(2, 1))


def test_feature_matching_reads_what_ds_head_reads(tmp_path):
    module = instantiate(compose_config(tmp_path, "model=gan", "data=ring", "model.feature_matching=true").model)
    heads = []
    module.discriminator.head.register_forward_pre_hook(lambda m, args: heads.append(args[0]))
    loss = module.generator_loss({"x": torch.randn(8, 2)})
    real_features, fake_features = heads
    assert loss.item() == pytest.approx(feature_matching_loss(real_features, fake_features).item())


def test_virtual_batch_norm_mixes_the_reference_statistics_with_the_samples_own():
    """Reference rows 1 and 3 (mean 2, mean square 5): normalised by themselves to -1 and 1. A sample 5, c = 1/3:
    mean 2/3 * 2 + 1/3 * 5 = 3, mean square 2/3 * 5 + 1/3 * 25 = 35/3, variance 35/3 - 9 = 8/3."""
    norm = VirtualBatchNorm(nn.BatchNorm1d(1, eps=0.0), reference=2)
    out = norm(torch.tensor([[1.0], [3.0], [5.0]]))
    assert out.flatten().tolist() == pytest.approx([-1.0, 1.0, 2 / math.sqrt(8 / 3)], rel=1e-6)


def test_virtual_batch_norm_makes_each_sample_independent_of_its_batch(tmp_path):
    cfg = compose_config(tmp_path, "model=dcgan", "model.generator.dcgan.width=8", "model.discriminator.dcgan.width=8",
                         "model.virtual_batch_norm=16")
    g = instantiate(cfg.model).generator
    z = torch.randn(5, g.reference_latents.shape[1])
    alone, together = g(z[:1]), g(z)[:1]  # train mode: plain batch norm would differ here
    torch.testing.assert_close(alone, together)
    with pytest.raises(Exception, match="has none"):
        instantiate(compose_config(tmp_path, "model=gan", "data=ring", "model.virtual_batch_norm=16").model)


def resumed_exactly(tmp_path, args: list[str]) -> dict:
    """5 iterations straight, and 3 then resumed to 5: the same final state (returned)."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_config(whole, *args, "g_iters=5"))
    train(compose_config(parts, *args, "g_iters=3"))
    train(OmegaConf.merge(compose_config(parts, *args, "g_iters=5"),
                          {"resume": str(parts / "checkpoints" / "last.ckpt")}), ["g_iters=5"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 5
    assert_same(state, final_state(parts))
    return state


def test_virtual_batch_norm_trains_and_resumes_exactly(tmp_path):
    state = resumed_exactly(tmp_path, ["model=dcgan", "model.generator.dcgan.width=8",
                                       "model.discriminator.dcgan.width=8", "data.image_size=8", "data.batch_size=16",
                                       "model.virtual_batch_norm=16", "callbacks.checkpoint.every_g_iters=3"])
    assert "generator.reference_latents" in state["state_dict"]


# ---------------------------------------------------------------- training and exact resume
RESUMED = {
    "unrolled_history_minibatch_smoothing": ["model.unroll_steps=2", "model.historical_averaging=0.1",
                                             "model.discriminator.minibatch_kernels=8", "model.label_smoothing=0.1"],
    "relativistic_average_ls": ["model.loss=relativistic_average_ls"],
    "feature_matching": ["model.feature_matching=true"],
}


@pytest.mark.parametrize("name", sorted(RESUMED))
def test_options_train_and_resume_exactly(tmp_path, name):
    args = ["model=gan", "data=ring", "data.batch_size=32", "model.generator.mlp.hidden=16",
            "model.discriminator.mlp.hidden=16", "model.log_every=1", "callbacks.checkpoint.every_g_iters=3",
            *RESUMED[name]]
    state = resumed_exactly(tmp_path, args)
    if "historical_averaging=0.1" in " ".join(args):
        assert state["state_dict"]["historical.generator.count"].item() == 6  # the initial weights + 5 steps
