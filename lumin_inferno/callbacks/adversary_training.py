"""The adversary of learning to pivot and its training outside LUMIN's loop: what it sees of the model output, its
loss, the input-independent reference H, and the epochs over the training folds that pretraining and the catch-up
before each validation run on the callback's own random streams. The maths of the adversaries is in
:mod:`lumin_inferno.models.adversary`; :class:`~lumin_inferno.callbacks.PivotCallback` holds the LUMIN hooks.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from fastprogress import progress_bar
from torch import Tensor

from ..exceptions import ConfigurationError, TargetShapeError
from ..models.adversary import (
    ClassifierAdversary,
    MixtureDensityNetwork,
    fit_marginal_mixture,
    marginal_discrete_nll,
    marginal_nll_discrete,
)
from .batches import ExtraColumns

__all__ = ["AdversaryTrainer", "Adversary", "standardise"]

#: the adversaries :class:`AdversaryTrainer` builds (each has ``nll(s, z) -> [n]``)
Adversary = Union[MixtureDensityNetwork, ClassifierAdversary]

_PROB_EPS = 1e-6


def standardise(s: Tensor) -> Tensor:
    """Per-batch affine standardisation of the adversary's input (each column to mean 0, std 1 over the events the
    adversary sees). Mutual information is invariant under it, and it keeps the adversary's units where they
    respond: without it the main model learnt to move its outputs out of the adversary's working range."""
    centred = s - s.mean(0, keepdim=True)
    if len(s) < 2:
        return centred
    return centred / (centred.std(0, keepdim=True) + 1e-6)


