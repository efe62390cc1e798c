"""One module per model family on the loop `core.AdversarialModule`; `base.GANModule` is the noise -> image GAN."""
