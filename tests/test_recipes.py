"""The SNGAN, projection and WGAN-GP defaults against their official code (GUIDE "Reference recipes", issue 20).

Each value is checked against a transcription of the line that sets it in the reference repository (the commit the
transcription was read at is named with the repository), on the config as a run composes it; then the behaviour the
values switch on: G's step on twice D's batch (resuming exactly, each DDP rank drawing its share), mean pooling, and
the linear decay of the lr to zero over the run.
"""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import assert_same, compose_config, final_state, model_settings
from gan.models.base import GANModule
from gan.nets.arch import discriminator
from gan.train import train
from test_zoo import user_error

pytestmark = pytest.mark.usefixtures("one_thread")

SNGAN = "pfnet-research/sngan_projection@e84b1a5f"
WGAN_GP = "igul222/improved_wgan_training@fa66c574"
GAN_LIB = "pfnet-research/chainer-gan-lib@cf9efba5"  # SNGAN's "standard CNN" (SNDCGANDiscriminator)

# (source, file, the line's content): the value the line gives
SNGAN_CODE = {
    "batchsize": ((SNGAN, "configs/sn_cifar10_unconditional.yml", "batchsize: 64"), 64),
    "n_gen_samples": ((SNGAN, "configs/sn_cifar10_unconditional.yml", "n_gen_samples: 128"), 128),
    "alpha": ((SNGAN, "configs/sn_cifar10_unconditional.yml", "alpha: 0.0002"), 2e-4),
    "beta1": ((SNGAN, "configs/sn_cifar10_unconditional.yml", "beta1: 0.0"), 0.0),
    "beta2": ((SNGAN, "configs/sn_cifar10_unconditional.yml", "beta2: 0.9"), 0.9),
    # train.py: extensions.LinearShift('alpha', (config.adam['alpha'], 0.),
    #                                  (config.iteration_decay_start, config.iteration), opt_gen)
    "iteration_decay_start": ((SNGAN, "configs/sn_cifar10_unconditional.yml", "iteration_decay_start: 0"), 0),
    "pooling": ((SNGAN, "dis_models/snresnet_32.py", "h = F.sum(h, axis=(2, 3))"), "sum"),
    "output_bias": ((SNGAN, "dis_models/snresnet_32.py",
                     "self.l5 = SNLinear(ch, 1, initialW=chainer.initializers.GlorotUniform(), nobias=True)"), False),
}
# configs/sn_cifar10_conditional.yml (the projection discriminator on CIFAR-10) has the same lines.
WGAN_GP_CODE = {
    "BATCH_SIZE": ((WGAN_GP, "gan_cifar_resnet.py", "BATCH_SIZE = 64 # Critic batch size"), 64),
    "GEN_BS_MULTIPLE": ((WGAN_GP, "gan_cifar_resnet.py",
                         "GEN_BS_MULTIPLE = 2 # Generator batch size, as a multiple of BATCH_SIZE"), 2),
    "LR": ((WGAN_GP, "gan_cifar_resnet.py", "LR = 2e-4 # Initial learning rate"), 2e-4),
    "DECAY": ((WGAN_GP, "gan_cifar_resnet.py", "decay = tf.maximum(0., 1.-(tf.cast(_iteration, tf.float32)/ITERS))"),
              True),
    "betas": ((WGAN_GP, "gan_cifar_resnet.py",
               "gen_opt = tf.train.AdamOptimizer(learning_rate=LR*decay, beta1=0., beta2=0.9)"), (0.0, 0.9)),
    "pooling": ((WGAN_GP, "gan_cifar_resnet.py", "output = tf.reduce_mean(output, axis=[2,3])"), "mean"),
    # tflib/ops/linear.py: def Linear(name, input_dim, output_dim, inputs, biases=True, ...)
    "output_bias": ((WGAN_GP, "gan_cifar_resnet.py",
                     "output_wgan = lib.ops.linear.Linear('Discriminator.Output', DIM_D, 1, output)"), True),
}
CNN_OUTPUT_BIAS = ((GAN_LIB, "common/net.py",
                    "self.l4 = SNLinear(bottom_width * bottom_width * ch, output_dim, initialW=w)"), True)


def value(table: dict, key: str):
    return table[key][1]


# ---------------------------------------------------------------- each value against its source line


@pytest.mark.parametrize("model", ["sngan", "projection"])
def test_sngan_and_projection_follow_sngan_projection(model):
    cfg = model_settings(model, "", "data=cifar10")
    code = SNGAN_CODE
    assert cfg["g_batch_multiple"] == value(code, "n_gen_samples") / value(code, "batchsize") == 2
    assert cfg["g_lr"] == cfg["d_lr"] == value(code, "alpha")
    assert cfg["betas"] == [value(code, "beta1"), value(code, "beta2")]
    # LinearShift from iteration_decay_start = 0 to the last iteration: the whole run decays
    assert value(code, "iteration_decay_start") == 0 and cfg["lr_decay"] == 1.0
    d = model_settings(model, "discriminator", "data=cifar10")["resnet"]
    assert (d["pooling"], d["output_bias"]) == (value(code, "pooling"), value(code, "output_bias"))


