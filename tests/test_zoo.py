"""The GAN zoo: every model and toy experiment config trains through the composed config; the variants do what
their papers say (clipping, auxiliary classifier, spectral norm, architectures); conditional layouts; bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from conftest import CONF, compose_config, model_settings
from gan.errors import UserError
from gan.models.acgan import ACGAN
from gan.models.wgan import WGAN
from gan.nets.arch import DISCRIMINATORS, discriminator, generator
from gan.train import load_checkpoint, train

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml")  # the noise -> image GANs (built on _common.yaml)
                if not p.stem.startswith("_") and "- _common" in p.read_text())
TOY_EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("toy_*.yaml"))
CONDITIONAL = ["cgan", "acgan", "projection"]
DIGITS = ["data=digits", "data.image_size=8", "data.batch_size=16"]


def tiny(cfg_model) -> list[str]:
    """Overrides that shrink whichever networks a model config uses to a few channels."""
    if "arch" in cfg_model:
        return [f"model.{net}.{arch}.width=8" for net in ("generator", "discriminator") for arch in ("dcgan", "cnn", "resnet")] + \
               [f"model.{net}.mlp.hidden=32" for net in ("generator", "discriminator")]
    return [f"model.{net}.{key}={8 if key == 'width' else 32}" for net in ("generator", "discriminator")
            for key in ("width", "hidden") if key in cfg_model[net]]


def compose_tiny(run: Path, *overrides: str):
    cfg = compose_config(run, *overrides)
    return compose_config(run, *overrides, *tiny(cfg.model))


def user_error(excinfo) -> UserError:
    """The UserError itself, or the one Hydra's instantiate wrapped while building the networks."""
    error = excinfo.value
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    assert error is not None, f"expected a UserError, got {excinfo.value!r}"
    return error


# ---------------------------------------------------------------- every config trains


@pytest.mark.parametrize("overrides", [[f"model={m}"] for m in MODELS] + [["model=sngan", "model.arch=cnn"]],
                         ids=lambda o: " ".join(o))
def test_every_model_config_trains_a_few_steps(tmp_path, overrides):
    run = tmp_path / "run"
    cfg = compose_tiny(run, *overrides, *DIGITS, "g_iters=2", "model.log_every=1")
    train(cfg)
    _, _, module = load_checkpoint(run)
    assert module.g_iter == 2
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2 * (cfg.model.n_critic + 1)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([r["train/d_loss"], r["train/g_loss"]])).all() for r in records)
    assert module.sample(3)["x"].shape == (3, 1, 8, 8)


@pytest.mark.parametrize("experiment,data", [(e, ("ring", "grid")[i % 2]) for i, e in enumerate(TOY_EXPERIMENTS)])
def test_every_toy_experiment_trains(tmp_path, experiment, data):
    run = tmp_path / "run"
    cfg = compose_config(run, f"experiment={experiment}", f"data={data}", "trainer.max_steps=12", "g_iters=null",
                         "model.total_iters=12", "callbacks.samples.every_g_iters=1000")
    assert cfg.model.generator.get("mlp", cfg.model.generator).get("hidden") and cfg.data.name == data
    train(cfg)
    _, _, module = load_checkpoint(run)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12
    assert module.sample(5)["x"].shape == (5, 2)


def test_toy_experiments_share_one_update_budget(tmp_path):
    budgets = {e: compose_config(tmp_path, f"experiment={e}").trainer.max_steps for e in TOY_EXPERIMENTS
               if e != "toy_tuned"}  # the tuned recipe has its own budget, in generator iterations
    assert len(set(budgets.values())) == 1, budgets


# ---------------------------------------------------------------- the variants' own mechanics


def test_wgan_clips_every_critic_weight_and_uses_rmsprop(tmp_path):
    cfg = compose_tiny(tmp_path / "run", "model=wgan", *DIGITS, "model.clip=0.003")
    module = instantiate(cfg.model)
    assert isinstance(module, WGAN)
    g_opt, d_opt = module.configure_optimizers()
    assert isinstance(d_opt, torch.optim.RMSprop) and d_opt.defaults["lr"] == 5e-5
    with torch.no_grad():
        for p in module.discriminator.parameters():
            p.uniform_(-1, 1)
    module.after_step(module.phases[0])
    values = torch.cat([p.flatten() for p in module.discriminator.parameters()])
    assert values.abs().max() <= 0.003 and values.abs().max() > 0.0029


