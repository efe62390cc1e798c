"""Gathering per-rank metric inputs, so a value under DDP equals the single-process value on the same samples."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torchmetrics.utilities.distributed import gather_all_tensors


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


T = TypeVar("T")


def rank_zero_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then on the other ranks: rank 0 fills a cache (downloads, trains, computes) that the
    others then read. An error on rank 0 still releases the others (they meet it themselves)."""
    rank, _ = rank_and_world_size()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except BaseException as caught:  # re-raised below, after the barrier
            error = caught
    barrier()
    if error is not None:
        raise error
    return result if rank == 0 else fn()


def gather_rows(rows: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Concatenate every rank's rows in rank order (sizes may differ), on the CPU of every rank.

    NCCL only moves CUDA tensors, so the exchange runs on `device` there and on the CPU otherwise.
    torchmetrics pads the uneven first dimensions to the longest and trims them after the exchange.
    """
    if not is_distributed():
        return rows
    on = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    return torch.cat(gather_all_tensors(rows.to(on))).cpu()