class AdversaryTrainer:
    """The adversary r(z | f(x)) of :class:`~lumin_inferno.callbacks.PivotCallback`, its Adam optimiser, its
    reference H and its own training loops over a LUMIN model's training folds (arguments as the callback's)."""

    def __init__(self, columns: List[str], kind: str, apply_to: str, background_class: int, n_components: int,
                 n_classes: Optional[int], width: int, depth: int, lr: float,
                 adv_input: Union[str, Callable[[Tensor], Tensor]], verbose: bool):
        if kind not in ("mdn", "classifier"):
            raise ConfigurationError(f"adversary must be 'mdn' or 'classifier', got {kind!r}")
        if kind == "classifier" and len(columns) != 1:
            raise ConfigurationError(f"a classifier adversary takes one label column, got {columns}")
        if apply_to not in ("all", "background"):
            raise ConfigurationError(f"apply_to must be 'all' or 'background', got {apply_to!r}")
        if not callable(adv_input) and adv_input not in ("auto", "logit", "log", "identity"):
            raise ConfigurationError(
                f"adv_input must be 'auto', 'logit', 'log', 'identity' or a callable, got {adv_input!r}"
            )
        self.columns = ExtraColumns(columns)
        self.kind, self.apply_to, self.background_class = kind, apply_to, background_class
        self.n_components, self.n_classes = n_components, n_classes
        self.width, self.depth, self.lr, self.adv_input, self.verbose = width, depth, lr, adv_input, verbose
        self.adversary: Optional[Adversary] = None
        self.opt: Optional[torch.optim.Optimizer] = None
        self.reference_nll: Optional[float] = None
        self.reference_nll_valid: Optional[float] = None
        self._seed, self._n_own_loops = 0, 0

    # ---------------------------------------------------------------------------------------------- set-up
    def start(self, model) -> None:
        """At the start of training ``model`` (a LUMIN ``Model`` in ``fit``): H fitted, which reads (and so checks)
        the columns of every training and validation fold before the first step, and the seed of the callback's own
        loops taken. Seeded from (not drawn from) torch's generator: different for each model of an ensemble,
        reproducible under a global seed, LUMIN's streams untouched."""
        fp = model.fit_params
        self.adversary, self.opt = None, None  # a fresh adversary for every training, built on its first batch
        self.columns.fy = fp.fy
        self._set_reference(model, list(fp.trn_idxs), fp.val_idx)
        self._seed = int(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:8], 16)
        self._n_own_loops = 0

    def _selected_columns(self, model, idxs: List[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Nuisance values and weights of the events the adversary sees in folds ``idxs``: (z [n, d], w [n])."""
        fp, zs, ws = model.fit_params, [], []
        for idx in idxs:
            z = self.columns.read(idx)
            fold = fp.fy.get_fold(idx)
            w = fold["weights"] if fold.get("weights") is not None and fp.train_on_weights else None
            w = np.ones(len(z)) if w is None else np.asarray(w, dtype=float).reshape(-1)
            if self.apply_to == "background":
                if fold.get("targets") is None:
                    raise TargetShapeError("apply_to='background' needs main targets in the fold file")
                sel = np.asarray(fold["targets"]).reshape(len(z), -1)[:, 0] == self.background_class
                z, w = z[sel], w[sel]
            zs.append(z)
            ws.append(w)
        return np.concatenate(zs), np.concatenate(ws)

    def _set_reference(self, model, trn_idxs: List[int], val_idx: Optional[int]) -> None:
        """H: NLL of the best input-independent adversary, the marginal p(z) fitted on the training folds' selected
        events (a Gaussian mixture with the MDN's number of components by EM, or the label frequencies), evaluated on
        the training folds (``reference_nll``) and on the validation fold (``reference_nll_valid``: the baseline of
        the logged dependence, on the same events and with the same out-of-sample footing as the adversary's NLL).
        For a classifier adversary also the number of classes."""
        z, w = self._selected_columns(model, trn_idxs)
        zv, wv = self._selected_columns(model, [val_idx]) if val_idx is not None else (z, w)
        if len(z) < 2:
            raise TargetShapeError(f"only {len(z)} events for the adversary in the training folds ({self.apply_to})")
        if self.kind == "classifier":
            labels = np.concatenate([z[:, 0], zv[:, 0]])
            if not np.all(labels == np.round(labels)) or labels.min() < 0:
                raise TargetShapeError(
                    f"a classifier adversary needs integer labels 0..K-1 in {self.columns.names[0]!r}, got values "
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

    # ----------------------------------------------------------------------------------------- the adversary
    def input(self, y_pred: Tensor, objective: str) -> Tensor:
        """What the adversary sees: a one-to-one function of the model output (so the mutual information with z is
        the output's), chosen to open up saturated outputs. An adversary fed a sigmoid output cannot resolve the
        differences of 1e-4 near 0 and 1 in which a model under adversarial pressure learns to hide its dependence
        on z (observed on the toy: dCor back to the plain classifier's while the adversary's loss stayed at H)."""
        s = y_pred.reshape(len(y_pred), -1)
        mode = self.adv_input
        if callable(mode):
            return mode(s)
        if mode == "auto":
            mode = "identity" if "multiclass" in objective else "logit" if "class" in objective else "identity"
        if mode == "logit":  # sigmoid outputs in (0, 1): log(p / (1 − p)), clamped at float32's resolution
            p = s.clamp(_PROB_EPS, 1.0 - _PROB_EPS)
            s = torch.log(p) - torch.log1p(-p)
        elif mode == "log":  # probabilities (e.g. a softmax tail)
            s = torch.log(s.clamp_min(_PROB_EPS))
        return s

    def selection(self, y: Optional[Tensor]) -> Optional[Tensor]:
        """Mask of the events the adversary sees (None = all)."""
        if self.apply_to == "all":
            return None
        if y is None:
            raise TargetShapeError("apply_to='background' needs main targets to find the background events")
        return y.reshape(len(y), -1)[:, 0] == self.background_class

    def prepare(self, y_pred: Tensor, y: Optional[Tensor], z: Tensor, w: Optional[Tensor], objective: str,
                device: torch.device) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """(adversary input, z, w) of the events the adversary sees, standardised; builds the adversary on first
        use (its input width is known only now)."""
        s, mask = self.input(y_pred, objective), self.selection(y)
        if mask is not None:
            s, z, w = s[mask], z[mask], None if w is None else w[mask]
        s = standardise(s)
        if self.adversary is None:
            self._build(s.shape[1], device)
        return s, z, w

    def _build(self, n_in: int, device: torch.device) -> None:
        # built on a forked RNG: the adversary's initialisation does not consume torch's global generator, so with
        # lam=0 and no pretraining the main model trains exactly as without the callback.
        with torch.random.fork_rng(devices=[]):
            if self.kind == "mdn":
                adv: Adversary = MixtureDensityNetwork(n_in, len(self.columns.names), self.n_components, self.width,
                                                       self.depth)
            else:
                assert self.n_classes is not None  # set by start() from the folds' labels
                adv = ClassifierAdversary(n_in, self.n_classes, self.width, self.depth)
        self.adversary = adv.to(device=device)
        self.adversary.requires_grad_(False)
        self.opt = torch.optim.Adam(self.adversary.parameters(), lr=self.lr)

    @property
    def module(self) -> Adversary:
        """The adversary, once built (:meth:`prepare` builds it on the first batch)."""
        if self.adversary is None:
            raise ConfigurationError("the adversary is built on the first batch it sees; none has been seen yet")
        return self.adversary

    def nll(self, s: Tensor, z: Tensor, w: Optional[Tensor] = None) -> Tensor:
        """Weighted mean NLL (nats per event) of the nuisance ``z`` given the adversary input ``s``."""
        nll = self.module.nll(s, z if self.kind == "mdn" else z[:, 0])
        if w is None:
            return nll.mean()
        w = w.reshape(-1).to(nll.dtype)
        return (w * nll).sum() / w.sum()

    def steps(self, s: Tensor, z: Tensor, w: Optional[Tensor], n_steps: int) -> float:
        """``n_steps`` Adam steps of the adversary on fixed (detached) inputs; returns the last loss."""
        s, adversary, opt = s.detach(), self.module, self.opt
        assert opt is not None  # built with the adversary
        adversary.train()
        adversary.requires_grad_(True)
        try:
            with torch.enable_grad():
                for _ in range(n_steps):
                    opt.zero_grad()
                    loss = self.nll(s, z, w)
                    loss.backward()
                    opt.step()
        finally:
            adversary.requires_grad_(False)
        return float(loss.detach())

    # ------------------------------------------------------------------------------------------ own loops
    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[random.Random]:
        """One of the trainer's own loops on its own random streams: numpy's global generator (which LUMIN's
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

    def _epochs(self, model, trn_idxs: List[int], n_epochs: int) -> Iterator[Iterator[Tuple]]:
        """Per epoch, the shuffled batches (x, y, w, z) of the training folds (a copy of the list, in an order of
        the trainer's own), built like LUMIN's own training BatchYielder."""
        fp, order = model.fit_params, list(trn_idxs)

        def batches(rng: random.Random):
            rng.shuffle(order)
            for idx in order:
                by = fp.partial_by(**fp.fy.get_fold(idx), drop_last=True, bs=fp.bs, shuffle=True)
                self.columns.append(by, idx)
                for x, y, w in by:
                    x, z = self.columns.split(x)
                    yield x, y, w, z

        for _ in progress_bar(range(n_epochs), display=self.verbose, leave=False):
            with self._own_rng() as rng:
                yield batches(rng)

    def pretrain_main(self, model, trn_idxs: List[int], n_epochs: int) -> List[float]:
        """Plain main-loss training (LUMIN's loss and optimiser) over the training folds; mean loss per epoch."""
        fp, net, means = model.fit_params, model.model, []
        if fp.loss_func is None:
            raise ConfigurationError("main-model pretraining needs LUMIN's loss (fit_params.loss_func is None)")
        net.train()
        for epoch in self._epochs(model, trn_idxs, n_epochs):
            losses = []
            for x, y, w, _ in epoch:
                if hasattr(fp.loss_func, "weights"):  # as Model._fit_batch attaches the weights
                    fp.loss_func.weights = w
                else:
                    fp.loss_func.weight = w
                loss = fp.loss_func(net(x), y)
                fp.opt.zero_grad()
                loss.backward()
                fp.opt.step()
                losses.append(float(loss.detach()))
            means.append(float(np.mean(losses)) if losses else float("nan"))
        return means

    def train(self, model, trn_idxs: List[int], n_epochs: int) -> List[float]:
        """Adversary-only training on the frozen main model's eval-mode output over the training folds, one Adam
        step per batch; mean loss per epoch (epochs without any selected event left out)."""
        net, means = model.model, []
        was_training = net.training
        net.eval()
        try:
            for epoch in self._epochs(model, trn_idxs, n_epochs):
                losses = []
                for x, y, w, z in epoch:
                    with torch.no_grad():
                        y_pred = net(x)
                    mask = self.selection(y)
                    if mask is not None and not bool(mask.any()):
                        continue
                    s, z, w = self.prepare(y_pred, y, z, w, str(getattr(model, "objective", "")), y_pred.device)
                    losses.append(self.steps(s, z, w, 1))
                if losses:
                    means.append(float(np.mean(losses)))
        finally:
            net.train(was_training)
        return means
