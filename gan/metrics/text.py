"""Likelihood metrics of SeqGAN's synthetic benchmark (Yu et al. 2017), for models of kind `tokens` (gan.kinds.tokens).

- nll_oracle: the oracle's mean per-token negative log-likelihood (nats) of N fresh generated sequences, the paper's
  metric (lower is better; published: random 10.310, MLE 9.038, SeqGAN 8.736 at vocabulary 5,000);
- nll_test: the generator's own mean per-token NLL of the held-out sequences of the evaluated split (low when the
  generator covers the data: a collapsed generator scores well on nll_oracle but badly here).

The real-data rows: `ref_real/nll_oracle` is the oracle's NLL of held-out real sequences of the evaluated split
(the oracle's entropy rate, the floor a generator can reach) and `ref_real/nll_test` the same number read as the
NLL_test of a perfect generator (the oracle itself).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gan.storage import sha256_tensors

REF_REAL = "ref_real"
BACKBONE = "oracle"


@torch.no_grad()
def token_nll(model, tokens: torch.Tensor, batch_size: int = 250, device: torch.device | str = "cpu") -> float:
    """Mean per-token NLL (nats) of `tokens` [N, T] under a language model whose forward gives logits [B, T, V] of
    each token from the ones before it (`gan.nets.text.LSTMGenerator`), in evaluation mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    for part in tokens.split(batch_size):
        part = part.to(device)
        logits = model(part)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), part.reshape(-1), reduction="sum").item()
    model.train(was_training)
    return total / tokens.numel()


@torch.no_grad()
def generate_tokens(module, n: int, seed: int, batch_size: int = 250) -> torch.Tensor:
    """`n` sequences from `module.sample`, drawn with a private generator seeded with `seed` (training RNG untouched)."""
    generator = torch.Generator().manual_seed(int(seed))
    parts = [module.sample(min(batch_size, n - start), generator=generator)["tokens"].cpu()
             for start in range(0, n, batch_size)]
    return torch.cat(parts)


def evaluate_text(module, datamodule, split: str, sample_seed: int, num_samples: int, batch_size: int = 250,
                  device: torch.device | str = "cpu") -> tuple[dict[str, float], dict[str, Any], torch.Tensor]:
    """(values, provenance, the generated sequences): NLL_oracle of `num_samples` fresh samples, NLL_test on (up to
    `num_samples`) held-out sequences of `split`, and the real-data rows. Every rank computes the same values."""
    oracle = datamodule.oracle.to(device)
    fake = generate_tokens(module, num_samples, sample_seed, batch_size)
    real = datamodule.tokens(split)[:num_samples]
    real_nll = token_nll(oracle, real, batch_size, device)
    values = {"nll_oracle": token_nll(oracle, fake, batch_size, device),
              "nll_test": token_nll(module.generator, real, batch_size, device),
              f"{REF_REAL}/nll_oracle": real_nll, f"{REF_REAL}/nll_test": real_nll}
    provenance = {"backbone": BACKBONE, "weights_sha256": sha256_tensors(*oracle.state_dict().values()),
                  "resize": None, "image_size": None, "num_fake": len(fake), "num_real": len(real),
                  "vocab_size": datamodule.vocab_size, "seq_len": datamodule.seq_len,
                  "oracle_seed": datamodule.oracle_seed, "unit": "nats per token",
                  "ref_real": f"the oracle's NLL of {len(real)} held-out real sequences of the {split} split",
                  "ref_real_num": len(real), "ref_real_split": split}
    return values, provenance, fake
