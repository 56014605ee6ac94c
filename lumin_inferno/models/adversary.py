"""Adversaries for learning to pivot (Louppe, Kagan & Cranmer 2016, arXiv:1611.01046), in plain torch/numpy.

The adversary r models p(z | f(x)), the nuisance z seen only through the classifier output f(x). Its loss is the
negative log-likelihood (NLL, in nats per event) of the true nuisance values. If f is independent of z the best r can
do is the marginal p(z), whose NLL is the entropy H(Z); so ``H(Z) − NLL_r`` estimates the mutual information
I(f(X); Z) ≥ 0 (:func:`marginal_nll_gaussian_mixture`, :func:`marginal_nll_discrete` give that reference).

* :class:`MixtureDensityNetwork` (continuous z, the paper's choice) with :func:`mdn_nll`;
* :class:`ClassifierAdversary` (discrete z ∈ {0, …, K−1}) with :func:`classifier_nll`.

No LUMIN here: the callback in :mod:`lumin_inferno.callbacks.pivot` uses these pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import ConfigurationError, TargetShapeError

__all__ = [
    "MixtureDensityNetwork",
    "ClassifierAdversary",
    "mdn_nll",
    "classifier_nll",
    "marginal_nll_gaussian_mixture",
    "marginal_nll_discrete",
    "marginal_discrete_nll",
    "MarginalMixture",
    "fit_marginal_mixture",
    "MIN_SIGMA",
]

#: Lower bound on every mixture component's width (in the units of z), so the NLL cannot run to −∞ on a spike.
MIN_SIGMA: float = 1e-3
_LOG_2PI = math.log(2.0 * math.pi)


def _mlp(n_in: int, n_out: int, width: int, depth: int) -> nn.Sequential:
    """MLP with tanh hidden units: smooth and never 'dead' (a ReLU adversary whose units all switch off for the
    main model's outputs has zero gradient and cannot recover)."""
    layers, n = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(n, width), nn.Tanh()]
        n = width
    layers.append(nn.Linear(n, n_out))
    return nn.Sequential(*layers)