def test_wgan_gp_follows_gan_cifar_resnet():
    cfg = model_settings("wgan_gp", "", "data=cifar10")
    code = WGAN_GP_CODE
    assert cfg["g_batch_multiple"] == value(code, "GEN_BS_MULTIPLE")
    assert cfg["g_lr"] == cfg["d_lr"] == value(code, "LR")
    assert tuple(cfg["betas"]) == value(code, "betas")
    assert value(code, "DECAY") and cfg["lr_decay"] == 1.0  # 1 - iteration / ITERS: the whole run
    d = model_settings("wgan_gp", "discriminator", "data=cifar10")["resnet"]
    assert (d["pooling"], d["output_bias"]) == (value(code, "pooling"), value(code, "output_bias"))


@pytest.mark.parametrize("model,arch,source", [("sngan", "resnet", SNGAN_CODE["output_bias"]),
                                               ("projection", "resnet", SNGAN_CODE["output_bias"]),
                                               ("wgan_gp", "resnet", WGAN_GP_CODE["output_bias"]),
                                               ("sngan", "cnn", CNN_OUTPUT_BIAS)])
def test_the_built_output_layer_has_a_bias_where_the_reference_has_one(tmp_path, model, arch, source):
    cfg = compose_config(tmp_path, f"model={model}", f"model.arch={arch}", "data=cifar10")
    module = instantiate(cfg.model)
    assert (module.discriminator.head.adversarial.bias is not None) == source[1]
    if model == "projection":  # the class embedding l_y = SNEmbedID(n_classes, ch, ...): no bias either way
        assert sum(p.numel() for p in module.discriminator.head.embed.parameters()) == 10 * 128


def test_the_other_models_keep_g_batch_equal_to_d_batch_and_a_constant_lr():
    for model in ("gan", "dcgan", "lsgan", "cgan", "acgan", "wgan"):
        cfg = model_settings(model, "", "data=cifar10")
        assert (cfg["g_batch_multiple"], cfg["lr_decay"]) == (1, 0.0), model


@pytest.mark.parametrize("experiment,model", [("toy_sngan", "sngan"), ("toy_wgan_gp", "wgan_gp")])
def test_the_toy_table_keeps_the_settings_it_was_measured_with(tmp_path, experiment, model):
    cfg = compose_config(tmp_path, f"experiment={experiment}")
    assert cfg.model.name == model and (cfg.model.g_batch_multiple, cfg.model.lr_decay) == (1, 0.0)
    instantiate(cfg.model)  # g_iters is null there: a decaying lr would stop for want of model.total_iters


@pytest.mark.parametrize("override,key", [("model.discriminator.resnet.pooling=max", "resnet.pooling"),
                                          ("model.discriminator.resnet.output_bias=1", "resnet.output_bias"),
                                          ("model.g_batch_multiple=0", "model.g_batch_multiple")])
def test_bad_recipe_values_are_named(tmp_path, override, key):
    with pytest.raises(Exception) as excinfo:
        instantiate(compose_config(tmp_path, "model=sngan", "data=cifar10", override).model)
    assert key in str(user_error(excinfo))


# ---------------------------------------------------------------- behaviour


def tiny_sngan(run, *overrides: str):
    return compose_config(run, "model=sngan", "data=digits", "data.image_size=8", "data.batch_size=16",
                          "model.generator.resnet.width=8", "model.discriminator.resnet.width=8", "model.n_critic=2",
                          *overrides)


def test_the_generator_step_draws_twice_the_discriminator_batch(tmp_path, monkeypatch):
    seen = {"d_real": [], "d_fake": [], "g_fake": []}
    d_loss, g_loss = GANModule.adversarial_d_loss, GANModule.adversarial_g_loss

    def recording_d_loss(self, real, y_real, fake, y_fake):
        seen["d_real"].append(real.shape[0])
        seen["d_fake"].append(fake.shape[0])
        return d_loss(self, real, y_real, fake, y_fake)

    def recording_g_loss(self, fake, y_fake):
        seen["g_fake"].append(fake.shape[0])
        return g_loss(self, fake, y_fake)

    monkeypatch.setattr(GANModule, "adversarial_d_loss", recording_d_loss)
    monkeypatch.setattr(GANModule, "adversarial_g_loss", recording_g_loss)
    train(tiny_sngan(tmp_path / "run", "g_iters=2"))
    assert seen["d_real"] == seen["d_fake"] == [16] * 4  # 2 iterations x n_critic 2, D's batch of 16
    assert seen["g_fake"] == [32] * 2  # n_gen_samples 128 = 2 x batchsize 64


