"""Samples from fixed inputs every N generator iterations, in `samples/` and to the loggers. What a grid shows is the
model's kind's choice (gan.kinds: a square or one row per class of images, a scatter of 2-D points, one translation
per row, token sequences as text, and a model's own extra grids in `samples/<name>/`); the files are written here."""
from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image

from gan.errors import positive_int
from gan.kinds import kind_of


class SampleGrid(Callback):
    """The model draws from the same fixed inputs every time (a private generator seeded with `seed`); its kind
    lays the grid out (`Kind.write_samples`) with `save_grid` and `scatter`."""

    def __init__(self, dirpath: str, every_g_iters: int = 250, size: int = 64, seed: int = 1, toy_points: int = 2500,
                 min_tile: int = 48):
        self.dirpath = Path(dirpath)
        self.every_g_iters = positive_int("callbacks.samples.every_g_iters", every_g_iters)
        self.size, self.seed = positive_int("callbacks.samples.size", size), seed
        self.toy_points, self.min_tile = toy_points, min_tile
        self.last_path: Path | None = None
        self._written_at = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.g_iter % self.every_g_iters == 0:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module)

    def write(self, trainer, module) -> None:
        if module.g_iter == self._written_at or not trainer.is_global_zero:
            return
        self._written_at = module.g_iter
        self.dirpath.mkdir(parents=True, exist_ok=True)
        written = kind_of(module).write_samples(self, trainer, module, self.dirpath / f"iter_{module.g_iter:06d}")
        self.last_path = next(iter(written.values()), None)
        for name, path in written.items():
            if path.suffix == ".png":
                self.log_image(trainer, name, path, module.g_iter)

    def generator(self) -> torch.Generator:
        """The fixed inputs' source: the same draws at every grid."""
        return torch.Generator().manual_seed(self.seed)

    def save_grid(self, images: torch.Tensor, columns: int, path: Path) -> None:
        if images.shape[-1] < self.min_tile:  # small images (8x8, 16x16 digits) are enlarged to be readable
            factor = -(-self.min_tile // images.shape[-1])
            images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
        save_image(make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1), pad_value=1.0), path)

    @staticmethod
    def log_image(trainer, key: str, path: Path, step: int) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                from PIL import Image
                import numpy as np
                image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
                logger.experiment.add_image(key, image, step)

    def scatter(self, datamodule, module, path: Path) -> None:
        """2-D data: generated points over real points, the way mode-collapse papers show them."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        real = datamodule.dataset("val")[: self.toy_points][0].cpu().numpy()
        fake = module.sample(self.toy_points, generator=self.generator())["x"].cpu().numpy()
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:blue", label="generated")
        ax.set_title(f"{module.name}, generator iteration {module.g_iter}")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4, fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
