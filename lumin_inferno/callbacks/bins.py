"""Keep every bin of a learned summary in use: re-seed bins that the network has stopped filling."""

from __future__ import annotations

from typing import List, Optional

import torch
from lumin.nn.callbacks.callback import Callback

from ..exceptions import ConfigurationError

__all__ = ["ReseedEmptyBins"]


class ReseedEmptyBins(Callback):
    """Re-seed bins that received (almost) no training events in an epoch by splitting the fullest bin in two.

    INFERNO's argmax bins can collapse: a bin whose logit is never the largest gets no events, no gradient from the
    templates and stays empty, and the summary has one bin fewer than asked for. At the end of each training epoch
    this callback counts the argmax bins of the epoch's training batches; for every bin with fewer than
    ``min_fraction`` of the events it copies the output row (weights and bias of the tail's last linear layer) of
    the currently fullest bin, adds Gaussian noise of relative size ``noise`` to both copies so they part, and resets
    Adam's moments of the two rows. The fullest bin's events are then shared between the two, and training sorts
    out the boundary. Like k-means' re-seeding of dead centroids; at most ``max_per_epoch`` bins per epoch.

    The tail must expose its last linear layer as ``dense`` (:class:`~lumin_inferno.models.SoftmaxTemperatureTail`).

    Attributes: ``reseeded``: per epoch, the list of (empty bin, split bin) pairs.
    """

    def __init__(self, min_fraction: float = 0.0, noise: float = 0.05, max_per_epoch: int = 2, start_epoch: int = 1):
        super().__init__()
        if not 0 <= min_fraction < 1:
            raise ConfigurationError(f"min_fraction must be in [0, 1), got {min_fraction}")
        self.min_fraction, self.noise = float(min_fraction), float(noise)
        self.max_per_epoch, self.start_epoch = int(max_per_epoch), int(start_epoch)
        self.reseeded: List[list] = []
        self._counts: Optional[torch.Tensor] = None

    def _dense(self) -> torch.nn.Linear:
        tail = getattr(self.model, "tail", None)  # LUMIN's Model: model.model = Sequential(head, body, tail)
        dense = getattr(tail, "dense", None)
        if not isinstance(dense, torch.nn.Linear):
            raise ConfigurationError("ReseedEmptyBins needs a tail with its last linear layer as .dense "
                                     "(SoftmaxTemperatureTail)")
        return dense

    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._dense()
        self.reseeded = []

    def on_epoch_begin(self) -> None:
        if self.model.fit_params.state == "train":
            self._counts = None

    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        if fp.state != "train":
            return
        y = fp.y_pred.detach()
        counts = torch.bincount(y.argmax(-1), minlength=y.shape[-1]).cpu()
        self._counts = counts if self._counts is None else self._counts + counts

    def on_epoch_end(self) -> None:
        fp = self.model.fit_params
        if fp.state != "train" or self._counts is None or fp.epoch < self.start_epoch:
            return
        counts = self._counts.double()
        frac = counts / counts.sum()
        empty = [int(b) for b in torch.nonzero(frac <= self.min_fraction).flatten()][: self.max_per_epoch]
        done = []
        for b in empty:
            full = int(torch.argmax(counts))
            self._split(full, b)
            counts[b] = counts[full] = counts[full] / 2
            done.append((b, full))
        self.reseeded.append(done)

    @torch.no_grad()
    def _split(self, full: int, empty: int) -> None:
        dense = self._dense()
        w, bias = dense.weight, dense.bias
        scale = w[full].abs().mean().clamp_min(1e-6)
        w[empty] = w[full]
        bias[empty] = bias[full]
        w[[full, empty]] += self.noise * scale * torch.randn_like(w[[full, empty]])
        opt = self.model.opt
        for p in (w, bias):
            state = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][[full, empty]] = 0.0
