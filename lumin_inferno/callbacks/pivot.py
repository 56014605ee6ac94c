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

The adversary sees a one-to-one map of the output (logit of a sigmoid output by default), standardised per batch,
through tanh units: a model under adversarial pressure otherwise hides its dependence in saturated outputs or in a
range where a ReLU adversary's units are all off (observed on the toy: the plain classifier's dependence came back
while the adversary's loss stayed at H).

The adversary's targets are fold-file columns (``misc_feats`` of ``df2foldfile``). They ride through LUMIN's shuffled
batches appended to the fold's *inputs* array in ``on_fold_begin`` (BatchYielder converts its arrays only when
iteration starts, after ``on_fold_begin``, and applies ``input_mask`` earlier, in ``__init__``) and are sliced off
in ``on_batch_begin``, before the forward pass. Inputs rather than targets, because BatchYielder casts multiclass
targets to ``long`` (which would truncate a continuous z). The original arrays are put back in ``on_fold_end``,
so LUMIN's validation BatchYielder (built once and reused every epoch) never grows. Put this callback first in
``cb_partials`` so that no other callback sees the extra columns.

Training-fold order is never touched: pretraining and catch-up iterate over copies of ``fit_params.trn_idxs``.
The maths lives in :mod:`lumin_inferno.models.adversary`.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from fastprogress import progress_bar
from lumin.nn.callbacks.callback import Callback
from torch import Tensor, nn

from ..exceptions import ConfigurationError, FoldFileError, TargetShapeError
from ..models.adversary import (
    ClassifierAdversary,
    MixtureDensityNetwork,
    fit_marginal_mixture,
    marginal_discrete_nll,
    marginal_nll_discrete,
)

__all__ = ["PivotCallback", "LambdaRamp"]

