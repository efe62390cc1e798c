"""Which way is better for each metric value: what the evaluation callback selects the best checkpoint by and what
a comparison ranks runs by.

It lives apart from the metric code because that code imports torch and torch-fidelity (seconds at start-up),
which the comparison tool otherwise never needs.
"""

# Values without an entry (kid_std, is_std, memorisation distances) are descriptions, not selection criteria.
HIGHER_IS_BETTER = {
    "fid": False, "kid": False, "is": True, "precision": True, "recall": True,
    "diversity": True,  # mean pairwise feature distance relative to real data's: falls under mode collapse
    "modes": True, "high_quality": True, "reverse_kl": False,
    # image-to-image translation (gan.metrics.translation); cycle_l1 alone is no criterion: the identity scores 0
    "l1": False, "psnr": True, "ssim": True, "fid_ab": False, "fid_ba": False, "class_accuracy": True,
    "class_accuracy_ab": True, "class_accuracy_ba": True, "attribute_accuracy": True, "cycle_l1": False,
    # super-resolution (gan.kinds.super_resolution): luminance PSNR / SSIM with the border cropped
    "psnr_y": True, "ssim_y": True,
    # latent codes (InfoGAN, gan.kinds.latent_codes): code vs class accuracy; the mutual-information lower bounds
    "code_accuracy": True, "mi_categorical": True, "mi_continuous": True,
    # encoders (BiGAN, ALI, gan.kinds.inference): linear-probe accuracy on E(x); reconstruction error |x - G(E(x))|
    "probe_accuracy": True, "recon_l1": False,
    # text-to-image caption consistency (gan.metrics.captions): judges find the caption's words in the image
    "thickness_accuracy": True, "slant_accuracy": True, "size_accuracy": True, "heldout_class_accuracy": True,
    "heldout_thickness_accuracy": True, "heldout_slant_accuracy": True, "heldout_size_accuracy": True,
    # text GANs on SeqGAN's oracle (gan.metrics.text): per-token negative log-likelihoods
    "nll_oracle": False, "nll_test": False,
    # likelihood models (VAE): upper bounds on the negative log-likelihood (recon_nll and kl are descriptions)
    "nll_elbo": False, "nll_iwae": False, "bpd_elbo": False, "bpd_iwae": False,
}