def test_a_resumed_run_equals_an_uninterrupted_one_with_twice_the_generator_batch(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny_sngan(whole, "g_iters=4"))
    train(tiny_sngan(parts, "g_iters=2", "model.total_iters=4"))  # the lr schedule of the 4-iteration run
    train(OmegaConf.merge(tiny_sngan(parts, "g_iters=4"), {"resume": str(parts / "checkpoints" / "last.ckpt")}),
          ["g_iters=4"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 4
    assert_same(state, final_state(parts))


def test_each_ddp_rank_draws_its_share_of_the_generator_batch(tmp_path, monkeypatch):
    """Under DDP every rank draws the global G batch and keeps its slice (AdversarialModule.draw): two ranks of
    batch B together draw what one process of batch 2B draws, z and labels alike."""
    module = instantiate(compose_config(tmp_path, "model=projection", "data=digits", "data.image_size=8",
                                        "model.generator.resnet.width=8", "model.discriminator.resnet.width=8").model)
    inputs = []
    module.generator.register_forward_pre_hook(lambda net, args: inputs.append((args[0].clone(), args[1].clone())))
    start = module.rng.get_state()

    def g_inputs(world_size: int, rank: int, batch: int):
        monkeypatch.setattr(GANModule, "world_size", property(lambda self: world_size))
        monkeypatch.setattr(GANModule, "global_rank", property(lambda self: rank))
        module.rng.set_state(start)
        module.generator_loss({"x": torch.zeros(batch, 1, 8, 8), "y": torch.zeros(batch, dtype=torch.long)})
        return inputs.pop()

    z_single, y_single = g_inputs(1, 0, 16)
    z_ranks, y_ranks = zip(*(g_inputs(2, rank, 8) for rank in (0, 1)))
    assert z_single.shape == (32, 128) and all(z.shape == (16, 128) for z in z_ranks)
    assert torch.equal(torch.cat(z_ranks), z_single) and torch.equal(torch.cat(y_ranks), y_single)


def test_mean_pooling_is_sum_pooling_over_the_feature_map_area():
    settings = model_settings("sngan", "discriminator", "data=cifar10")
    torch.manual_seed(0)
    summed = discriminator(**settings)
    mean = discriminator(**{**settings, "resnet": {**settings["resnet"], "pooling": "mean"}})
    mean.load_state_dict(summed.state_dict())
    summed.eval(), mean.eval()  # spectral norm's power iteration stays put
    areas = []
    summed.features.register_forward_hook(lambda net, args, out: areas.append(out.shape[2] * out.shape[3]))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out_sum, out_mean = summed(x), mean(x)
    assert areas == [8 * 8]
    torch.testing.assert_close(out_mean, out_sum / areas[0])
    assert not torch.allclose(out_mean, out_sum)


def generator_lrs(tmp_path, monkeypatch, total: int) -> list[float]:
    lrs = []
    g_loss = GANModule.generator_loss

    def recording(self, batch):
        lrs.append([opt.param_groups[0]["lr"] for opt in self.optimizers()])
        return g_loss(self, batch)

    monkeypatch.setattr(GANModule, "generator_loss", recording)
    train(tiny_sngan(tmp_path / "run", f"g_iters={total}", "callbacks.checkpoint.every_g_iters=100"))
    return lrs


def test_the_lr_decays_linearly_to_zero_over_the_whole_run(tmp_path, monkeypatch):
    total, lr0 = 6, value(SNGAN_CODE, "alpha")
    lrs = generator_lrs(tmp_path, monkeypatch, total)
    assert len(lrs) == total and all(g == d for g, d in lrs)  # G and D decay together
    # gan.models.core.lr_schedule at lr_decay 1: 1 - i / (total + 1), CycleGAN's form
    assert [g for g, _ in lrs] == pytest.approx([lr0 * (1 - i / (total + 1)) for i in range(total)])
    # within lr0 / total of the references' 1 - i / total at every iteration
    assert all(abs(g - lr0 * (1 - i / total)) <= lr0 / total for i, (g, _) in enumerate(lrs))


@pytest.mark.xfail(strict=True, reason="gan.models.core.lr_schedule divides by decay_iters + 1 (CycleGAN's "
                   "`1 - max(0, epoch - n_epochs) / (n_epochs_decay + 1)`); the SNGAN and WGAN-GP codes use "
                   "1 - iteration / ITERS. core.py is outside this change.")
def test_the_lr_at_iteration_i_is_the_references_lr0_times_1_minus_i_over_total(tmp_path, monkeypatch):
    total, lr0 = 6, value(WGAN_GP_CODE, "LR")
    lrs = generator_lrs(tmp_path, monkeypatch, total)
    assert [g for g, _ in lrs] == pytest.approx([lr0 * (1 - i / total) for i in range(total)])
