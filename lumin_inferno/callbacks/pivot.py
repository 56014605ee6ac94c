r"""Learning to pivot (Louppe, Kagan & Cranmer 2016, arXiv:1611.01046) as a stateful LUMIN callback.

The main model f is trained against an adversary r that predicts the nuisance z from f's output. With the
adversary's loss L_r (mean NLL of z, nats per event) and the main loss L_f (LUMIN's own loss), f minimises

    E_λ = L_f − λ·(L_r − H)    with H the NLL of the best input-independent adversary (≈ the entropy H(Z)),

while r minimises L_r. H is a constant, so the gradients are the paper's (L_f − λ·L_r); H − L_r estimates the mutual
information I(f(X); Z) ≥ 0. In the validation state the callback sets LUMIN's loss to L_f + λ·max(H − L_r, 0), with H
and L_r both evaluated on the validation fold (the marginal p(z) and r both fitted on the training folds): never
below L_f, positive whenever L_f is, equal to L_f for a perfect pivot; so SaveBest, EarlyStopping and the ensemble's
1/loss weighting rank models by classification quality plus λ times the dependence the adversary can still find.
Before each validation the adversary catches up on the current model (``n_adv_refresh`` epochs), so that this
estimate does not come from an adversary lagging behind.

The adversary sees a one-to-one map of the output, standardised per batch
(:meth:`~lumin_inferno.callbacks.adversary_training.AdversaryTrainer.input` says why).

The adversary's targets are fold-file columns (``misc_feats`` of ``df2foldfile``). They ride through LUMIN's shuffled
batches appended to the fold's inputs in ``on_fold_begin`` and are sliced off in ``on_batch_begin``, before the
forward pass (:class:`~lumin_inferno.callbacks.batches.ExtraColumns`). The original arrays are put back in
``on_fold_end``, so LUMIN's validation BatchYielder (built once and reused every epoch) never grows. Put this
callback first in ``cb_partials`` so that no other callback sees the extra columns.

Training-fold order is never touched: pretraining and catch-up iterate over copies of ``fit_params.trn_idxs``
(:class:`~lumin_inferno.callbacks.adversary_training.AdversaryTrainer`). The maths lives in
:mod:`lumin_inferno.models.adversary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from lumin.nn.callbacks.callback import Callback
from torch import Tensor

from ..exceptions import ConfigurationError
from .adversary_training import Adversary, AdversaryTrainer
from .common import check_folds_hold_a_batch

__all__ = ["PivotCallback", "LambdaRamp"]

#: λ as a function of the (1-based) LUMIN epoch of joint training.
LambdaSchedule = Callable[[int], float]


@dataclass
class LambdaRamp:
    """λ(epoch) = lam · min(1, epoch / n_epochs): a linear ramp to ``lam`` over the first ``n_epochs`` epochs of joint
    training (picklable, for use as ``PivotCallback(lam=LambdaRamp(50.0, 5))``)."""

    lam: float
    n_epochs: int

    def __call__(self, epoch: int) -> float:
        return float(self.lam) * min(1.0, max(epoch, 0) / max(self.n_epochs, 1))


class PivotCallback(Callback):
    r"""Train a LUMIN model whose output is (approximately) independent of a nuisance z: a pivot.

    Use through ``train_models(..., cb_partials=[partial(PivotCallback, adv_targets=["z"], lam=10.0)])``; every model
    of an ensemble gets a fresh callback and adversary. Works for any LUMIN objective; the adversary's input is the
    model output through ``adv_input`` (by default the logit of a sigmoid output).

    Args:
        adv_targets: fold-file columns holding the nuisance per event (a list, e.g. ``["z"]``; written with
            ``df2foldfile(misc_feats=[...])``).
        lam: adversary weight λ ≥ 0 (dimensionless; the adversary loss is in nats per event), or a schedule
            ``lam(epoch) -> float`` over LUMIN's 1-based epochs, e.g. :class:`LambdaRamp`.
        adversary: ``"mdn"`` (Gaussian mixture density network, continuous nuisances) or ``"classifier"`` (discrete
            nuisance with integer labels 0…K−1, one column).
        apply_to: ``"background"`` (the adversary sees only events whose main target equals ``background_class``,
            the paper's physics case) or ``"all"``.
        background_class: main-target value of background events.
        n_pretrain_main: epochs of plain main-loss training over the training folds before joint training.
        n_pretrain_adv: epochs of adversary-only training on the (frozen, eval-mode) main output, after that.
        n_adv_refresh: epochs of the same adversary-only training at the end of every training epoch, before LUMIN's
            validation. The adversary chases a moving main model; without this catch-up it can lag behind and report
            (almost) no dependence for a model that still has some, and SaveBest would pick that model. 0 disables.
        adv_update_freq: the adversary takes ``adv_steps`` optimiser steps every ``adv_update_freq`` training batches,
            on the detached output of the current batch (before the main model's step on that batch).
        adv_steps: optimiser steps per adversary update.
        n_components: Gaussian components of the MDN. ``n_classes``: classes of a discrete nuisance (default: read
            from the training folds).
        adv_width, adv_depth: hidden width and number of hidden layers of the adversary's MLP.
        adv_lr: Adam learning rate of the adversary.
        adv_input: what the adversary sees of the model output ``s``: ``"auto"`` (logit of a sigmoid output for
            'classification' objectives; the log-probabilities of 'multiclass' ones as LUMIN outputs them; ``s``
            otherwise), ``"logit"``, ``"log"`` (of softmax probabilities), ``"identity"``, or a callable ``s -> input``.
            Use a one-to-one map: the mutual information with z is then the output's own.
        verbose: show fastprogress bars during pretraining.

    Attributes (after training):
        adversary: the trained adversary (``nn.Module``).
        reference_nll: H, the NLL of the best input-independent adversary on the training folds (nats per event);
            ``reference_nll_valid`` the same marginal's NLL on the validation fold.
        history: per-batch lists ``train_main``, ``train_adv``, ``valid_main``, ``valid_adv``, ``valid_logged``, and
            ``lam`` per epoch; ``pretrain_main`` / ``pretrain_adv`` per pretraining epoch (mean losses).
        visited_folds: training folds in the order LUMIN's joint training visited them.
        n_adv_updates: adversary updates during joint training (one per ``adv_update_freq`` training batches).
    """

    def __init__(
        self,
        adv_targets: Sequence[str],
        lam: Union[float, LambdaSchedule] = 10.0,
        adversary: str = "mdn",
        apply_to: str = "all",
        background_class: int = 0,
        n_pretrain_main: int = 0,
        n_pretrain_adv: int = 0,
        n_adv_refresh: int = 1,
        adv_update_freq: int = 1,
        adv_steps: int = 1,
        n_components: int = 5,
        n_classes: Optional[int] = None,
        adv_width: int = 20,
        adv_depth: int = 2,
        adv_lr: float = 1e-3,
        adv_input: Union[str, Callable[[Tensor], Tensor]] = "auto",
        verbose: bool = False,
    ):
        super().__init__()
        if isinstance(adv_targets, (str, bytes)):
            raise ConfigurationError(
                f"adv_targets must be a list of fold-file column names, got the string {adv_targets!r}; "
                f"write adv_targets=[{adv_targets!r}]"
            )
        self.adv_targets = list(adv_targets)
        if not self.adv_targets or not all(isinstance(c, str) for c in self.adv_targets):
            raise ConfigurationError(f"adv_targets must be a non-empty list of column names, got {adv_targets!r}")
        for name, value in (("adv_update_freq", adv_update_freq), ("adv_steps", adv_steps)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1 (batches / steps), got {value!r}")
        for name, value in (("n_pretrain_main", n_pretrain_main), ("n_pretrain_adv", n_pretrain_adv),
                            ("n_adv_refresh", n_adv_refresh)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigurationError(f"{name} must be an integer >= 0 (epochs), got {value!r}")
        if not callable(lam) and not float(lam) >= 0:
            raise ConfigurationError(f"lam must be >= 0 or a schedule lam(epoch), got {lam!r}")
        self.trainer = AdversaryTrainer(self.adv_targets, adversary, apply_to, background_class, n_components,
                                        n_classes, adv_width, adv_depth, adv_lr, adv_input, verbose)
        self.lam = lam
        self.n_pretrain_main, self.n_pretrain_adv = int(n_pretrain_main), int(n_pretrain_adv)
        self.n_adv_refresh = int(n_adv_refresh)
        self.adv_update_freq, self.adv_steps = int(adv_update_freq), int(adv_steps)
        self._reset()

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.history: Dict[str, List[float]] = {
            k: [] for k in ("train_main", "train_adv", "valid_main", "valid_adv", "valid_logged", "lam",
                            "pretrain_main", "pretrain_adv", "refresh_adv")
        }
        self.visited_folds: List[int] = []
        self._n_batches = 0
        self.n_adv_updates = 0  # adversary updates during joint training (each of adv_steps optimiser steps)
        self._saved_inputs: Optional[Tuple[Any, np.ndarray]] = None
        self._z: Optional[Tensor] = None

    @property
    def adversary(self) -> Optional[Adversary]:
        """The adversary network (built on the first batch it sees)."""
        return self.trainer.adversary

    @adversary.setter
    def adversary(self, module: Adversary) -> None:
        self.trainer.adversary = module

    @property
    def reference_nll(self) -> Optional[float]:
        """H on the training folds (nats per event)."""
        return self.trainer.reference_nll

    @property
    def reference_nll_valid(self) -> Optional[float]:
        """H on the validation fold (nats per event)."""
        return self.trainer.reference_nll_valid

    @property
    def n_classes(self) -> Optional[int]:
        """Classes of a discrete nuisance (read from the folds unless given)."""
        return self.trainer.n_classes

    def adversary_nll(self, s: Tensor, z: Tensor, w: Optional[Tensor] = None) -> Tensor:
        """Weighted mean NLL (nats per event) of the nuisance ``z`` given the adversary input ``s``."""
        return self.trainer.nll(s, z, w)

    def lam_at(self, epoch: int) -> float:
        """λ for a (1-based) LUMIN epoch."""
        lam = float(self.lam(epoch)) if callable(self.lam) else float(self.lam)
        if not lam >= 0:
            raise ConfigurationError(f"the λ schedule returned {lam} at epoch {epoch}; λ must be >= 0")
        return lam

    # ------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        fp = self.model.fit_params
        trn_idxs = list(fp.trn_idxs)
        if not trn_idxs:
            raise ConfigurationError("PivotCallback needs at least one training fold")
        check_folds_hold_a_batch(fp)
        self.trainer.start(self.model)
        if self.n_pretrain_main > 0:
            self.history["pretrain_main"] += self.trainer.pretrain_main(self.model, trn_idxs, self.n_pretrain_main)
        if self.n_pretrain_adv > 0:
            self.history["pretrain_adv"] += self.trainer.train(self.model, trn_idxs, self.n_pretrain_adv)

    def on_fold_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        idx = fp.trn_idx if fp.state == "train" else fp.val_idx
        if fp.state == "train":
            self.visited_folds.append(int(idx))
        self._saved_inputs = (fp.by, self.trainer.columns.append(fp.by, idx))

    def on_fold_end(self) -> None:
        if self._saved_inputs is not None:
            by, inputs = self._saved_inputs
            by.inputs = inputs
            self._saved_inputs = None

    def on_epoch_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "train":
            self.history["lam"].append(self.lam_at(fp.epoch))

    def on_epoch_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "train" and self.n_adv_refresh > 0:  # the adversary catches up before validation
            self.history["refresh_adv"] += self.trainer.train(self.model, list(fp.trn_idxs), self.n_adv_refresh)

    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        fp.x, self._z = self.trainer.columns.split(fp.x)

    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        if self._z is None:
            raise ConfigurationError("PivotCallback: no adversary targets for this batch (on_batch_begin not called)")
        s, z, w = self.trainer.prepare(fp.y_pred, fp.y, self._z, fp.w, str(getattr(self.model, "objective", "")),
                                       next(self.model.model.parameters()).device)
        adversary, h_train, h_valid = self.trainer.module, self.reference_nll, self.reference_nll_valid
        assert h_train is not None and h_valid is not None  # fitted in on_train_begin
        main = fp.loss_val
        if main is None:
            raise ConfigurationError(
                "PivotCallback adds to LUMIN's loss, but fit_params.loss_val is not set (a callback set loss_func=None "
                "and runs after this one?)"
            )
        has_events = len(s) > 0
        lam = self.lam_at(fp.epoch)
        if fp.state == "train":
            self._n_batches += 1
            if has_events and self._n_batches % self.adv_update_freq == 0:
                self.trainer.steps(s, z, w, self.adv_steps)
                self.n_adv_updates += 1
            self.history["train_main"].append(float(main.detach()))
            if not has_events:
                return
            adversary.eval()
            adv = self.adversary_nll(s, z, w)
            self.history["train_adv"].append(float(adv.detach()))
            if lam > 0:  # at lam = 0 the loss (and so every gradient) is LUMIN's, untouched
                fp.loss_val = main + lam * (h_train - adv)
        else:
            self.history["valid_main"].append(float(main.detach()))
            if not has_events:
                self.history["valid_logged"].append(float(main.detach()))
                return
            adversary.eval()
            with torch.no_grad():
                nll = float(self.adversary_nll(s.detach(), z, w))
            self.history["valid_adv"].append(nll)
            # logged: L_f + λ·(estimated mutual information, clamped at 0) >= L_f
            dependence = max(h_valid - nll, 0.0)
            fp.loss_val = main.detach() + lam * dependence
            self.history["valid_logged"].append(float(fp.loss_val))

    def on_batch_end(self) -> None:
        self._z = None

    def on_train_end(self) -> None:
        self.on_fold_end()
