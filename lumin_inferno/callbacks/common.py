"""What every INFERNO-style callback shares: LUMIN fit-params set-up for a per-batch loss, the softmax-output
check, per-process event masks from target labels, soft templates, and denormal flushing during a batch."""

from __future__ import annotations

import functools
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from ..exceptions import ConfigurationError, EmptyProcessError, TargetShapeError

__all__ = [
    "DenormalFlush",
    "denormals_flushed",
    "restores_denormals",
    "check_softmax_output",
    "prepare_fit_for_batch_loss",
    "process_masks",
    "soft_template",
]


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


def check_softmax_output(probs: Tensor) -> None:
    """Raise :class:`ConfigurationError` unless ``probs`` is ``[n_events, n_bins ≥ 2]`` of rows of probabilities,
    the output INFERNO-style losses need (a softmax, not LUMIN's log-softmax multiclass tail)."""
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ConfigurationError(
            f"INFERNO needs a softmax output over >= 2 bins, got model output of shape {tuple(probs.shape)}; "
            "use tail=SoftmaxTemperatureTail in the ModelBuilder"
        )
    sums = probs.detach().sum(1)
    if (probs.detach() < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ConfigurationError(
            "model output rows are not probabilities (non-negative, summing to 1); INFERNO needs a softmax "
            "output: use tail=SoftmaxTemperatureTail (and not a 'multiclass' objective, whose tail is log-softmax)"
        )


def prepare_fit_for_batch_loss(fp) -> None:
    """Set LUMIN's ``fit_params`` up for a loss the callback computes per batch (INFERNO-style): no LUMIN loss
    function, gradients in validation too, monitors told the loss is not a mean over events; and raise
    :class:`ConfigurationError` when the batch size exceeds a training fold (LUMIN would yield no batch)."""
    fp.loss_func = None  # LUMIN skips its own loss (model.py:130); the callback sets loss_val in on_forwards_end
    fp.val_requires_grad = True  # the loss needs derivatives in validation too
    for c in fp.cbs:  # the loss is a per-batch statistic, not a mean over events
        if hasattr(c, "loss_is_meaned"):
            c.loss_is_meaned = False
    fy, bs = getattr(fp, "fy", None), getattr(fp, "bs", None)
    if fy is not None and bs is not None and getattr(fp, "trn_idxs", None):
        too_small = {i: n for i in fp.trn_idxs if (n := fy.get_data_count(i)) < bs}
        if too_small:
            raise ConfigurationError(
                f"batch size {bs} is larger than training fold(s) {too_small} (events per fold): LUMIN would "
                "yield no batch. Use a smaller bs or fewer, larger folds."
            )


def process_masks(labels: Tensor, analysis, state: str, check_integers: bool = True) -> Dict[str, Tensor]:
    """Boolean event masks of the analysis's summary processes from a batch's target ``labels`` ``[n]``; raises
    :class:`TargetShapeError` for labels of no process and :class:`EmptyProcessError` naming a process without
    events in the batch (``state``: LUMIN's ``train``/``valid``, for the message)."""
    if check_integers and not torch.all((labels == labels.round()) & torch.isfinite(labels)):
        raise TargetShapeError("targets must be integer process labels")
    masks = {}
    for p in analysis.summary_processes:
        m = torch.zeros_like(labels, dtype=torch.bool)
        for v in p.labels:
            m |= labels == v
        masks[p.name] = m
    assigned = torch.stack(list(masks.values())).any(0)
    if not assigned.all():
        other = sorted({float(v) for v in labels[~assigned].unique()})
        raise TargetShapeError(f"target value(s) {other} belong to no process; labels are {analysis.labels()}")
    for name, m in masks.items():
        if not m.any():
            raise EmptyProcessError(
                f"a {state} batch of {len(labels)} events has no events of process {name!r} (labels "
                f"{analysis.process(name).labels}); use larger or stratified batches"
            )
    return masks


def soft_template(probs: Tensor, w: Tensor, total: Tensor) -> Tensor:
    """Soft histogram Σ w·p / ``total`` (fraction of the process's nominal weight per bin), float64."""
    return (w[:, None].double() * probs.double()).sum(0) / total
