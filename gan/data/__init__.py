"""Datamodules: every loader reads its dataset's real on-disk format and serves (x in [-1, 1], y) pairs."""
from __future__ import annotations

from pathlib import Path


def data_configs_serving(fields) -> list[str]:
    """The data configs (conf/data/<name>.yaml) whose batches carry every one of `fields`, as their datamodule
    class declares (`GANDataModule.fields_served`)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from gan.run import config_dir

    names = []
    for path in sorted((Path(config_dir()) / "data").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        served = get_class(cfg._target_).fields_served(cfg.get("num_classes"))
        if all(field in served for field in fields):
            names.append(path.stem)
    return names
