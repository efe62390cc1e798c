"""SRGAN (Ledig et al. 2017): an SRResNet generator pre-trained on pixel MSE, then trained against a discriminator on
the perceptual loss = content loss (MSE of feature maps) + 1e-3 x adversarial loss (non-saturating BCE).

Stages on the one iteration counter: iterations [0, pretrain_iters) run the `mse` phase only (SRResNet, its own Adam);
from pretrain_iters on, the `d` and `g` phases (fresh Adam each, as the paper initialises SRGAN from a trained
SRResNet). Both adversarial players' lr is multiplied by `lr_drop_factor` after the `lr_drop` fraction of the
adversarial stage (the paper: 1e-4 for 10^5 iterations, then 1e-5 for 10^5): a stateless function of the iteration, so
a resumed run follows it exactly.

The content features (`model.content`): `vgg19`: torchvision's VGG19 up to relu5_4 (`features[:36]`) with ImageNet
weights read from the torch hub cache, never downloaded, the maps scaled by 1/12.75 (the paper's VGG54);
`classifier`: the conv maps (before pooling) of a classifier of the dataset trained by the evaluator's recipe with
another seed (not the metrics' own classifier, whose features FID and class accuracy read); `mse`: the pixels (SRGAN-MSE); `auto`: vgg19 when its weights file is there, else classifier when the
data has class labels, else mse. What was used is `content_used`: printed at the start, logged as a hyperparameter,
kept in the checkpoint and recorded with every evaluation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from gan.errors import UserError, check_betas, non_negative, positive_float
from gan.losses import LOSSES
from gan.metrics.quantize import from_uint8, to_uint8
from gan.metrics.super_resolution import bicubic_up, nearest_up
from gan.models.core import Batch, Phase, Player
from gan.models.translation import TranslationModule

CONTENT_MODES = ("auto", "vgg19", "classifier", "mse")
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1
VGG_RELU5_4 = 36  # vgg19().features[:36] ends with the ReLU after conv5_4 (the paper's phi_5,4)
VGG_RESCALE = 1 / 12.75  # the paper (sec. 3.2): VGG losses rescaled by ~1/12.75 to a scale comparable to the MSE
CONTENT_SEED_OFFSET = 1  # the content classifier's seed: the metrics classifier's + 1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's VGG inputs


def vgg19_weights_path() -> Path:
    """Where torchvision keeps (and would download) VGG19's weights: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def check_content(mode: str) -> str:
    if mode not in CONTENT_MODES:
        raise UserError(f"model.content={mode!r} is not a content loss. Use one of {', '.join(CONTENT_MODES)}: vgg19 "
                        f"(the paper's VGG54 features), classifier (the dataset's digit classifier), mse (pixels), auto "
                        f"(vgg19 when its weights are cached, else classifier for labelled data, else mse).")
    path = vgg19_weights_path()
    if mode == "vgg19" and not path.is_file():
        raise UserError(f"model.content=vgg19 needs torchvision's ImageNet VGG19 weights, {VGG19_FILE}, at {path}, "
                        f"which does not exist (runs never download it). On a machine with internet access run "
                        f"`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` (or "
                        f"download https://download.pytorch.org/models/{VGG19_FILE}) and copy the file to "
                        f"{path.parent}/ (TORCH_HOME sets the folder), or use model.content=classifier or mse.")
    return mode


class VGGContent(nn.Module):
    """relu5_4 maps of [-1, 1] images, scaled by 1/12.75 (grey images as RGB, ImageNet normalisation)."""

    def __init__(self, path: Path):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        self.features = net.features[:VGG_RELU5_4]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = ((x + 1) / 2).expand(-1, 3, -1, -1)
        return self.features((x - self.mean) / self.std) * VGG_RESCALE


