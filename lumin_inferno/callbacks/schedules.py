"""Training schedules as LUMIN callbacks (LUMIN's own ``OneCycle`` covers learning rate and momentum)."""

from __future__ import annotations

from lumin.nn.callbacks.callback import Callback

from ..exceptions import ConfigurationError
from ..models.tails import SoftmaxTemperatureTail

__all__ = ["TemperatureSchedule"]


class TemperatureSchedule(Callback):
    r"""Anneal the temperature τ of the network's :class:`~lumin_inferno.models.SoftmaxTemperatureTail` during
    training, geometrically from ``start`` in the first epoch to ``end`` in the last:
    :math:`\tau_e = \tau_{start}\,(\tau_{end}/\tau_{start})^{(e-1)/(n-1)}`, set at the start of each training epoch.

    A high τ gives soft bin assignments and smooth gradients early on; the final τ sets how close the soft
    histogram the loss sees is to the hard (argmax) histogram of the analysis. τ only rescales the logits, so the
    argmax bins of a saved model do not depend on it. Validation losses at different τ are not on the same
    footing: with ``SaveBest`` the kept model tends to come from the late, low-τ epochs.

    Use alongside the INFERNO callback: ``cb_partials=[partial(InfernoCallback, ...), partial(TemperatureSchedule,
    start=1.0, end=0.1)]``.
    """

    def __init__(self, start: float, end: float):
        super().__init__()
        if not (start > 0 and end > 0):
            raise ConfigurationError(f"TemperatureSchedule: temperatures must be > 0, got start={start}, end={end}")
        self.start, self.end = float(start), float(end)
        self.history: list = []

    def _tail(self) -> SoftmaxTemperatureTail:
        tails = [m for m in self.model.model.modules() if isinstance(m, SoftmaxTemperatureTail)]
        if len(tails) != 1:
            raise ConfigurationError(
                f"TemperatureSchedule needs exactly one SoftmaxTemperatureTail in the network, found {len(tails)}"
            )
        return tails[0]

    def temperature(self, epoch: int, n_epochs: int) -> float:
        """τ of training epoch ``epoch`` (1-based) out of ``n_epochs``."""
        frac = 0.0 if n_epochs <= 1 else (epoch - 1) / (n_epochs - 1)
        return self.start * (self.end / self.start) ** min(max(frac, 0.0), 1.0)

    def on_train_begin(self) -> None:
        super().on_train_begin()
        self.history = []
        self._tail().temperature = self.start

    def on_epoch_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state != "train":
            return
        tau = self.temperature(fp.epoch, fp.n_epochs)
        self._tail().temperature = tau
        self.history.append(tau)

    def on_train_end(self) -> None:
        super().on_train_end()
        self._tail().temperature = self.end
