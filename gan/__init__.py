"""GAN research framework: every classic GAN as a Lightning module, composed by Hydra."""
