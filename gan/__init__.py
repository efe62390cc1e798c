"""GAN research framework: every classic GAN as a Lightning module, composed by Hydra."""
from omegaconf import OmegaConf

# `${len:${data.attributes}}`: a config that sizes a network by a list in another config group (StarGAN's domains).
OmegaConf.register_new_resolver("len", len, replace=True)
# `${sum:${data.channels},${data.channels}}`: pix2pix's D judges (input, output) stacked along channels.
OmegaConf.register_new_resolver("sum", lambda *values: sum(values), replace=True)
