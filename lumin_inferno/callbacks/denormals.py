"""Denormal numbers flushed to zero on the CPU during a training batch, and put back after it (or after an error)."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

__all__ = ["DenormalFlush", "denormals_flushed", "restores_denormals"]


def denormals_flushed() -> bool:
    """Whether this thread's CPU currently flushes denormal float32 numbers to zero (probed: PyTorch sets the mode
    with ``torch.set_flush_denormal`` but has no getter)."""
    return bool((torch.full((1,), 1e-39, dtype=torch.float32) * 0.5 == 0).item())


def restores_denormals(hook: Callable) -> Callable:
    """Decorate a callback hook so that an exception raised in it first ends the callback's ``_denormals`` flush
    (LUMIN calls no ``on_batch_end`` after an error, which would leave the flush mode on for the process)."""

    @functools.wraps(hook)
    def wrapped(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except BaseException:
            self._denormals.end()
            raise

    return wrapped


class DenormalFlush:
    """Flush denormal numbers (|x| < 1.2e-38 in float32) to zero on the CPU for the duration of each batch, and put
    the previous mode back after it.

    A softmax at INFERNO's temperatures (τ ≈ 0.1) sends the far-off bins' probabilities and their gradients into the
    denormal range once the network separates events; x86 CPUs take a slow microcode path for every such operand,
    which made a training step of a trained benchmark-4 model 1.4× slower (``benchmarks/bench_training_step.py``).
    Flushing changes only values below 1.2e-38, far under the template floor of 1e-7. Uses
    ``torch.set_flush_denormal``, which sets the calling thread's mode (PyTorch's intra-op worker threads keep
    theirs); no effect where the CPU lacks the mode, or on CUDA.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._before: Optional[bool] = None

    def begin(self) -> None:
        if self.enabled and self._before is None:
            self._before = denormals_flushed()
            torch.set_flush_denormal(True)

    def end(self) -> None:
        if self._before is not None:
            torch.set_flush_denormal(self._before)
            self._before = None
