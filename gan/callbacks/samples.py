"""Sample grids from the fixed latents every N generator iterations: PNG in `samples/` and to the loggers; models
with an `extra_grids(generator, size)` method (StyleGAN) add named grids of their own in `samples/<name>/`; text
models (`module.text`) write their sequences as text, `samples/iter_<g_iter>.txt`."""
from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image

from gan.errors import positive_int
from gan.metrics.quantize import from_uint8


class SampleGrid(Callback):
    """The model draws (`module.sample`) from the same fixed inputs every time (a private generator seeded
    with `seed`); the grid's layout is decided here from the named fields: one row per class when the samples
    carry labels `y`, else a square."""

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
        if getattr(module, "text", False):  # token sequences: a text file, one sample per line
            self.last_path = self.write_text(module, self.dirpath / f"iter_{module.g_iter:06d}.txt")
            return
        path = self.dirpath / f"iter_{module.g_iter:06d}.png"
        if len(trainer.datamodule.shape) == 1:
            self._scatter(trainer, module, path)
        else:
            self.save_grid(*self.grid(module, trainer.datamodule), path)
        self.last_path = path
        self.log_image(trainer, "samples", path, module.g_iter)
        # a model's own further grids (StyleGAN: style mixing, truncation sweep), in samples/<name>/iter_<g_iter>.png
        if hasattr(module, "extra_grids"):
            for name, (images, columns) in module.extra_grids(torch.Generator().manual_seed(self.seed), self.size).items():
                extra = self.dirpath / name / path.name
                extra.parent.mkdir(exist_ok=True)
                self.save_grid(images, columns, extra)
                self.log_image(trainer, name, extra, module.g_iter)

    def write_text(self, module, path: Path) -> Path:
        """`size` sequences from the fixed seed, one per line as space-separated token ids (oracle data has no words)."""
        tokens = module.sample(self.size, generator=torch.Generator().manual_seed(self.seed))["tokens"].cpu()
        header = f"# {module.name}, generator iteration {module.g_iter}: {len(tokens)} samples, token ids\n"
        path.write_text(header + "".join(" ".join(map(str, row)) + "\n" for row in tokens.tolist()))
        return path

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

    def grid(self, module, datamodule) -> tuple[torch.Tensor, int]:
        """(images, columns): a conditional model shows every class in a row of its own; a translation model one
        validation input per row, followed by what the model makes of it (`module.grid_columns`)."""
        if hasattr(module, "grid_columns"):
            return self.translation_grid(module, datamodule)
        generator = torch.Generator().manual_seed(self.seed)
        classes = getattr(module, "num_classes", None)
        if classes:
            columns = max(1, self.size // classes)
            samples = module.sample(generator=generator, y=torch.arange(classes).repeat_interleave(columns))
        else:
            columns, samples = max(1, round(self.size**0.5)), module.sample(self.size, generator=generator)
        return samples["x"].float().cpu(), columns

    def translation_grid(self, module, datamodule) -> tuple[torch.Tensor, int]:
        rows = max(1, round(self.size**0.5))
        inputs = {k: from_uint8(v) if v.dtype == torch.uint8 else v
                  for k, v in datamodule.eval_tensors("val", limit=rows).items()}
        columns = [c.float().cpu() for c in module.grid_columns(inputs)]
        channels = max(c.shape[1] for c in columns)
        columns = [c.expand(-1, channels, -1, -1) for c in columns]  # grayscale inputs beside colour outputs
        return torch.stack(columns, dim=1).flatten(0, 1), len(columns)

    def _scatter(self, trainer, module, path: Path) -> None:
        """2-D data: generated points over real points, the way mode-collapse papers show them."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        real = trainer.datamodule.dataset("val")[: self.toy_points][0].cpu().numpy()
        fake = module.sample(self.toy_points, generator=torch.Generator().manual_seed(self.seed))["x"].cpu().numpy()
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:blue", label="generated")
        ax.set_title(f"{module.name}, generator iteration {module.g_iter}")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4, fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