def test_acgan_trains_the_auxiliary_classifier_on_real_and_fake():
    torch.manual_seed(0)
    G = generator("mlp", [2], latent_dim=4, num_classes=3, conditioning="acgan", mlp={"hidden": 16, "depth": 1})
    D = discriminator("mlp", [2], norm="none", pack=1, num_classes=3, conditioning="acgan", minibatch_kernels=0,
                      mlp={"hidden": 16, "depth": 1})
    module = ACGAN(generator=G, discriminator=D, g_optimizer=None, d_optimizer=None,
                   **{**model_settings("acgan"), "latent_dim": 4, "num_classes": 3})
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    y_real, y_fake = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 2, 1, 1, 0, 0])
    d_adv, c_real = D(real, y_real, return_class_logits=True)
    d_adv_fake, c_fake = D(fake, y_fake, return_class_logits=True)
    expected = (module.loss.d(d_adv, d_adv_fake) + torch.nn.functional.cross_entropy(c_real, y_real)
                + torch.nn.functional.cross_entropy(c_fake, y_fake))
    assert module.adversarial_d_loss(real, y_real, fake, y_fake).item() == pytest.approx(expected.item(), rel=1e-6)
    expected_g = module.loss.g(d_adv_fake) + torch.nn.functional.cross_entropy(c_fake, y_fake)
    assert module.adversarial_g_loss(fake, y_fake).item() == pytest.approx(expected_g.item(), rel=1e-6)


@pytest.mark.parametrize("arch", sorted(DISCRIMINATORS))
def test_spectral_norm_bounds_the_largest_singular_value_of_every_layer(arch):
    torch.manual_seed(0)
    shape = [2] if arch == "mlp" else [3, 16, 16]
    D = discriminator(arch, shape, norm="spectral", pack=1, num_classes=None, conditioning="none", minibatch_kernels=0,
                      **{arch: {"hidden": 32, "depth": 3} if arch == "mlp" else
                         {"width": 8, "pooling": "sum", "output_bias": False} if arch == "resnet" else {"width": 8}})
    layers = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert len(layers) >= 3
    with torch.no_grad():
        for layer in layers:
            layer.parametrizations.weight.original.mul_(100)  # raw weights far above norm 1
        for _ in range(100):  # each training-mode forward runs one power iteration
            D(torch.randn(4, *shape))
        for layer in layers:
            raw = layer.parametrizations.weight.original
            assert torch.linalg.matrix_norm(raw.flatten(1), ord=2) > 2
            assert torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2) == pytest.approx(1.0, abs=5e-3)


def test_spectrally_normalised_mlp_critic_is_1_lipschitz():
    torch.manual_seed(0)
    D = discriminator("mlp", [2], norm="spectral", pack=1, num_classes=None, conditioning="none", minibatch_kernels=0,
                      mlp={"hidden": 64, "depth": 3})
    for _ in range(30):
        D(torch.randn(8, 2))
    D.eval()
    x = (torch.randn(256, 2) * 3).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x)
    assert grad.norm(dim=1).max() <= 1.0 + 1e-4


# D: 1,053,824, the count of pfnet-research/sngan_projection dis_models/snresnet_32.py at ch=128 (OptimizedBlock
# 151,680 + Block(down) 311,680 + 2 x Block 295,168 + `self.l5 = SNLinear(ch, 1, ..., nobias=True)` 128).
@pytest.mark.parametrize("arch,size,published", [("resnet", 32, (4_276_739, 1_053_824)),
                                                 ("cnn", 32, None), ("resnet", 8, None), ("cnn", 64, None)])
