"""Generators of token sequences (SeqGAN's synthetic benchmark): scored by the oracle's likelihood, shown as text.

Evaluation (gan.metrics.text): NLL_oracle of fresh samples and the model's NLL_test of held-out sequences, each with
its real-data row. Samples: `samples/iter_<g_iter>.txt`, one sequence of token ids per line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from gan.kinds import EvalRequest, Kind, register

MONITOR = "nll_oracle"  # SeqGAN's metric


@runtime_checkable
class TokenGenerator(Protocol):
    name: str
    g_iter: int
    generator: torch.nn.Module  # scored on held-out sequences (NLL_test)

    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool | None = None) -> dict[str, torch.Tensor]:
        """{"tokens": int64 [n, T]}, in evaluation mode."""


@register
class TokenSequences(Kind):
    name = "tokens"
    fields = ("tokens",)
    protocol = TokenGenerator

    def monitor(self, evaluator) -> str:
        return MONITOR

    def prepare(self, evaluator) -> None:
        """The oracle is the data's own: nothing to load."""

    def evaluate(self, evaluator, module, request: EvalRequest):
        from gan.metrics.evaluator import Evaluation, sample_seed
        from gan.metrics.text import evaluate_text

        values, provenance, fake = evaluate_text(module, evaluator.datamodule, request.split,
                                                 sample_seed(request.seed, 0), request.num_samples,
                                                 evaluator.batch_size, evaluator.device)
        provenance.update({**evaluator.run_provenance(request.split, request.seed, ["nll_oracle", "nll_test"]),
                           **self.context(module, request)})
        return Evaluation(values, provenance, samples=fake if request.keep_samples else None)

    def write_samples(self, grid, trainer, module, path: Path) -> dict[str, Path]:
        """`size` sequences from the fixed seed, one per line as space-separated token ids (oracle data has no
        words)."""
        path = path.with_suffix(".txt")
        tokens = module.sample(grid.size, generator=grid.generator())["tokens"].cpu()
        header = f"# {module.name}, generator iteration {module.g_iter}: {len(tokens)} samples, token ids\n"
        path.write_text(header + "".join(" ".join(map(str, row)) + "\n" for row in tokens.tolist()))
        return {"samples": path}

    def sample_arrays(self, evaluation):
        return {"arr_0": evaluation.samples.numpy()}
