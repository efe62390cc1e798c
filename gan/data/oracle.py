"""SeqGAN's synthetic benchmark (Yu et al. 2017): sequences drawn from a randomly initialised "oracle" LSTM.

The oracle (vocabulary 5,000, length 20, embedding and hidden 32, every parameter N(0, 1)) is fixed by
`oracle_seed`, not by the run's seed, and so are the splits it generates (10,000 training sequences; val and test
from seeds of their own): the oracle and its data are a function of the config alone. They are cached under
`cache_dir/oracle/` (written to a temp file and renamed) under a key of everything that decides them, or regenerated
when `cache_dir` is null. Batches are {"tokens": int64 [B, seq_len]}.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from gan.checkpoints import load as load_file
from gan.data.datamodule import GANDataModule, TensorPairs
from gan.errors import UserError, positive_int
from gan.nets.text import LSTMGenerator
from gan.storage import cache_key, save_torch

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the oracle or its sampling changes, so old cache files are not reused
SPLIT_OFFSETS = {"train": 1, "val": 2, "test": 3}  # split seeds: oracle_seed * 1000 + offset (the oracle itself: + 0)
ORACLE_INIT_STD = 1.0  # SeqGAN's oracle: every parameter N(0, 1)


def build_oracle(vocab_size: int, seq_len: int, embed_dim: int, hidden_dim: int, oracle_seed: int) -> LSTMGenerator:
    """The oracle LSTM of `oracle_seed`: the same weights on every machine (drawn on the CPU from a seeded generator)."""
    with torch.random.fork_rng(devices=[]):  # the CPU's default generator only, restored afterwards
        torch.default_generator.manual_seed(int(oracle_seed) * 1000)
        oracle = LSTMGenerator(vocab_size, seq_len, embed_dim, hidden_dim, init_std=ORACLE_INIT_STD)
    return oracle.requires_grad_(False).eval()


@torch.no_grad()
def oracle_samples(oracle: LSTMGenerator, n: int, seed: int, chunk: int = 1000) -> torch.Tensor:
    """`n` sequences [n, seq_len] of the oracle, drawn with uniforms from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(int(seed))
    uniforms = torch.rand(n, oracle.seq_len, generator=generator)
    return torch.cat([oracle.sample(part) for part in uniforms.split(chunk)]) if n else uniforms.long()


class OracleDataModule(GANDataModule):
    """The oracle's sequences as three splits; `self.oracle` is the oracle LSTM the metrics score samples with."""

    served_fields, labels_in_batch = ("tokens",), False

    def __init__(self, name: str, shape: Sequence[int], num_classes: int | None, batch_size: int,
                 num_workers: int = 0, seed: int = 0, train_limit: int | float | None = None, backbone: str = "oracle",
                 vocab_size: int = 5000, seq_len: int = 20, embed_dim: int = 32, hidden_dim: int = 32,
                 oracle_seed: int = 0, num_train: int = 10_000, num_val: int = 2_000, num_test: int = 2_000,
                 cache_dir: str | None = None):
        super().__init__(name, shape, num_classes, batch_size, num_workers, seed, train_limit, backbone)
        if num_classes is not None:
            raise UserError(f"data.num_classes={num_classes}: oracle sequences have no classes. Set data.num_classes=null.")
        self.vocab_size, self.seq_len = positive_int("data.vocab_size", vocab_size), positive_int("data.seq_len", seq_len)
        self.embed_dim, self.hidden_dim = positive_int("data.embed_dim", embed_dim), positive_int("data.hidden_dim", hidden_dim)
        if self.shape != (self.seq_len,):
            raise UserError(f"data.shape={list(self.shape)} must be [data.seq_len] = [{self.seq_len}] for oracle data: "
                            f"remove the data.shape override and set data.seq_len instead.")
        self.oracle_seed = int(oracle_seed)
        self.sizes = {"train": positive_int("data.num_train", num_train), "val": positive_int("data.num_val", num_val),
                      "test": positive_int("data.num_test", num_test)}
        self.cache_dir = cache_dir
        self._oracle: LSTMGenerator | None = None
        self._tokens: dict[str, torch.Tensor] | None = None

    @property
    def key(self) -> dict:
        """Everything that decides the oracle and its data."""
        return {"format": FORMAT, "vocab_size": self.vocab_size, "seq_len": self.seq_len, "embed_dim": self.embed_dim,
                "hidden_dim": self.hidden_dim, "oracle_seed": self.oracle_seed, "sizes": self.sizes}

    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return Path(self.cache_dir).expanduser() / "oracle" / (
            f"oracle-v{self.vocab_size}-t{self.seq_len}-s{self.oracle_seed}-{cache_key(self.key)}.pt")

    def _load(self) -> None:
        if self._tokens is not None:
            return
        self._oracle = build_oracle(self.vocab_size, self.seq_len, self.embed_dim, self.hidden_dim, self.oracle_seed)
        path = self.cache_path()
        if path is not None and path.is_file():
            stored = load_file(path, cache=True)
            if stored.get("key") == self.key:
                self._tokens = stored["tokens"]
                return
        log.info("Generating the oracle's %s sequences (oracle_seed %d)", self.sizes, self.oracle_seed)
        self._tokens = {split: oracle_samples(self._oracle, size, self.oracle_seed * 1000 + SPLIT_OFFSETS[split])
                        for split, size in self.sizes.items()}
        if path is not None:
            save_torch({"key": self.key, "tokens": self._tokens}, path)

    @property
    def oracle(self) -> LSTMGenerator:
        self._load()
        return self._oracle

    def tokens(self, split: str) -> torch.Tensor:
        """The int64 sequences [N, seq_len] of a split."""
        self._load()
        return self._tokens[split]

    def load_split(self, split: str) -> TensorPairs:
        tokens = self.tokens(split)
        return TensorPairs(tokens, torch.full((len(tokens),), -1))

    def fields(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tokens": x}
