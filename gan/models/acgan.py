"""AC-GAN (Odena et al. 2017): D also classifies every image; the class log-likelihood of real and fake
images is maximised by D, and that of fake images (of their sampled class) by G, beside the adversarial loss."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gan.errors import UserError, non_negative
from gan.models.base import GANModule


class ACGAN(GANModule):
    auxiliary_classifier = True
    shared_g_loss = False

    def __init__(self, *args, conditioning: str, class_weight: float, **kwargs):
        if conditioning != "acgan":
            raise UserError(f"model=acgan trains D's auxiliary classifier, so it needs model.conditioning=acgan "
                            f"(got {conditioning}) and a labelled dataset (data=digits, mnist, fashion_mnist or cifar10).")
        super().__init__(*args, conditioning=conditioning, **kwargs)
        self.class_weight = non_negative("model.class_weight", class_weight)

    def adversarial_d_loss(self, real: Tensor, y_real: Tensor, fake: Tensor, y_fake: Tensor) -> Tensor:
        d_real, classes_real = self.discriminator(self.augmented(real), y_real, return_class_logits=True)
        d_fake, classes_fake = self.discriminator(self.augmented(fake), y_fake, return_class_logits=True)
        classification = F.cross_entropy(classes_real, y_real) + F.cross_entropy(classes_fake, y_fake)
        self.record_critic(d_real, d_fake)
        self._last.update(d_class=classification.detach(), real_accuracy=(classes_real.argmax(1) == y_real).float().mean())
        return self.loss.d(d_real, d_fake) + self.class_weight * classification

    def adversarial_g_loss(self, fake: Tensor, y_fake: Tensor) -> Tensor:
        d_fake, classes_fake = self.discriminator(self.augmented(fake), y_fake, return_class_logits=True)
        classification = F.cross_entropy(classes_fake, y_fake)
        self._last["g_class"] = classification.detach()
        return self.loss.g(d_fake) + self.class_weight * classification
