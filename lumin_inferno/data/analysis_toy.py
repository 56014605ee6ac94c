"""A built-in analysis-scale problem with a known limit: two signal production modes (two POIs), three
backgrounds, a ttbar control region with a free ttbar normalisation, and 22 systematics of the three kinds.

Five features (τ p_T, visible mass, m_jj, Δη_jj, missing E_T), each process a product of independent Gaussians
with its own means and widths (overlapping, closed form). The systematics act exactly on the densities:

* shifted inputs (5, energy-scale style, correlated across processes): a feature scales as x → x(1 + Σ ε α) for
  the processes a systematic acts on, so the shifted density is f(x / (1 + Σεα)) / (1 + Σεα) per feature; in the
  fold file the ±1σ copies are the same events with x(1 ± ε);
* event weights (8): w → w (1 + δ α tanh((x_k − c)/s)) for the processes listed (shape and rate), stored as
  up/down weight columns;
* normalisations (9): κ^α as in the Analysis (pyhf ``code4``).

The extended unbinned likelihood of the signal region, the binned control region and the unit Gaussian
constraints give the Fisher information of (μ_ggH, μ_qqH, k_ttbar, α…) exactly up to the Monte Carlo error of
its estimate, so :meth:`AnalysisToy.limit` is the optimum that no binned summary can beat (the analogue of the
paper's "analytical likelihood" row).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..exceptions import InvalidModelSpecError
from ..statistics.interpolation import code4, code4p
from ..statistics.likelihood import Parameter

__all__ = ["AnalysisToy", "analysis_toy", "small_toy", "ToyFactor", "ToyLimit"]

FEATURES: Tuple[str, ...] = ("tau_pt", "m_vis", "m_jj", "deta_jj", "met")


@dataclass(frozen=True)
class ToyProcess:
    """A process of the toy: fold-file label, expected events in the signal region, Gaussian means and widths."""

    name: str
    label: int
    nominal_yield: float
    mean: Tuple[float, ...]
    width: Tuple[float, ...]
    role: str = "background"


@dataclass(frozen=True)
class ScaleShift:
    """A shifted-input systematic: ``feature → feature · (1 + scale·α)`` for ``processes``."""

    name: str
    processes: Tuple[str, ...]
    scales: Mapping[str, float]


@dataclass(frozen=True)
class WeightShift:
    """A weight systematic: ``w → w · (1 + size·α·tanh((feature − centre)/width))`` for ``processes``."""

    name: str
    processes: Tuple[str, ...]
    feature: str
    size: float
    centre: float
    width: float


@dataclass(frozen=True)
class NormShift:
    """A normalisation systematic κ^α (symmetric) on ``processes``."""

    name: str
    processes: Tuple[str, ...]
    kappa: float


@dataclass(frozen=True)
class ToyFactor:
    """A free normalisation factor of the toy (nominal 1): a POI (``poi=True``) or a free background normalisation."""

    name: str
    processes: Tuple[str, ...]
    poi: bool = True
    bounds: Tuple[float, float] = (-5.0, 10.0)


@dataclass(frozen=True)
class ToyLimit:
    """The unbinned optimum: σ of each POI, their correlation, and the Monte Carlo error of each figure."""

    sigma: Dict[str, float]
    sigma_error: Dict[str, float]
    correlation: float
    correlation_error: float
    n_events: int


PROCESSES: Tuple[ToyProcess, ...] = (
    ToyProcess("ggH", 0, 60.0, (55.0, 120.0, 250.0, 1.8, 40.0), (15.0, 15.0, 120.0, 1.0, 15.0), "signal"),
    ToyProcess("qqH", 1, 25.0, (60.0, 122.0, 700.0, 3.8, 45.0), (16.0, 15.0, 300.0, 1.2, 15.0), "signal"),
    ToyProcess("ztt", 2, 1500.0, (45.0, 92.0, 200.0, 1.5, 30.0), (12.0, 14.0, 110.0, 1.0, 12.0)),
    ToyProcess("ttbar", 3, 800.0, (70.0, 110.0, 350.0, 2.2, 70.0), (25.0, 30.0, 150.0, 1.2, 25.0)),
    ToyProcess("wjets", 4, 400.0, (50.0, 100.0, 250.0, 2.0, 55.0), (20.0, 35.0, 140.0, 1.3, 25.0)),
)
ALL = tuple(p.name for p in PROCESSES)
TAUS = ("ggH", "qqH", "ztt")
SIGNALS = ("ggH", "qqH")

SCALE_SHIFTS: Tuple[ScaleShift, ...] = (
    ScaleShift("jes", ALL, {"m_jj": 0.04, "met": 0.02}),
    ScaleShift("tes", TAUS, {"tau_pt": 0.03, "m_vis": 0.03}),
    ScaleShift("fake_tes", ("wjets",), {"tau_pt": 0.05, "m_vis": 0.04}),
    ScaleShift("met_uncl", ALL, {"met": 0.05}),
    ScaleShift("deta_res", ALL, {"deta_jj": 0.03}),
)
WEIGHT_SHIFTS: Tuple[WeightShift, ...] = (
    WeightShift("pdf_ggH", ("ggH",), "tau_pt", 0.08, 55.0, 20.0),
    WeightShift("pdf_qqH", ("qqH",), "deta_jj", 0.10, 3.8, 1.5),
    WeightShift("ps_isr", SIGNALS, "m_jj", 0.06, 400.0, 200.0),
    WeightShift("ztt_pt", ("ztt",), "tau_pt", 0.10, 45.0, 15.0),
    WeightShift("top_pt", ("ttbar",), "tau_pt", 0.10, 70.0, 30.0),
    WeightShift("wjets_met", ("wjets",), "met", 0.12, 55.0, 25.0),
    WeightShift("ztt_mjj", ("ztt",), "m_jj", 0.08, 200.0, 100.0),
    WeightShift("tau_id_pt", TAUS, "tau_pt", 0.04, 50.0, 20.0),
)
NORM_SHIFTS: Tuple[NormShift, ...] = (
    NormShift("lumi", ("ggH", "qqH", "ztt", "wjets"), 1.025),
    NormShift("xs_ztt", ("ztt",), 1.04),
    NormShift("xs_wjets", ("wjets",), 1.10),
    NormShift("xs_ggH", ("ggH",), 1.05),
    NormShift("xs_qqH", ("qqH",), 1.03),
    NormShift("br_tautau", SIGNALS, 1.02),
    NormShift("tau_id", TAUS, 1.05),
    NormShift("fake_rate", ("wjets",), 1.15),
    NormShift("ue_ps", SIGNALS, 1.02),
)
FACTORS: Tuple[ToyFactor, ...] = (
    ToyFactor("mu_ggH", ("ggH",)),
    ToyFactor("mu_qqH", ("qqH",)),
    ToyFactor("k_ttbar", ("ttbar",), poi=False, bounds=(0.0, 5.0)),
)
#: the ttbar control region (b-tagged events): yields per bin, ±1σ variations, MC uncertainties
CONTROL_REGION = {
    "name": "ttbar_cr",
    "yields": {"ttbar": (600.0, 400.0, 200.0), "wjets": (60.0, 40.0, 20.0), "ztt": (30.0, 15.0, 5.0)},
    "variations": {
        "jes": {"ttbar": ((612.0, 404.0, 198.0), (588.0, 396.0, 202.0))},
        "top_pt": {"ttbar": ((606.0, 404.0, 206.0), (594.0, 396.0, 194.0))},
        "met_uncl": {"wjets": ((62.0, 41.0, 20.5), (58.0, 39.0, 19.5))},
    },
    "mc_uncertainty": {"ttbar": (12.0, 10.0, 7.0), "wjets": (5.0, 4.0, 3.0), "ztt": (3.0, 2.0, 1.2)},
}


@dataclass(frozen=True)
class AnalysisToy:
    """The toy measurement: its processes, systematics and control region (module docstring)."""

    processes: Tuple[ToyProcess, ...] = PROCESSES
    scale_shifts: Tuple[ScaleShift, ...] = SCALE_SHIFTS
    weight_shifts: Tuple[WeightShift, ...] = WEIGHT_SHIFTS
    norm_shifts: Tuple[NormShift, ...] = NORM_SHIFTS
    control_region: Optional[Mapping] = field(default_factory=lambda: CONTROL_REGION)
    features: Tuple[str, ...] = FEATURES
    factors: Tuple[ToyFactor, ...] = FACTORS

    def __post_init__(self) -> None:
        names = {p.name for p in self.processes}
        for f in self.factors:
            if not set(f.processes) <= names:
                raise InvalidModelSpecError(f"factor {f.name!r} acts on unknown process(es) "
                                            f"{sorted(set(f.processes) - names)}")
        if not any(f.poi for f in self.factors):
            raise InvalidModelSpecError("the toy needs at least one POI factor")
        for p in self.processes:
            if len(p.mean) != len(self.features) or len(p.width) != len(self.features):
                raise InvalidModelSpecError(f"process {p.name!r}: one mean and one width per feature "
                                            f"({len(self.features)})")

    # ------------------------------------------------------------------------------------------------ description
    @property
    def pois(self) -> List[str]:
        return [f.name for f in self.factors if f.poi]

    @property
    def nuisance_names(self) -> List[str]:
        return [s.name for s in self.scale_shifts] + [s.name for s in self.weight_shifts] + [
            s.name for s in self.norm_shifts]

    def analysis(self, n_bins: int = 10, kind: str = "inputs", objective: str = "generalised_variance",
                 mc_stat: bool = True):
        """The :class:`~lumin_inferno.analysis.Analysis` of the toy. ``kind="inputs"``: the energy scales come from
        the fold file's ±1σ copies (approximate INFERNO); ``kind="transform"``: declared as exact
        :class:`~lumin_inferno.analysis.InputShift`s (exact INFERNO; the weight systematics then stay of kind
        ``"weights"``, which only the approximate callback reads)."""
        from ..analysis import Analysis, FixedChannel, InputShift, NormFactor, Objective, Process, Systematic

        if kind not in ("inputs", "transform"):
            raise InvalidModelSpecError(f"kind must be 'inputs' or 'transform', got {kind!r}")
        systematics = []
        for s in self.scale_shifts:
            if kind == "inputs":
                systematics.append(Systematic(s.name, "inputs", s.processes))
            else:
                systematics.append(Systematic(s.name, "transform", s.processes,
                                              shifts=tuple(InputShift(f, scale=v) for f, v in s.scales.items())))
        systematics += [Systematic(s.name, "weights", s.processes) for s in self.weight_shifts]
        systematics += [Systematic(s.name, "norm", s.processes, kappa_up=s.kappa) for s in self.norm_shifts]
        cr = self.control_region
        channels = () if cr is None else (FixedChannel(cr["name"], yields=cr["yields"], variations=cr["variations"],
                                                       mc_uncertainty=cr["mc_uncertainty"]),)
        return Analysis(
            processes=tuple(Process(p.name, p.nominal_yield, labels=(p.label,), role=p.role) for p in self.processes),
            factors=tuple(NormFactor(f.name, f.processes, poi=f.poi, bounds=f.bounds) for f in self.factors),
            systematics=tuple(systematics),
            channels=channels,
            n_bins=n_bins,
            mc_stat=mc_stat,
            objective=Objective(objective, pois=tuple(self.pois) if objective != "variance" else tuple(self.pois[:1])),
        )

    # ------------------------------------------------------------------------------------------------ sampling
    def sample(self, n_per_process: int, seed: int) -> Tuple[pd.DataFrame, Dict[str, Tuple[pd.DataFrame, pd.DataFrame]],
                                                             Dict[str, Tuple[np.ndarray, np.ndarray]]]:
        """``n_per_process`` events of each process at the nominal point (weights = expected events / generated),
        their ±1σ copies for each shifted-input systematic and their up/down weights for each weight systematic."""
        if n_per_process < 1:
            raise InvalidModelSpecError(f"n_per_process must be ≥ 1, got {n_per_process}")
        rng = np.random.default_rng(seed)
        frames = []
        for p in self.processes:
            x = rng.normal(p.mean, p.width, size=(n_per_process, len(self.features)))
            frames.append(pd.DataFrame(x, columns=list(self.features)).assign(
                target=p.label, weight=p.nominal_yield / n_per_process))
        df = pd.concat(frames, ignore_index=True)
        df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
        label_of = {p.name: p.label for p in self.processes}
        shifted = {}
        for s in self.scale_shifts:
            hit = df["target"].isin([label_of[p] for p in s.processes]).to_numpy()
            pair = []
            for sign in (1.0, -1.0):
                f = df.copy()
                for feat, eps in s.scales.items():
                    f.loc[hit, feat] = df.loc[hit, feat] * (1.0 + sign * eps)
                pair.append(f)
            shifted[s.name] = (pair[0], pair[1])
        weights = {}
        for ws in self.weight_shifts:
            hit = df["target"].isin([label_of[p] for p in ws.processes]).to_numpy()
            g = np.tanh((df[ws.feature].to_numpy() - ws.centre) / ws.width)
            w = df["weight"].to_numpy()
            weights[ws.name] = (np.where(hit, w * (1 + ws.size * g), w), np.where(hit, w * (1 - ws.size * g), w))
        return df, shifted, weights

    def write_foldfiles(self, directory: Union[str, Path], n_train_per_process: int, n_test_per_process: int,
                        n_folds: int = 5, seed: int = 0) -> Tuple[Path, Path, Path]:
        """Training (``n_folds`` folds, stratified by process) and test (one fold) fold files with the shifted
        inputs and weight columns, inputs standardised by the training sample's mean and width; returns
        (train, test, input-pipe JSON); the same ``seed``, the same files (events and folds). Load with
        ``FoldYielder(path, input_pipe=toy.input_pipe(json_path))``."""
        from ..io import atomic_write_text
        from .systematics import write_systematics_foldfile

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        feats = list(self.features)
        train, sh_train, w_train = self.sample(n_train_per_process, seed)
        test, sh_test, w_test = self.sample(n_test_per_process, seed + 1_000_003)
        mean, scale = train[feats].mean().to_numpy(), train[feats].std(ddof=0).to_numpy()

        def std(df: pd.DataFrame) -> pd.DataFrame:
            out = df.copy()
            out[feats] = ((df[feats].to_numpy() - mean) / scale).astype(np.float32)
            return out

        pipe = atomic_write_text(directory / "input_pipe.json",
                                 json.dumps({"features": feats, "mean": mean.tolist(), "scale": scale.tolist()}))
        paths = []
        for name, df, sh, wt, folds in (("train", train, sh_train, w_train, n_folds),
                                        ("test", test, sh_test, w_test, 1)):
            paths.append(write_systematics_foldfile(
                directory / name, std(df), folds, feats, "target",
                {k: (std(u), std(d)) for k, (u, d) in sh.items()}, wt, wgt_feat="weight",
                strat_key="target" if folds > 1 else None, fold_seed=seed))
        return paths[0], paths[1], pipe

    @staticmethod
    def input_pipe(path: Union[str, Path]):
        """The sklearn ``StandardScaler`` the fold files were standardised with (from its JSON, no pickle), for
        LUMIN's ``FoldYielder(input_pipe=...)``: exact INFERNO's input shifts are in physical units."""
        from sklearn.preprocessing import StandardScaler

        d = json.loads(Path(path).read_text())
        scaler = StandardScaler()
        scaler.mean_ = np.asarray(d["mean"], dtype=np.float64)
        scaler.scale_ = np.asarray(d["scale"], dtype=np.float64)
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = len(scaler.mean_)
        return scaler

    # ------------------------------------------------------------------------------------------------ the limit
    def parameters(self) -> List[Parameter]:
        """(the factors, α…), e.g. (μ_ggH, μ_qqH, k_ttbar, α…): the factors free at 1, every nuisance a unit
        Gaussian."""
        return [Parameter(f.name, 1.0) for f in self.factors] + [Parameter(n, 0.0, 1.0) for n in self.nuisance_names]

    def _factor(self, theta: Tensor, process: str, names: List[str]) -> Tensor:
        """Normalisation of a process: its free factors × Π code4(α, κ, 1/κ)."""
        f = torch.ones((), dtype=theta.dtype)
        for factor in self.factors:
            if process in factor.processes:
                f = f * theta[names.index(factor.name)]
        for s in self.norm_shifts:
            if process in s.processes:
                k = torch.as_tensor(s.kappa, dtype=theta.dtype)
                f = f * code4(theta[names.index(s.name)], k, 1.0 / k)
        return f

    def intensity(self, x: Tensor, theta: Tensor, only: Optional[Sequence[str]] = None) -> Tensor:
        """ν(x | θ), expected events per unit volume of the (physical) features in the signal region, θ ordered
        as :meth:`parameters`; ``only``: the contribution of these processes alone."""
        names = [p.name for p in self.parameters()]
        feats = list(self.features)
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        for p in self.processes:
            if only is not None and p.name not in only:
                continue
            stretch = torch.ones(len(feats), dtype=x.dtype)
            for s in self.scale_shifts:
                if p.name in s.processes:
                    a = theta[names.index(s.name)]
                    stretch = stretch + torch.stack([a * s.scales.get(f, 0.0) for f in feats])
            u = x / stretch
            mean = torch.as_tensor(p.mean, dtype=x.dtype)
            width = torch.as_tensor(p.width, dtype=x.dtype)
            log_f = (-0.5 * ((u - mean) / width) ** 2 - torch.log(width * math.sqrt(2 * math.pi))).sum(-1)
            log_f = log_f - torch.log(stretch).sum()
            w = torch.ones(x.shape[0], dtype=x.dtype)
            for ws in self.weight_shifts:
                if p.name in ws.processes:
                    g = torch.tanh((x[:, feats.index(ws.feature)] - ws.centre) / ws.width)
                    w = w + ws.size * theta[names.index(ws.name)] * g
            total = total + p.nominal_yield * self._factor(theta, p.name, names) * torch.exp(log_f) * w
        return total

    def control_region_expected(self, theta: Tensor) -> Tensor:
        """Expected counts of the control region at θ (variations interpolated with code4p, as in the model)."""
        names = [p.name for p in self.parameters()]
        cr = self.control_region
        if cr is None:
            return torch.zeros(0, dtype=theta.dtype)
        total: Union[float, Tensor] = 0.0
        for proc, y in cr["yields"].items():
            nominal = torch.as_tensor(y, dtype=theta.dtype)
            nu = nominal
            for syst, per in cr["variations"].items():
                if proc in per:
                    up, down = (torch.as_tensor(v, dtype=theta.dtype) for v in per[proc])
                    nu = nu + code4p(theta[names.index(syst)], nominal, up, down)  # the change
            total = total + self._factor(theta, proc, names) * nu
        return cast(Tensor, total)  # a tensor once a process's yields are added

    def fisher_information(self, n_per_process: int = 200_000, seed: int = 12345) -> Tensor:
        """Expected Fisher information of the unbinned signal region + binned control region + constraints, by
        Monte Carlo on ``n_per_process`` events of each process (infinite simulation: no MC-statistics term)."""
        from ..statistics.unbinned import extended_fisher_information

        params = self.parameters()
        df, _, _ = self.sample(n_per_process, seed)
        x = torch.as_tensor(df[list(self.features)].to_numpy(), dtype=torch.float64)
        samples = {p.name: x[torch.as_tensor(df["target"].to_numpy() == p.label)] for p in self.processes}
        yields = {p.name: p.nominal_yield for p in self.processes}
        info = extended_fisher_information(self.intensity, params, samples, yields)
        if self.control_region is None:
            return info
        theta = torch.tensor([p.nominal for p in params], dtype=torch.float64)
        nu = self.control_region_expected(theta)
        jac = torch.func.jacrev(self.control_region_expected)(theta)  # [bins, n_par]
        return info + jac.T @ (jac / nu[:, None])

    def limit(self, n_per_process: int = 200_000, n_splits: int = 4, seed: int = 12345,
              systematics: bool = True) -> ToyLimit:
        """σ(μ_ggH), σ(μ_qqH) and their correlation from the inverse Fisher information (every other parameter
        profiled), averaged over ``n_splits`` independent samples of ``n_per_process`` events per process; the
        errors are the spread of the splits / √n_splits. ``systematics=False``: the statistical-only limit (every
        nuisance fixed at nominal; the free k_ttbar still profiled), from the same Fisher information's
        (μ_ggH, μ_qqH, k_ttbar) block."""
        with_systematics, stat_only = self.limits(n_per_process, n_splits, seed)
        return with_systematics if systematics else stat_only

    def limits(self, n_per_process: int = 200_000, n_splits: int = 4, seed: int = 12345) -> Tuple[ToyLimit, ToyLimit]:
        """(:meth:`limit` with all systematics, :meth:`limit` statistical-only), both from one set of Fisher
        matrices."""
        if n_splits < 2:
            raise InvalidModelSpecError(f"n_splits must be ≥ 2 to estimate the Monte Carlo error, got {n_splits}")
        infos = [self.fisher_information(n_per_process, seed + 7919 * k) for k in range(n_splits)]
        return (self._limit(infos, len(self.parameters()), n_per_process),
                self._limit(infos, len(self.factors), n_per_process))

    def _limit(self, infos: List[Tensor], keep: int, n_per_process: int) -> ToyLimit:
        """The limit from the first ``keep`` parameters' block of each split's Fisher information (σ of each POI;
        the correlation of the first two POIs, 0 with one POI)."""
        idx = [i for i, f in enumerate(self.factors) if f.poi]
        rows = []
        for info in infos:
            cov = torch.linalg.inv(info[:keep, :keep])[idx][:, idx]
            s = cov.diagonal().sqrt()
            rho = float(cov[0, 1] / (s[0] * s[1])) if len(idx) > 1 else 0.0
            rows.append([float(v) for v in s] + [rho])
        a = np.asarray(rows)
        mean, err = a.mean(0), a.std(0, ddof=1) / math.sqrt(len(infos))
        pois = self.pois
        return ToyLimit({p: float(mean[i]) for i, p in enumerate(pois)},
                        {p: float(err[i]) for i, p in enumerate(pois)}, float(mean[-1]), float(err[-1]),
                        n_per_process * len(infos))


def analysis_toy() -> AnalysisToy:
    """The built-in analysis-scale toy (module docstring)."""
    return AnalysisToy()


def small_toy() -> AnalysisToy:
    """A second, smaller problem of the kind a new user brings: four features, one POI (μ on a signal of 50
    events), two backgrounds (800 and 400 events), an energy-scale systematic on x0 as shifted copies, a shape
    systematic of event weights, a 10 % and a 5 % normalisation, no control region. The signal is a narrow blob
    in (x0, x1) on top of backgrounds that differ in x2 and x3, so a summary must both find the signal and keep away
    from the x0 region where the scale systematic moves the background most."""
    return AnalysisToy(
        processes=(
            ToyProcess("sig", 0, 50.0, (1.5, 1.0, 0.0, 0.5), (0.4, 0.5, 1.0, 1.0), "signal"),
            ToyProcess("bkg_a", 1, 800.0, (0.0, 0.0, 0.5, 0.0), (1.0, 1.0, 1.0, 1.0)),
            ToyProcess("bkg_b", 2, 400.0, (1.0, 0.5, -1.0, 1.5), (0.8, 1.2, 0.8, 1.0)),
        ),
        scale_shifts=(ScaleShift("x0_scale", ("sig", "bkg_a", "bkg_b"), {"x0": 0.05}),),
        weight_shifts=(WeightShift("bkg_b_shape", ("bkg_b",), "x3", 0.10, 1.5, 1.0),),
        norm_shifts=(NormShift("xs_bkg_a", ("bkg_a",), 1.10), NormShift("xs_bkg_b", ("bkg_b",), 1.05)),
        control_region=None,
        features=("x0", "x1", "x2", "x3"),
        factors=(ToyFactor("mu", ("sig",)),),
    )
