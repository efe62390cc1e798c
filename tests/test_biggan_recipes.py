"""BigGAN against the authors' BigGAN-PyTorch: the EMA averages G's whole state_dict (utils.py `ema`), batch-norm
statistics included; G samples with its batch norms in eval mode (launch_BigGAN_bs256x8.sh's --G_eval_mode) or in
train mode (train.py's default, the CIFAR-10 script's) without changing the running statistics, and evaluations
record which."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from torch import nn


pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["model=biggan", "data.image_size=8", "data.batch_size=8", "model.latent_dim=8", "model.generator.width=2",
        "model.generator.shared_dim=4", "model.discriminator.width=2"]


def norm_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]


def test_the_ema_averages_every_entry_of_the_state_dict_and_copies_the_integer_ones(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY, "model.ema_start=1", "model.ema_decay=0.75").model)
    player = module.players["generator"]
    live, ema = module.generator.state_dict(), module.ema_generator.module.state_dict()
    assert set(live) == set(ema)
    assert any(k.endswith("running_mean") for k in live) and any(k.endswith("running_var") for k in live)
    assert any(k.endswith("num_batches_tracked") for k in live) and any(k.endswith("_u") for k in live)

    def update(g_iter: int, value: float, count: int) -> None:
        """Every floating-point entry of the live G set to `value`, every integer one to `count`, then one update."""
        with torch.no_grad():
            for tensor in live.values():
                tensor.fill_(value if tensor.is_floating_point() else count)
        module.g_iter = g_iter
        module._update_ema(player)

    def assert_ema(value: float, count: int) -> None:
        for key, tensor in ema.items():
            expected = torch.full_like(tensor, value if tensor.is_floating_point() else count)
            assert torch.equal(tensor, expected), key

    update(0, 1.0, 5)  # before ema_start: a copy
    assert_ema(1.0, 5)
    update(1, 3.0, 7)  # 0.75 * 1 + 0.25 * 3
    assert_ema(1.5, 7)
    update(2, 6.0, 9)  # 0.75 * 1.5 + 0.25 * 6
    assert_ema(2.625, 9)


def test_the_ema_of_a_trained_g_averages_its_batch_norm_statistics(tmp_path):
    module = instantiate(compose_config(tmp_path, *TINY, "model.ema_start=1", "model.ema_decay=0.5").model)
    player, G = module.players["generator"], module.generator
    bn = norm_layers(G)[0]
    averaged = norm_layers(module.ema_generator.module)[0]
    y = torch.arange(8)
    means = []
    for g_iter in range(3):
        G(torch.randn(8, 8, generator=torch.Generator().manual_seed(g_iter)), y)  # train mode: statistics move
        means.append(bn.running_mean.clone())
        module.g_iter = g_iter
        module._update_ema(player)
    assert not torch.allclose(means[1], means[2])
    expected = 0.5 * (0.5 * means[0] + 0.5 * means[1]) + 0.5 * means[2]
    assert torch.allclose(averaged.running_mean, expected, rtol=1e-6, atol=0)
    assert int(averaged.num_batches_tracked) == int(bn.num_batches_tracked) == 3


@pytest.mark.parametrize("eval_mode", [True, False])
def test_samples_use_running_or_batch_statistics_and_leave_the_running_statistics_untouched(tmp_path, eval_mode):
    cfg = compose_config(tmp_path, *TINY, f"model.sample_eval_mode={str(eval_mode).lower()}")
    module = instantiate(cfg.model)
    assert module.sampling_context() == {"sample_eval_mode": eval_mode}
    for net in (module.generator, module.ema_generator.module):
        for layer in norm_layers(net):  # running statistics far from any batch's: the two modes differ
            layer.running_mean.fill_(3.0)
            layer.running_var.fill_(9.0)
    module.train()
    states = {name: copy.deepcopy(net.state_dict()) for name, net in
              (("live", module.generator), ("ema", module.ema_generator))}
    z, y = torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    for ema, net in ((None, module.ema_generator.module), (False, module.generator)):
        reference = copy.deepcopy(net).eval()  # spectral norm's vectors fixed, as at sampling
        if not eval_mode:
            for layer in norm_layers(reference):
                layer.train()
        with torch.no_grad():
            expected = reference(z, y)
            other = copy.deepcopy(net).eval()(z, y)  # eval mode: running statistics
        x = module.sample(z=z, y=y, ema=ema)["x"]
        assert torch.equal(x, expected)
        assert torch.equal(x, other) == eval_mode
    for name, net in (("live", module.generator), ("ema", module.ema_generator)):
        state = net.state_dict()
        assert all(torch.equal(state[k], states[name][k]) for k in state), name
    assert all(m.training for m in module.modules())


def test_evaluations_record_the_sampling_mode(tmp_path, monkeypatch):
    from gan.metrics.evaluator import Evaluator

    cfg = compose_config(tmp_path, *TINY, "model.sample_eval_mode=false")
    contexts = []
    monkeypatch.setattr(Evaluator, "score", lambda self, fake, split, seed, context, num_real: contexts.append(context))
    Evaluator(instantiate(cfg.data), names=["fid"], cache_dir=tmp_path).evaluate(instantiate(cfg.model), num_samples=4)
    assert contexts[0]["sample_eval_mode"] is False


def test_the_configs_name_their_sampling_mode(tmp_path):
    paper = compose_config(tmp_path, "model=biggan", "data=cifar10", fast=False)
    assert paper.model.sample_eval_mode is True and "scale" not in paper  # launch_BigGAN_bs256x8.sh --G_eval_mode
    digits = compose_config(tmp_path, "model=biggan", fast=False)
    assert digits.preset == "biggan_digits" and digits.model.sample_eval_mode is True  # as its README was measured