_PROB_EPS = 1e-6

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
        if adversary not in ("mdn", "classifier"):
            raise ConfigurationError(f"adversary must be 'mdn' or 'classifier', got {adversary!r}")
        if adversary == "classifier" and len(self.adv_targets) != 1:
            raise ConfigurationError(f"a classifier adversary takes one label column, got {self.adv_targets}")
        if apply_to not in ("all", "background"):
            raise ConfigurationError(f"apply_to must be 'all' or 'background', got {apply_to!r}")
        for name, value in (("adv_update_freq", adv_update_freq), ("adv_steps", adv_steps)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1 (batches / steps), got {value!r}")
        for name, value in (("n_pretrain_main", n_pretrain_main), ("n_pretrain_adv", n_pretrain_adv),
                            ("n_adv_refresh", n_adv_refresh)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigurationError(f"{name} must be an integer >= 0 (epochs), got {value!r}")
        if not callable(lam) and not float(lam) >= 0:
            raise ConfigurationError(f"lam must be >= 0 or a schedule lam(epoch), got {lam!r}")
        self.lam, self.adversary_kind, self.apply_to = lam, adversary, apply_to
        self.background_class = background_class
        self.n_pretrain_main, self.n_pretrain_adv = int(n_pretrain_main), int(n_pretrain_adv)
        self.n_adv_refresh = int(n_adv_refresh)
        self.adv_update_freq, self.adv_steps = int(adv_update_freq), int(adv_steps)
        self.n_components, self.n_classes = n_components, n_classes
        self.adv_width, self.adv_depth, self.adv_lr = adv_width, adv_depth, adv_lr
        if not callable(adv_input) and adv_input not in ("auto", "logit", "log", "identity"):
            raise ConfigurationError(
                f"adv_input must be 'auto', 'logit', 'log', 'identity' or a callable, got {adv_input!r}"
            )
        self.adv_input = adv_input
        self.verbose = verbose
        self._reset()

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.adversary: Optional[nn.Module] = None
        self.adv_opt: Optional[torch.optim.Optimizer] = None
        self.reference_nll: Optional[float] = None
        self.reference_nll_valid: Optional[float] = None
        self.history: Dict[str, List[float]] = {
            k: [] for k in ("train_main", "train_adv", "valid_main", "valid_adv", "valid_logged", "lam",
                            "pretrain_main", "pretrain_adv", "refresh_adv")
        }
        self._seed = 0
        self._n_own_loops = 0
        self.visited_folds: List[int] = []
        self._n_batches = 0
        self.n_adv_updates = 0  # adversary updates during joint training (each of adv_steps optimiser steps)
        self._saved_inputs = None
        self._z: Optional[Tensor] = None
        self._n_adv_in: Optional[int] = None

    def lam_at(self, epoch: int) -> float:
        """λ for a (1-based) LUMIN epoch."""
        lam = float(self.lam(epoch)) if callable(self.lam) else float(self.lam)
        if not lam >= 0:
            raise ConfigurationError(f"the λ schedule returned {lam} at epoch {epoch}; λ must be >= 0")
        return lam

    # -------------------------------------------------------------------------------------------------- data
    def _fold_columns(self, idx: int) -> np.ndarray:
        """The adversary targets of fold ``idx``, [n, n_targets] float32."""
        fy = self.model.fit_params.fy
        cols = []
        for name in self.adv_targets:
            data = fy.get_column(name, fold_idx=idx)
            if data is None:
                raise FoldFileError(
                    f"adversary target column {name!r} is not in fold {idx} of {getattr(fy, 'foldfile', fy)}; "
                    f"write it with df2foldfile(..., misc_feats=[{name!r}, ...]). Columns: {sorted(fy.columns())}"
                )
            data = np.asarray(data)
            if data.ndim == 2 and data.shape[1] == 1:
                data = data[:, 0]
            if data.ndim != 1:
                raise TargetShapeError(f"adversary target {name!r} must hold one value per event, shape {data.shape}")
            cols.append(data.astype(np.float32))
        out = np.stack(cols, axis=1)
        if not np.all(np.isfinite(out)):
            raise TargetShapeError(f"adversary targets {self.adv_targets} in fold {idx} are not all finite")
        return out

    def _is_background(self, y: Tensor) -> Tensor:
        return y.reshape(len(y), -1)[:, 0] == self.background_class

    def _adv_input(self, y_pred: Tensor) -> Tensor:
        """What the adversary sees: a one-to-one function of the model output (so the mutual information with z is
        the output's), chosen to open up saturated outputs. An adversary fed a sigmoid output cannot resolve the
        differences of 1e-4 near 0 and 1 in which a model under adversarial pressure learns to hide its dependence on
        z (observed on the toy: dCor back to the plain classifier's while the adversary's loss stayed at H)."""
        s = y_pred.reshape(len(y_pred), -1)
        mode = self.adv_input
        if callable(mode):
            return mode(s)
        if mode == "auto":
            objective = str(getattr(self.model, "objective", ""))
            mode = "identity" if "multiclass" in objective else "logit" if "class" in objective else "identity"
        if mode == "logit":  # sigmoid outputs in (0, 1): log(p / (1 − p)), clamped at float32's resolution
            p = s.clamp(_PROB_EPS, 1.0 - _PROB_EPS)
            s = torch.log(p) - torch.log1p(-p)
        elif mode == "log":  # probabilities (e.g. a softmax tail)
            s = torch.log(s.clamp_min(_PROB_EPS))
        return s

    @staticmethod
    def _standardise(s: Tensor) -> Tensor:
        """Per-batch affine standardisation of the adversary's input (each column to mean 0, std 1 over the events
        the adversary sees). Mutual information is invariant under it, and it keeps the adversary's units where
        they respond: without it the main model learnt to move its outputs out of the adversary's working range."""
        centred = s - s.mean(0, keepdim=True)
        if len(s) < 2:
            return centred
        return centred / (centred.std(0, keepdim=True) + 1e-6)

    # ---------------------------------------------------------------------------------------------- adversary
    def _build_adversary(self, n_in: int) -> None:
        # Built on a forked RNG: the adversary's initialisation does not move torch's global generator, so with
        # lam=0 and no pretraining the main model trains exactly as without this callback.
        with torch.random.fork_rng(devices=[]):
            if self.adversary_kind == "mdn":
                adv = MixtureDensityNetwork(n_in, len(self.adv_targets), self.n_components, self.adv_width,
                                            self.adv_depth)
            else:
                adv = ClassifierAdversary(n_in, self.n_classes, self.adv_width, self.adv_depth)
        param = next(self.model.model.parameters())
        self.adversary = adv.to(device=param.device)
        self.adversary.requires_grad_(False)
        self.adv_opt = torch.optim.Adam(self.adversary.parameters(), lr=self.adv_lr)
        self._n_adv_in = n_in

    def adversary_nll(self, s: Tensor, z: Tensor, w: Optional[Tensor] = None) -> Tensor:
        """Weighted mean NLL (nats per event) of the nuisance ``z`` given the model output ``s``."""
        nll = self.adversary.nll(s, z if self.adversary_kind == "mdn" else z[:, 0])
        if w is None:
            return nll.mean()
        w = w.reshape(-1).to(nll.dtype)
        return (w * nll).sum() / w.sum()

    def _adversary_steps(self, s: Tensor, z: Tensor, w: Optional[Tensor], n_steps: int) -> float:
        """``n_steps`` Adam steps of the adversary on fixed (detached) main outputs; returns the last loss."""
        s = s.detach()
        self.adversary.train()
        self.adversary.requires_grad_(True)
        try:
            with torch.enable_grad():
                for _ in range(n_steps):
                    self.adv_opt.zero_grad()
                    loss = self.adversary_nll(s, z, w)
                    loss.backward()
                    self.adv_opt.step()
        finally:
            self.adversary.requires_grad_(False)
        return float(loss.detach())

    def _select(self, y: Optional[Tensor]) -> Optional[Tensor]:
        """Mask of the events the adversary sees (None = all)."""
        if self.apply_to == "all":
            return None
        if y is None:
            raise TargetShapeError("apply_to='background' needs main targets to find the background events")
        return self._is_background(y)

    # ------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        fp = self.model.fit_params
        fy, trn_idxs = fp.fy, list(fp.trn_idxs)
        if not trn_idxs:
            raise ConfigurationError("PivotCallback needs at least one training fold")
        too_small = {i: fy.get_data_count(i) for i in trn_idxs if fy.get_data_count(i) < fp.bs}
        if too_small:
            raise ConfigurationError(
                f"batch size {fp.bs} is larger than training fold(s) {too_small} (events per fold): LUMIN would "
                "yield no batch. Use a smaller bs or fewer, larger folds."
            )
        folds = list(trn_idxs) + ([fp.val_idx] if fp.val_idx is not None else [])
        for idx in folds:  # every column, every fold, before the first step
            self._fold_columns(idx)
        self._set_reference(trn_idxs, fp.val_idx)
        # Seed of the callback's own batch shuffling, read from (not drawn from) torch's generator: different for
        # each model of an ensemble, reproducible under a global seed, and LUMIN's random streams stay untouched.
        self._seed = int(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:8], 16)
        if self.n_pretrain_main > 0:
            self._pretrain_main(trn_idxs)
        if self.n_pretrain_adv > 0:
            self._train_adversary(trn_idxs, self.n_pretrain_adv, "pretrain_adv")

    def _selected_columns(self, idxs: List[int]):
        """Adversary targets and weights of the events the adversary sees in folds ``idxs``: (z [n, d], w [n])."""
        fy, zs, ws = self.model.fit_params.fy, [], []
        for idx in idxs:
            z = self._fold_columns(idx)
            fold = fy.get_fold(idx)
            w = fold["weights"] if fold.get("weights") is not None and self.model.fit_params.train_on_weights else None
            w = np.ones(len(z)) if w is None else np.asarray(w, dtype=float).reshape(-1)
            if self.apply_to == "background":
                if fold.get("targets") is None:
                    raise TargetShapeError("apply_to='background' needs main targets in the fold file")
                sel = np.asarray(fold["targets"]).reshape(len(z), -1)[:, 0] == self.background_class
                z, w = z[sel], w[sel]
            zs.append(z)
            ws.append(w)
        return np.concatenate(zs), np.concatenate(ws)

    def _set_reference(self, trn_idxs: List[int], val_idx: Optional[int]) -> None:
        """H: NLL of the best input-independent adversary, the marginal p(z) fitted on the training folds' selected
        events (a Gaussian mixture with the MDN's number of components by EM, or the label frequencies), evaluated on
        the training folds (``reference_nll``) and on the validation fold (``reference_nll_valid``: the baseline of
        the logged dependence, on the same events and with the same out-of-sample footing as the adversary's NLL).
        For a classifier adversary also the number of classes."""
        z, w = self._selected_columns(trn_idxs)
        zv, wv = self._selected_columns([val_idx]) if val_idx is not None else (z, w)
        if len(z) < 2:
            raise TargetShapeError(f"only {len(z)} events for the adversary in the training folds ({self.apply_to})")
        if self.adversary_kind == "classifier":
            labels = np.concatenate([z[:, 0], zv[:, 0]])
            if not np.all(labels == np.round(labels)) or labels.min() < 0:
                raise TargetShapeError(
                    f"a classifier adversary needs integer labels 0..K-1 in {self.adv_targets[0]!r}, got values "
                    f"in [{labels.min()}, {labels.max()}]"
                )
            n_seen = int(labels.max()) + 1
            if self.n_classes is None:
                self.n_classes = max(2, n_seen)
            elif n_seen > self.n_classes:
                raise TargetShapeError(f"labels up to {n_seen - 1} but n_classes={self.n_classes}")
            self.reference_nll = marginal_nll_discrete(z[:, 0], w)
            self.reference_nll_valid = marginal_discrete_nll(z[:, 0], zv[:, 0], w, wv, self.n_classes)
        else:
            sub = np.random.default_rng(0).permutation(len(z))[:20_000]  # EM on a fixed subsample: cheap
            marginal = fit_marginal_mixture(z[sub], self.n_components, w[sub])
            self.reference_nll = marginal.nll(z, w)
            self.reference_nll_valid = marginal.nll(zv, wv)

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[random.Random]:
        """Run one of the callback's own loops on its own random streams: numpy's global generator (which LUMIN's
        BatchYielder shuffles with) is reseeded for the loop and restored afterwards; fold order comes from the
        yielded ``random.Random``."""
        self._n_own_loops += 1
        seed = (self._seed + 7919 * self._n_own_loops) % 2**32
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield random.Random(seed)
        finally:
            np.random.set_state(state)

    def _batches(self, idx: int, drop_last: bool = True):
        """Shuffled batches (x, y, w, z) of training fold ``idx``, built like LUMIN's own training BatchYielder."""
        fp = self.model.fit_params
        by = fp.partial_by(**fp.fy.get_fold(idx), drop_last=drop_last, bs=fp.bs, shuffle=True)
        self._append_columns(by, idx)
        for x, y, w in by:
            x, z = self._split(x)
            yield x, y, w, z

    def _pretrain_main(self, trn_idxs: List[int]) -> None:
        """Plain main-loss training (LUMIN's loss and optimiser), ``n_pretrain_main`` epochs over the training folds."""
        fp, net = self.model.fit_params, self.model.model
        if fp.loss_func is None:
            raise ConfigurationError("main-model pretraining needs LUMIN's loss (fit_params.loss_func is None)")
        order = list(trn_idxs)  # a copy: LUMIN's own list is never shuffled here
        net.train()
        for _ in progress_bar(range(self.n_pretrain_main), display=self.verbose, leave=False):
            losses = []
            with self._own_rng() as rng:
                rng.shuffle(order)
                for idx in order:
                    for x, y, w, _ in self._batches(idx):
                        if hasattr(fp.loss_func, "weights"):  # as Model._fit_batch attaches the weights
                            fp.loss_func.weights = w
                        else:
                            fp.loss_func.weight = w
                        loss = fp.loss_func(net(x), y)
                        fp.opt.zero_grad()
                        loss.backward()
                        fp.opt.step()
                        losses.append(float(loss.detach()))
            self.history["pretrain_main"].append(float(np.mean(losses)) if losses else float("nan"))

    def _train_adversary(self, trn_idxs: List[int], n_epochs: int, key: str) -> None:
        """Adversary-only training on the frozen main model's eval-mode output, ``n_epochs`` over the training folds
        (a copy of the fold list), one Adam step per batch; mean loss per epoch into ``history[key]``."""
        net, order = self.model.model, list(trn_idxs)
        was_training = net.training
        net.eval()
        try:
            for _ in progress_bar(range(n_epochs), display=self.verbose, leave=False):
                losses = []
                with self._own_rng() as rng:
                    rng.shuffle(order)
                    for idx in order:
                        for x, y, w, z in self._batches(idx):
                            with torch.no_grad():
                                s = self._adv_input(net(x))
                            mask = self._select(y)
                            if mask is not None:
                                if not bool(mask.any()):
                                    continue
                                s, z, w = s[mask], z[mask], None if w is None else w[mask]
                            s = self._standardise(s)
                            if self.adversary is None:
                                self._build_adversary(s.shape[1])
                            losses.append(self._adversary_steps(s, z, w, 1))
                if losses:
                    self.history[key].append(float(np.mean(losses)))
        finally:
            net.train(was_training)

    def _append_columns(self, by, idx: int) -> np.ndarray:
        """Append fold ``idx``'s adversary targets to ``by.inputs`` (row-aligned, before any shuffling); returns the
        original inputs array."""
        cols, original = self._fold_columns(idx), by.inputs
        if len(cols) != len(original):
            raise FoldFileError(f"fold {idx}: {len(cols)} adversary-target rows for {len(original)} events")
        by.inputs = np.concatenate([np.asarray(original, dtype=np.float32), cols], axis=1)
        return original

    def _split(self, x):
        """Remove the appended adversary targets from a batch's inputs: returns (inputs, z [n, n_targets])."""
        n = len(self.adv_targets)
        if isinstance(x, tuple):  # (flat inputs, matrix inputs)
            flat, z = x[0][:, :-n], x[0][:, -n:]
            return (flat,) + tuple(x[1:]), z
        return x[:, :-n], x[:, -n:]

    def on_fold_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        idx = fp.trn_idx if fp.state == "train" else fp.val_idx
        if fp.state == "train":
            self.visited_folds.append(int(idx))
        self._saved_inputs = (fp.by, self._append_columns(fp.by, idx))

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
            self._train_adversary(list(fp.trn_idxs), self.n_adv_refresh, "refresh_adv")

    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        fp.x, self._z = self._split(fp.x)

    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        s, z, w = self._adv_input(fp.y_pred), self._z, fp.w
        mask = self._select(fp.y)
        if mask is not None:
            s, z, w = s[mask], z[mask], None if w is None else w[mask]
        s = self._standardise(s)
        if self.adversary is None:
            self._build_adversary(s.shape[1])
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
                self._adversary_steps(s, z, w, self.adv_steps)
                self.n_adv_updates += 1
            self.history["train_main"].append(float(main.detach()))
            if not has_events:
                return
            self.adversary.eval()
            adv = self.adversary_nll(s, z, w)
            self.history["train_adv"].append(float(adv.detach()))
            if lam > 0:  # at lam = 0 the loss (and so every gradient) is LUMIN's, untouched
                fp.loss_val = main + lam * (self.reference_nll - adv)
        else:
            self.adversary.eval()
            with torch.no_grad():
                adv = self.adversary_nll(s.detach(), z, w) if has_events else None
            self.history["valid_main"].append(float(main.detach()))
            if adv is None:
                self.history["valid_logged"].append(float(main.detach()))
                return
            self.history["valid_adv"].append(float(adv))
            # logged: L_f + λ·(estimated mutual information, clamped at 0) >= L_f
            dependence = max(self.reference_nll_valid - float(adv), 0.0)
            fp.loss_val = main.detach() + lam * dependence
            self.history["valid_logged"].append(float(fp.loss_val))

    def on_batch_end(self) -> None:
        self._z = None

    def on_train_end(self) -> None:
        self.on_fold_end()
