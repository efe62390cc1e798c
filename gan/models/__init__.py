"""One LightningModule per GAN family: `base.GANModule` holds the loop, variants override a hook."""