class ClassifierContent(nn.Module):
    """The conv maps of the dataset's classifier (gan.metrics.feature_extractor_classifier.ClassifierNet's body,
    without its pooling) of [-1, 1] images."""

    def __init__(self, path: Path):
        super().__init__()
        from gan.checkpoints import load as load_file
        from gan.metrics.feature_extractor_classifier import ClassifierNet

        saved = load_file(path, cache=True)
        net = ClassifierNet(**saved["arch"])
        net.load_state_dict(saved["state_dict"])
        self.body = net.body[:-2]  # AdaptiveAvgPool2d and Flatten dropped: the maps keep where the content is

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class SRGAN(TranslationModule):
    kind = "super_resolution"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, g_optimizer: Callable, d_optimizer: Callable,
                 name: str, scale: int, lr: float, betas: Sequence[float], pretrain_iters: int,
                 total_iters: int | None, lr_drop: float, lr_drop_factor: float, adversarial_weight: float,
                 content: str, cache_dir: str, classifier: dict | None, log_every: int, seed: int, **speed):
        # No dropout; evaluation normalises with the running statistics (the reference code's model.eval()).
        super().__init__(eval_dropout=False, eval_batch_stats=False, seed=seed, log_every=log_every, **speed)
        self.name, self.generator, self.discriminator, self.scale = name, generator, discriminator, int(scale)
        self.loss = LOSSES["non_saturating"]  # -log D(G(I_LR)) for G, BCE for D (the paper's eq. 6 and 2)
        self.adversarial_weight = non_negative("model.adversarial_weight", adversarial_weight)
        self.content_mode, self.content_used = check_content(content), "unresolved"
        self.cache_dir, self.classifier_hparams = cache_dir, None if classifier is None else dict(classifier)
        self._content: tuple[nn.Module, ...] = ()  # built in setup(); a tuple, so its weights stay out of checkpoints
        pretrain = self.pretrain_iters = stage_length("model.pretrain_iters", pretrain_iters)
        lr, betas = positive_float("model.lr", lr), check_betas("model.betas", betas)
        drop = lr_drop_schedule(pretrain, total_iters, lr_drop, lr_drop_factor)
        self.schedule(
            [Player("srresnet", ("generator",), g_optimizer, lr, betas),
             Player("generator", ("generator",), g_optimizer, lr, betas, lr_factor=drop),
             Player("discriminator", ("discriminator",), d_optimizer, lr, betas, lr_factor=drop)],
            [Phase("mse", "srresnet", self.pretrain_loss, stop=pretrain),
             Phase("d", "discriminator", self.discriminator_loss, start=pretrain),
             Phase("g", "generator", self.generator_loss, start=pretrain)])

    # ---- the content features -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit" or self._content:
            return
        datamodule = self.trainer.datamodule
        mode = self.content_mode
        if mode == "auto":
            mode = ("vgg19" if vgg19_weights_path().is_file()
                    else "classifier" if datamodule.num_classes is not None else "mse")
        if mode == "vgg19":
            net, used = VGGContent(vgg19_weights_path()), f"vgg19 relu5_4 x 1/12.75 ({vgg19_weights_path()})"
        elif mode == "classifier":
            from gan.metrics.classifier_training import DEFAULT_HPARAMS, classifier_weights
            from gan.metrics.distributed import rank_zero_first

            # Not the judge itself: the metrics' classifier (FID features, class accuracy) would be scoring outputs
            # trained to match its own features. The same recipe with another seed: a network of its own.
            hparams = {**DEFAULT_HPARAMS, **(self.classifier_hparams or {})}
            hparams["seed"] += CONTENT_SEED_OFFSET
            path = rank_zero_first(lambda: classifier_weights(datamodule, self.cache_dir, hparams))
            net, used = ClassifierContent(path), f"classifier conv maps, seed {hparams['seed']} ({Path(path).name})"
        else:
            net, used = nn.Identity(), "mse (pixels)"
        self._content = (net.eval().requires_grad_(False),)
        self.content_used = f"{used}; model.content={self.content_mode}"
        rank_zero_info(f"SRGAN content loss: {self.content_used}")
        if self.trainer.loggers:
            for logger in self.trainer.loggers:
                logger.log_hyperparams({"model/content_used": self.content_used})

    def on_fit_start(self) -> None:
        """The content network joins the model's device once (it is no submodule: its weights stay out of
        checkpoints, so Lightning's move to the device does not take it)."""
        self._content[0].to(self.device)

    def content_features(self, x: Tensor) -> Tensor:
        return self._content[0](x)

    # ---- the phases ---------------------------------------------------------------------------------------------
    def pretrain_loss(self, batch: Batch) -> Tensor:
        return F.mse_loss(self.generator(batch["lr"]), batch["hr"])

    def discriminator_loss(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            fake = self.generator(batch["lr"])
        return self.loss.d(self.discriminator(batch["hr"]), self.discriminator(fake))

    def generator_loss(self, batch: Batch) -> Tensor:
        fake = self.generator(batch["lr"])
        content = F.mse_loss(self.content_features(fake), self.content_features(batch["hr"]))
        adversarial = self.loss.g(self.discriminator(fake))
        self._last["content"], self._last["adversarial"] = content.detach(), adversarial.detach()
        return content + self.adversarial_weight * adversarial

    # ---- what the super_resolution kind calls -------------------------------------------------------------------
    def upscale(self, lr: Tensor) -> Tensor:
        return self.run(self.generator, lr)

    def grid_columns(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """LR (nearest-neighbour enlarged), bicubic, SR, HR."""
        lr = to_uint8(batch["lr"])
        return [from_uint8(nearest_up(lr, self.scale)), from_uint8(bicubic_up(lr, self.scale)),
                self.upscale(batch["lr"]).cpu(), batch["hr"]]

    # ---- what the run keeps -------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["srgan_content_used"] = self.content_used

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.content_used = checkpoint.get("srgan_content_used", self.content_used)


def stage_length(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{key} must be a whole number of iterations >= 0 (0: no MSE pre-training), got {value!r}.")
    return value


def lr_drop_schedule(pretrain_iters: int, total_iters: int | None, fraction: float,
                     factor: float) -> Callable[[int], float]:
    """1 until the `fraction` of the adversarial stage [pretrain_iters, total_iters) has passed, then `factor`."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise UserError(f"model.lr_drop must be a fraction of the adversarial stage in [0, 1] (SRGAN: 0.5, the lr "
                        f"falls from 1e-4 to 1e-5 halfway), got {fraction!r}.")
    factor = positive_float("model.lr_drop_factor", factor)
    if total_iters is None or isinstance(total_iters, bool) or not isinstance(total_iters, int) \
            or total_iters < pretrain_iters:
        raise UserError(f"model.total_iters={total_iters!r} (by default g_iters) must be a number of iterations of at "
                        f"least model.pretrain_iters={pretrain_iters}: SRGAN pre-trains on MSE for pretrain_iters, then "
                        f"trains adversarially until total_iters. Set g_iters (or model.total_iters) larger, or "
                        f"model.pretrain_iters smaller.")
    at = pretrain_iters + round(fraction * (total_iters - pretrain_iters))
    return lambda i: factor if i >= at else 1.0