class MixtureDensityNetwork(nn.Module):
    r"""Conditional density p(z | s) = Σₖ πₖ(s) Πᵢ N(zᵢ; μₖᵢ(s), σₖᵢ(s)²): a mixture of ``n_components`` Gaussians
    with diagonal covariance over the ``n_targets`` nuisance dimensions, all parameters given by an MLP of s.

    ``forward(s)`` returns ``(log_pi [n, K], mu [n, K, d], sigma [n, K, d])``; σ = softplus(·) + :data:`MIN_SIGMA`.
    """

    def __init__(self, n_in: int, n_targets: int = 1, n_components: int = 5, width: int = 20, depth: int = 2):
        super().__init__()
        if n_in < 1 or n_targets < 1 or n_components < 1 or width < 1 or depth < 0:
            raise ConfigurationError(
                f"MixtureDensityNetwork needs positive sizes, got n_in={n_in}, n_targets={n_targets}, "
                f"n_components={n_components}, width={width}, depth={depth}"
            )
        self.n_in, self.n_targets, self.n_components = n_in, n_targets, n_components
        self.net = _mlp(n_in, n_components * (1 + 2 * n_targets), width, depth)

    def forward(self, s: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        out = self.net(s.reshape(len(s), -1))
        k, d = self.n_components, self.n_targets
        log_pi = F.log_softmax(out[:, :k], dim=1)
        mu = out[:, k : k + k * d].reshape(-1, k, d)
        sigma = F.softplus(out[:, k + k * d :]).reshape(-1, k, d) + MIN_SIGMA
        return log_pi, mu, sigma

    def nll(self, s: Tensor, z: Tensor) -> Tensor:
        """Per-event negative log-likelihood of ``z`` ([n] or [n, d]) given ``s``, in nats, shape [n]."""
        log_pi, mu, sigma = self.forward(s)  # no hooks on an adversary
        return mdn_nll(log_pi, mu, sigma, z)


def mdn_nll(log_pi: Tensor, mu: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    r"""−log Σₖ exp(log πₖ) Πᵢ N(zᵢ; μₖᵢ, σₖᵢ²) per event, in nats, computed with logsumexp.

    Shapes: ``log_pi`` [n, K] (log mixture weights summing to 1 over K), ``mu`` and ``sigma`` [n, K, d] or [n, K]
    (d = 1), ``z`` [n, d] or [n]. Returns [n].
    """
    if mu.dim() == 2:
        mu, sigma = mu.unsqueeze(-1), sigma.unsqueeze(-1)
    z = z.reshape(len(z), 1, -1).to(mu.dtype)
    if z.shape[-1] != mu.shape[-1]:
        raise TargetShapeError(f"z has {z.shape[-1]} dimensions, the mixture {mu.shape[-1]}")
    log_norm = -0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * _LOG_2PI  # [n, K, d]
    return -torch.logsumexp(log_pi + log_norm.sum(-1), dim=1)


class ClassifierAdversary(nn.Module):
    """p(z = k | s) for a discrete nuisance with ``n_classes`` values: an MLP returning logits [n, n_classes]."""

    def __init__(self, n_in: int, n_classes: int, width: int = 20, depth: int = 2):
        super().__init__()
        if n_classes < 2:
            raise ConfigurationError(f"a discrete nuisance needs >= 2 classes, got {n_classes}")
        self.n_in, self.n_classes = n_in, n_classes
        self.net = _mlp(n_in, n_classes, width, depth)

    def forward(self, s: Tensor) -> Tensor:
        return self.net(s.reshape(len(s), -1))

    def nll(self, s: Tensor, z: Tensor) -> Tensor:
        """Per-event −log p(z | s) in nats, shape [n]; ``z`` holds integer class labels."""
        return classifier_nll(self(s), z)


def classifier_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy −log softmax(logits)[label] per event, in nats, shape [n]."""
    return F.cross_entropy(logits, labels.reshape(-1).long(), reduction="none")


# ------------------------------------------------------------------------------------------- marginal references
def marginal_nll_discrete(labels: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """Entropy −Σₖ pₖ log pₖ (nats) of the (weighted) label frequencies: the mean NLL of the best adversary that
    ignores its input."""
    labels = np.asarray(labels).reshape(-1)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    _, inverse = np.unique(labels, return_inverse=True)
    p = np.bincount(inverse, weights=w) / w.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass
class MarginalMixture:
    """A Gaussian mixture with diagonal covariance for p(z), fitted by :func:`fit_marginal_mixture`."""

    log_pi: np.ndarray  # [k]
    mu: np.ndarray  # [k, d]
    var: np.ndarray  # [k, d]

    def nll(self, z: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
        """(Weighted) mean −log p(z) in nats per event; ``z`` [n] or [n, d]."""
        z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
        w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        return float(-(w * _mixture_log_density(z, self.log_pi, self.mu, self.var)).sum() / w.sum())


def _mixture_log_density(z: np.ndarray, log_pi: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    log_p = log_pi - 0.5 * (((z[:, None, :] - mu) ** 2) / var + np.log(var) + _LOG_2PI).sum(-1)  # [n, k]
    return np.logaddexp.reduce(log_p, axis=1)


def fit_marginal_mixture(
    z: np.ndarray, n_components: int = 5, weights: Optional[np.ndarray] = None, n_iter: int = 200
) -> MarginalMixture:
    """Maximum-likelihood ``n_components`` Gaussian mixture (diagonal covariance) for ``z`` ([n] or [n, d]) by EM,
    started from the means of quantile slices along the first dimension; variances floored at MIN_SIGMA²."""
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    n = len(z)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    w = w / w.sum()
    k = max(1, min(n_components, n))
    order = np.argsort(z[:, 0], kind="stable")
    mu = np.stack([z[chunk].mean(0) for chunk in np.array_split(order, k)])  # [k, d]
    var_floor = max(MIN_SIGMA**2, 1e-6 * float(z.var(0).max()) + 1e-12)
    var = np.tile(np.maximum(z.var(0), var_floor), (k, 1))
    log_pi = np.full(k, -math.log(k))
    prev = np.inf
    for _ in range(n_iter):
        log_p = log_pi - 0.5 * (((z[:, None, :] - mu) ** 2) / var + np.log(var) + _LOG_2PI).sum(-1)  # [n, k]
        log_norm = np.logaddexp.reduce(log_p, axis=1)
        nll = float(-(w * log_norm).sum())
        resp = np.exp(log_p - log_norm[:, None]) * w[:, None]  # weighted responsibilities
        nk = resp.sum(0) + 1e-300
        log_pi = np.log(nk)
        mu = resp.T @ z / nk[:, None]
        var = np.maximum(resp.T @ (z**2) / nk[:, None] - mu**2, var_floor)
        if abs(prev - nll) < 1e-9:
            break
        prev = nll
    return MarginalMixture(log_pi, mu, var)


def marginal_nll_gaussian_mixture(
    z: np.ndarray,
    n_components: int = 5,
    weights: Optional[np.ndarray] = None,
    n_iter: int = 200,
) -> float:
    r"""Mean NLL (nats per event) of a ``n_components`` Gaussian mixture with diagonal covariance fitted to ``z``
    ([n] or [n, d]) by EM: the best an input-independent :class:`MixtureDensityNetwork` can do, i.e. the adversary's
    loss when the classifier output carries no information on z. For Gaussian z it is ½·log(2πe·σ²) per dimension.
    """
    return fit_marginal_mixture(z, n_components, weights, n_iter).nll(z, weights)


def marginal_discrete_nll(labels_fit: np.ndarray, labels_eval: np.ndarray, weights_fit=None, weights_eval=None,
                          n_classes: Optional[int] = None) -> float:
    """Cross-entropy (nats per event) of ``labels_eval`` under the label frequencies of ``labels_fit`` (0…K−1)."""
    labels_fit = np.asarray(labels_fit).reshape(-1).astype(int)
    labels_eval = np.asarray(labels_eval).reshape(-1).astype(int)
    k = max(int(labels_fit.max()), int(labels_eval.max())) + 1 if n_classes is None else n_classes
    wf = np.ones(len(labels_fit)) if weights_fit is None else np.asarray(weights_fit, dtype=float).reshape(-1)
    we = np.ones(len(labels_eval)) if weights_eval is None else np.asarray(weights_eval, dtype=float).reshape(-1)
    p = np.bincount(labels_fit, weights=wf, minlength=k) / wf.sum()
    log_p = np.log(np.maximum(p, 1e-12))
    return float(-(we * log_p[labels_eval]).sum() / we.sum())
