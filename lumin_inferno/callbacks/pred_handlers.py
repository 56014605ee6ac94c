"""Prediction handlers: what ``Model.predict`` / ``Ensemble.predict`` return for a summary statistic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lumin.nn.callbacks.pred_handlers import PredHandler

__all__ = ["HardBinPredHandler"]


class HardBinPredHandler(PredHandler):
    """Hard (argmax) bin assignment of a softmax summary statistic, as a one-hot ``[n_events, n_bins]`` array.

    One-hot rather than an index so that it composes with LUMIN's ``Ensemble.predict``, which averages member
    outputs with the ensemble weights: the result is then each bin's weighted vote, and ``pred.argmax(1)`` is the
    ensemble's hard bin. For a single model, ``pred.argmax(1)`` is simply the bin index. Pass a **new instance** per
    call (LUMIN's own default handler is a shared mutable default)::

        bins = model.predict(x, pred_cb=HardBinPredHandler()).argmax(1)
    """

    def on_forwards_end(self) -> None:
        if self.model.fit_params.state == "test":
            y_pred = self.model.fit_params.y_pred.detach()
            hard = F.one_hot(y_pred.argmax(dim=-1), num_classes=y_pred.shape[-1]).to(torch.float32)
            self.preds.append(hard.cpu())
