"""The one image quantisation every backbone sees: [-1, 1] floats to uint8, as if saved to PNG and read back."""

from __future__ import annotations

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1
