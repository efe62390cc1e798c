"""The one exception type that reaches the user as a readable paragraph instead of a traceback, and the checks of
config values that raise it where a value enters (naming its key)."""
from __future__ import annotations

from typing import Sequence


class UserError(Exception):
    """Bad input from the user: the message says what is wrong, what was expected and how to fix it.

    `gan.run`, `gan.evaluate` and `gan.compare` print the message alone and exit with status 2.
    """


class DivergenceError(Exception):
    """A loss became NaN or Inf: training stops before the bad update is applied or checkpointed."""


class Stopped(Exception):
    """A stop signal (Slurm's before a time limit or a preemption, `scancel`'s SIGTERM) ended training at the end of
    iteration `g_iter`, which `last.ckpt` holds."""

    def __init__(self, signal_name: str, g_iter: int):
        super().__init__(f"stopped by {signal_name} after generator iteration {g_iter}")
        self.signal_name, self.g_iter = signal_name, g_iter
        self.requeued = False  # set by gan.train once Slurm has the job back in its queue


def positive_int(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key} must be a positive integer, got {value!r}.")
    return value


def non_negative(key: str, value) -> float:
    """A loss weight or similar: a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise UserError(f"{key} must be a number >= 0 (0 switches the term off), got {value!r} ({type(value).__name__}).")
    return float(value)


def positive_float(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{key} must be a positive number, got {value!r} ({type(value).__name__}).")
    return float(value)


def check_betas(key: str, betas) -> tuple[float, float] | None:
    """Adam's (beta1, beta2), each in [0, 1), or None for optimisers without betas."""
    if betas is None:
        return None
    values = list(betas) if isinstance(betas, Sequence) and not isinstance(betas, str) else None
    if (values is None or len(values) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in values)):
        raise UserError(f"{key} must be two numbers in [0, 1), e.g. [0.5, 0.999], or null for optimisers without "
                        f"betas (RMSprop); got {betas!r}.")
    return float(values[0]), float(values[1])