def test_architectures_read_image_size_and_channels_from_the_data(arch, size, published):
    # every architecture's settings as model=sngan gives them (conf/model/_arch.yaml: the published widths)
    g_settings, d_settings = (model_settings("sngan", role, "data=cifar10") for role in ("generator", "discriminator"))
    for channels in (1, 3):
        G = generator(**{**g_settings, "arch": arch, "shape": [channels, size, size]})
        D = discriminator(**{**d_settings, "arch": arch, "shape": [channels, size, size], "pack": 2})
        x = G(torch.randn(4, 128))
        assert x.shape == (4, channels, size, size) and x.abs().max() <= 1
        assert D(x.reshape(2, 2 * channels, size, size)).shape == (2,)  # packed: 2 samples per D input
    if published:  # SNGAN's CIFAR-10 ResNet: 4.3M (G) and 1.0M (D) parameters, as in Mimicry
        D = discriminator(**{**d_settings, "arch": arch, "shape": [3, size, size]})
        assert (sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())) == published


def test_sngan_arch_is_one_override_and_its_defaults_follow_the_paper(tmp_path):
    cfg = compose_config(tmp_path, "model=sngan", "data=cifar10")
    assert (cfg.model.loss, cfg.model.discriminator.norm, cfg.model.n_critic, list(cfg.model.betas)) == \
           ("hinge", "spectral", 5, [0.0, 0.9])
    cnn = compose_config(tmp_path, "model=sngan", "model.arch=cnn", "data=cifar10")
    assert type(instantiate(cnn.model.generator)).__name__ == "SNGANCNNGenerator"
    assert type(instantiate(cnn.model.discriminator)).__name__ == "SNGANCNNDiscriminator"
    gp = compose_config(tmp_path, "model=wgan_gp", "data=cifar10")
    assert (gp.model.regularizer, gp.model.reg_weight, gp.model.discriminator.norm, gp.model.n_critic) == \
           ("gp", 10.0, "none", 5)


# ---------------------------------------------------------------- conditional layout


@pytest.mark.parametrize("model", CONDITIONAL)
def test_conditional_models_draw_one_row_per_class(tmp_path, model):
    run = tmp_path / "run"
    train(compose_tiny(run, f"model={model}", *DIGITS, "g_iters=2", "callbacks.samples.every_g_iters=2",
                       "callbacks.samples.min_tile=8"))
    _, _, module = load_checkpoint(run)
    columns = 64 // 10  # the grid callback's default size, one row per class
    grid = Image.open(run / "samples" / "iter_000002.png")
    assert grid.size == (columns * (8 + 2) + 2, 10 * (8 + 2) + 2)  # 10 rows of 8x8 images, 2-pixel padding
    z = torch.randn(1, module.latent_dim).repeat(10, 1)
    samples = module.sample(z=z, y=torch.arange(10))["x"]
    assert not torch.allclose(samples[0], samples[1])  # the label, not only z, decides the image


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case,overrides,match", [
    ("conditional on unlabelled data", ["model=cgan", "data=ring"], "labelled"),
    ("projection on unlabelled data", ["model=projection", "model.arch=mlp", "data=grid"], "labelled"),
    ("acgan without its classifier", ["model=dcgan", "model.conditioning=acgan", *DIGITS], "model=acgan"),
    ("acgan with another conditioning", ["model=acgan", "model.conditioning=concat", *DIGITS], "conditioning=acgan"),
    ("unknown loss", ["model=sngan", "model.loss=hinge2", *DIGITS], "least_squares"),
    ("unknown regulariser", ["model=wgan_gp", "model.regularizer=l2", *DIGITS], "dragan"),
    ("unknown architecture", ["model=sngan", "model.arch=vgg", *DIGITS], "resnet"),
    ("conv nets on 2-D data", ["model=sngan", "data=ring"], "model.arch=mlp"),
    ("rmsprop with betas", ["model=wgan", "model.betas=[0.5,0.9]", *DIGITS], "betas=null"),
    ("pack does not divide the batch", ["experiment=toy_pacgan", "data.batch_size=30", "g_iters=1"], "divide"),
])
def test_bad_input_gives_a_clear_error(tmp_path, case, overrides, match):
    run = tmp_path / "run"
    with pytest.raises(Exception) as excinfo:
        train(compose_config(run, *overrides))
    assert match in str(user_error(excinfo))


# ---------------------------------------------------------------- each config builds what its paper says

PAPERS = {  # model: (module class, G, D, loss, regulariser, weight, n_critic, optimiser, g_lr, d_lr, betas, D norm)
    "gan": ("GANModule", "MLPGenerator", "MLPDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 2e-4, 2e-4, (0.5, 0.999), "none"),
    "dcgan": ("GANModule", "DCGANGenerator", "DCGANDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 2e-4, 2e-4, (0.5, 0.999), "batch"),
    "cgan": ("GANModule", "MLPGenerator", "MLPDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 2e-4, 2e-4, (0.5, 0.999), "none"),
    "acgan": ("ACGAN", "DCGANGenerator", "DCGANDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 2e-4, 2e-4, (0.5, 0.999), "batch"),
    "lsgan": ("GANModule", "DCGANGenerator", "DCGANDiscriminator", "least_squares", None, 0.0, 1, "Adam", 2e-4, 2e-4, (0.5, 0.999), "batch"),
    "wgan": ("WGAN", "DCGANGenerator", "DCGANDiscriminator", "wasserstein", None, 0.0, 5, "RMSprop", 5e-5, 5e-5, None, "batch"),
    # WGAN-GP's CIFAR-10 ResNet as igul222/improved_wgan_training gan_cifar_resnet.py trains it: `LR = 2e-4`
    "wgan_gp": ("GANModule", "ResNetGenerator", "ResNetDiscriminator", "wasserstein", "gradient_penalty", 10.0, 5, "Adam", 2e-4, 2e-4, (0.0, 0.9), "none"),
    "sngan": ("GANModule", "ResNetGenerator", "ResNetDiscriminator", "hinge", None, 0.0, 5, "Adam", 2e-4, 2e-4, (0.0, 0.9), "spectral"),
    "projection": ("GANModule", "ResNetGenerator", "ResNetDiscriminator", "hinge", None, 0.0, 5, "Adam", 2e-4, 2e-4, (0.0, 0.9), "spectral"),
    # openai/InfoGAN run_mnist_exp.py: `generator_learning_rate=1e-3, discriminator_learning_rate=2e-4`, beta1 0.5
    "infogan": ("InfoGAN", "InfoGANGenerator", "InfoGANDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 1e-3, 2e-4, (0.5, 0.999), "batch"),
    # jeffdonahue/bigan train_gan.py: `--learning_rate 0.0002`, `--momentum 0.5`; IshmaelBelghazi/ALI: 1e-4, beta1 0.5
    "bigan": ("BiGAN", "Generator", "JointDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 2e-4, 2e-4, (0.5, 0.999), "none"),
    "ali": ("BiGAN", "Generator", "JointDiscriminator", "non_saturating", None, 0.0, 1, "Adam", 1e-4, 1e-4, (0.5, 0.999), "none"),
    # Berthelot et al. 2017 section 4: Adam lr 1e-4; betas from carpedm20/BEGAN-tensorflow config.py (not in the paper)
    "began": ("BEGAN", "BEGANGenerator", "BEGANDiscriminator", "began", None, 0.0, 1, "Adam", 1e-4, 1e-4, (0.5, 0.999), "none"),
}
CONDITIONING = {"cgan": "concat", "acgan": "acgan", "projection": "projection"}


def test_every_model_config_is_in_the_paper_table():
    assert sorted(PAPERS) == MODELS


@pytest.mark.parametrize("model", sorted(PAPERS))
def test_each_model_config_builds_its_papers_classes_and_hyperparameters(tmp_path, model):
    cls, g, d, loss, regularizer, weight, n_critic, optimizer, g_lr, d_lr, betas, norm = PAPERS[model]
    cfg = compose_config(tmp_path, f"model={model}", "data=cifar10")  # only the shape is read: no files needed
    module = instantiate(cfg.model)
    assert (type(module).__name__, type(module.generator).__name__, type(module.discriminator).__name__) == (cls, g, d)
    assert module.loss.name == loss and module.reg_weight == weight and module.n_critic == n_critic
    assert (module.regularizer.__name__ if module.regularizer else None) == regularizer
    assert module.conditional == (model in CONDITIONING) and cfg.model.conditioning == CONDITIONING.get(model, "none")
    assert [(p.name, p.player, p.repeats) for p in module.phases] == [("d", "discriminator", n_critic), ("g", "generator", 1)]
    g_opt, d_opt = module.configure_optimizers()
    for opt, lr in ((g_opt, g_lr), (d_opt, d_lr)):
        assert type(opt).__name__ == optimizer and opt.param_groups[0]["lr"] == pytest.approx(lr)
        assert opt.param_groups[0].get("betas") == (None if betas is None else pytest.approx(betas))
    layers = list(module.discriminator.modules())
    found = {"batch": any(isinstance(m, torch.nn.BatchNorm2d) for m in layers),
             "spectral": any(hasattr(m, "parametrizations") for m in layers)}
    assert {k for k, v in found.items() if v} == ({norm} if norm in found else set())
    if model == "wgan":
        assert module.clip == 0.01
    if model == "acgan":
        assert module.class_weight == 1.0


def test_lazy_regularisation_is_one_option_of_every_gan(tmp_path):
    cfg = compose_config(tmp_path, "model=dcgan", "data=cifar10", "model.regularizer=r1", "model.reg_weight=10",
                         "model.reg_every=16")
    module = instantiate(cfg.model)
    assert [(p.name, p.every, p.lazy) for p in module.phases] == [("d", 1, False), ("d_reg", 16, True), ("g", 1, False)]
    g_opt, d_opt = module.configure_optimizers()
    assert d_opt.param_groups[0]["lr"] == pytest.approx(2e-4 * 16 / 17) and g_opt.param_groups[0]["lr"] == 2e-4


def test_lr_decay_is_one_option_of_every_gan(tmp_path):
    cfg = compose_config(tmp_path, "model=dcgan", "data=cifar10", "g_iters=10", "model.lr_decay=0.5")
    module = instantiate(cfg.model)
    for player in module.players.values():  # constant for 5 iterations, then linearly towards zero
        assert [player.lr_factor(i) for i in (0, 5, 6, 9)] == pytest.approx([1, 1, 5 / 6, 2 / 6])
    assert all(p.lr_factor is None for p in instantiate(compose_config(tmp_path, "model=dcgan").model).players.values())
    with pytest.raises(Exception) as excinfo:
        instantiate(compose_config(tmp_path, "model=dcgan", "g_iters=null", "model.lr_decay=0.5").model)
    assert "model.total_iters" in str(user_error(excinfo))


@pytest.mark.parametrize("override,match", [("+model.n_critc=5", "n_critic"), ("model.g_lr=fast", "model.g_lr"),
                                            ("model.betas=[0.5]", "model.betas"), ("model.n_critic=0", "model.n_critic")])
def test_misspelt_or_mistyped_model_keys_are_named(hydra_run_dir, override, match):
    with pytest.raises(UserError, match=match) as excinfo:
        train(compose_config(hydra_run_dir, "model=dcgan", *DIGITS, override))
    assert not hydra_run_dir.exists()
    if override.startswith("+"):
        assert "It accepts:" in str(excinfo.value) and "reg_every" in str(excinfo.value)


def test_dcgan_at_mnist_size_starts_from_7x7_maps():
    """28 = 7 x 2^2: G projects z to 7x7 maps (a 7x7 transposed convolution where 2^k sides use 4x4) and D's head reads
    D's last 7x7 maps, as DCGAN-tensorflow's MNIST model starts from 7x7; the strided layers are DCGAN's own."""
    from gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator, stages
    assert stages((1, 28, 28)) == (7, 2) and stages((3, 32, 32)) == (4, 3) and stages((3, 64, 64)) == (4, 4)
    g, d = DCGANGenerator((1, 28, 28), latent_dim=100, width=64), DCGANDiscriminator((1, 28, 28), width=64, norm="batch")
    assert [tuple(m.weight.shape) for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)] == [
        (100, 128, 7, 7), (128, 64, 4, 4), (64, 1, 4, 4)]
    x = g(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28) and d(x).shape == (5,)
    # 100*128*49 + 2*128 + 128*64*16 + 2*64 + 64*16 + 1 (G); 16*64 + 64 + 64*128*16 + 2*128 + 128*49 + 1 (D)
    assert sum(p.numel() for p in g.parameters()) == 759_681 and sum(p.numel() for p in d.parameters()) == 138_689
    for side in (24 + 12, 9, 112 + 8):  # 9 x 2^2, odd, 15 x 2^3
        with pytest.raises(UserError, match="4, 5, 6 or 7 times a power of two"):
            DCGANGenerator((1, side, side), latent_dim=8, width=8)
