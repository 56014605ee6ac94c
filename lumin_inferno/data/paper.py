"""The INFERNO paper's synthetic 3-D problem (de Castro & Dorigo, arXiv:1806.04743, section 5).

Background: (x0, x1) ~ N((2 + r, 0), diag(5, 9)), x2 ~ Exponential(rate λ); signal: (x0, x1) ~ N((0, 0), I),
x2 ~ Exponential(rate 2). Nominal r = 0, λ = 3, s = 50, b = 1000 expected events. The signal mean is (0, 0) as in
the paper's code (the text's (1, 1) is an erratum; only (0, 0) reproduces the published analytic limits).

Features are written to LUMIN fold files *standardised* with fixed constants (:data:`FEATURE_SHIFT`,
:data:`FEATURE_SCALE`, chosen from the nominal mixture) so a network trains well without an input pipeline; the
:class:`PaperTransform` applies the nuisances in that standardised space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..exceptions import InputTransformError, InvalidModelSpecError
from ..statistics.likelihood import Parameter
from .foldfiles import quiet_df2foldfile

__all__ = [
    "FEATURES",
    "R0",
    "LAMBDA0",
    "SIGNAL_YIELD",
    "BACKGROUND_YIELD",
    "sample_paper",
    "PaperTransform",
    "PaperBenchmark",
    "paper_benchmark",
    "write_paper_foldfiles",
    "TEMPLATE_SHIFTS",
    "paper_intensity",
    "analytic_limit",
]

FEATURES: List[str] = ["x0", "x1", "x2"]
R0: float = 0.0  #: nominal background-mean shift r
LAMBDA0: float = 3.0  #: nominal background exponential rate λ
SIGNAL_YIELD: float = 50.0
BACKGROUND_YIELD: float = 1000.0
#: Fixed standardisation of the written features: x_written = (x_raw - shift) / scale.
FEATURE_SHIFT = np.array([2.0, 0.0, 0.35], dtype=np.float32)
FEATURE_SCALE = np.array([2.2, 3.0, 0.4], dtype=np.float32)
#: Physical step of each shape nuisance for evaluation templates (the paper's r ± 0.2, λ ± 0.5).
TEMPLATE_SHIFTS: Dict[str, float] = {"r": 0.2, "lambda": 0.5}


def sample_paper(
    n_signal: int, n_background: int, r: float = R0, lam: float = LAMBDA0, seed: Optional[int] = None
) -> pd.DataFrame:
    """Draw raw (unstandardised) events: columns x0, x1, x2, gen_target (1 signal / 0 background), gen_weight."""
    rng = np.random.default_rng(seed)
    sig = np.column_stack(
        [rng.normal(0.0, 1.0, n_signal), rng.normal(0.0, 1.0, n_signal), rng.exponential(1 / 2.0, n_signal)]
    )
    bkg = np.column_stack(
        [
            rng.normal(2.0 + r, np.sqrt(5.0), n_background),
            rng.normal(0.0, 3.0, n_background),
            rng.exponential(1 / lam, n_background),
        ]
    )
    df = pd.DataFrame(np.vstack([sig, bkg]).astype(np.float32), columns=FEATURES)
    df["gen_target"] = np.concatenate([np.ones(n_signal), np.zeros(n_background)]).astype(np.int64)
    df["gen_weight"] = np.ones(len(df), dtype=np.float32)
    return df


def standardise(df: pd.DataFrame) -> pd.DataFrame:
    """Apply the fixed standardisation to the feature columns (returns a copy)."""
    out = df.copy()
    out[FEATURES] = (out[FEATURES].values - FEATURE_SHIFT) / FEATURE_SCALE
    return out


@dataclass
class PaperTransform:
    """Input transform for the paper's shape nuisances on standardised features (see :data:`InputTransform`).

    ``r``: x0 → x0 + (r − r₀); ``lambda``: x2 → x2 · λ₀/λ (so the exponential's rate becomes λ), both on the events
    in ``mask`` (the background). Nuisances not present in the dict stay at nominal. Picklable, so it can travel
    inside a saved configuration.
    """

    shift: Sequence[float] = tuple(FEATURE_SHIFT.tolist())
    scale: Sequence[float] = tuple(FEATURE_SCALE.tolist())
    r0: float = R0
    lambda0: float = LAMBDA0

    def __call__(self, x: Tensor, nuisances: Dict[str, Tensor], mask: Tensor) -> Tensor:
        m = mask.to(x.dtype)
        cols = list(x.unbind(dim=1))
        if "r" in nuisances:
            cols[0] = cols[0] + m * (nuisances["r"] - self.r0) / self.scale[0]
        if "lambda" in nuisances:
            factor = 1.0 + m * (self.lambda0 / nuisances["lambda"] - 1.0)
            raw = cols[2] * self.scale[2] + self.shift[2]
            cols[2] = (raw * factor - self.shift[2]) / self.scale[2]
        return torch.stack(cols, dim=1)

    def tangents(self, x: Tensor, names: Sequence[str]) -> Tensor:
        """∂x'/∂θ at the nominal values, ``[len(names), n, 3]``, in standardised units per unit of the nuisance:
        r moves x0 by 1/scale₀; λ scales raw x2 by λ₀/λ, so ∂x2/∂λ = −raw x2/(λ₀·scale₂)."""
        out = x.new_zeros(len(names), *x.shape)
        for k, name in enumerate(names):
            if name == "r":
                out[k, :, 0] = 1.0 / self.scale[0]
            elif name == "lambda":
                out[k, :, 2] = -(x[:, 2] * self.scale[2] + self.shift[2]) / (self.lambda0 * self.scale[2])
            else:
                raise InputTransformError(f"PaperTransform has no nuisance {name!r} (it knows 'r' and 'lambda')")
        return out


@dataclass
class PaperNuisanceTransform:
    """:class:`PaperTransform` with the nuisances in analysis units α (0 = nominal): r = r₀ + step_r·α_r and
    λ = λ₀ + step_λ·α_λ, so that α = ±1 are the ±step templates (default :data:`TEMPLATE_SHIFTS`). Picklable."""

    steps: Dict[str, float] = field(default_factory=lambda: dict(TEMPLATE_SHIFTS))
    base: PaperTransform = field(default_factory=lambda: PaperTransform())

    def _physical(self, nuisances: Dict[str, Tensor]) -> Dict[str, Tensor]:
        nominal = {"r": self.base.r0, "lambda": self.base.lambda0}
        unknown = set(nuisances) - set(nominal)
        if unknown:
            raise InputTransformError(f"the paper's transform has nuisances 'r' and 'lambda', not {sorted(unknown)}")
        return {k: nominal[k] + self.steps[k] * v for k, v in nuisances.items()}

    def __call__(self, x: Tensor, nuisances: Dict[str, Tensor], mask: Tensor) -> Tensor:
        return self.base(x, self._physical(nuisances), mask)

    def tangents(self, x: Tensor, names: Sequence[str]) -> Tensor:
        """∂x'/∂α = step · ∂x'/∂θ of :meth:`PaperTransform.tangents`."""
        scale = torch.tensor([self.steps[n] for n in names], dtype=x.dtype, device=x.device)
        return self.base.tangents(x, names) * scale[:, None, None]


@dataclass
class PaperBenchmark:
    """One of the paper's benchmarks 0–4: which nuisances float and how they are constrained.

    :meth:`analysis` is its :class:`~lumin_inferno.analysis.Analysis` (exact or from shifted inputs) and
    :meth:`transform` the input transform of the exact one.
    """

    index: int
    poi: Parameter
    background: Union[float, Parameter]
    shape_nuisances: List[Parameter] = field(default_factory=list)

    def analysis(
        self, n_bins: int = 10, steps: Optional[Dict[str, float]] = None, mc_stat: bool = False, kind: str = "inputs"
    ):
        """The benchmark as an :class:`~lumin_inferno.analysis.Analysis`. ``kind="inputs"``: the shape nuisances
        are ±``steps`` shifted inputs stored in the fold file (default :data:`TEMPLATE_SHIFTS`), as approximate
        INFERNO trains on them; ``kind="transform"``: exact, through :class:`PaperNuisanceTransform` (``steps``
        are then the units of α), as exact INFERNO trains on them.

        The POI is the signal strength ``mu`` (signal yield s = 50 μ, so σ(s) = 50 σ(μ)); a constrained
        background (benchmark 4) is the factor ``k_b`` ~ N(1, 0.1); each shape nuisance α is measured in units of
        its step, so r ~ N(0, 0.4) with step 0.2 is α_r ~ N(0, 2), and a free nuisance has no constraint.
        """
        from ..analysis import Analysis, NormFactor, Nuisance, Process, Systematic

        steps = dict(TEMPLATE_SHIFTS if steps is None else steps)
        missing = [p.name for p in self.shape_nuisances if p.name not in steps]
        if missing:
            raise InvalidModelSpecError(f"no template step for shape nuisance(s) {missing}")
        factors = [NormFactor("mu", ("signal",), bounds=(0.0, 10.0))]
        if isinstance(self.background, Parameter):
            b = self.background
            factors.append(NormFactor("k_b", ("background",), poi=False, bounds=(0.0, 10.0),
                                      constraint=None if b.constraint is None else b.constraint / b.nominal))
        background_yield = float(self.background.nominal if isinstance(self.background, Parameter) else self.background)
        return Analysis(
            processes=(Process("signal", float(self.poi.nominal), labels=(1,), role="signal"),
                       Process("background", background_yield, labels=(0,))),
            factors=tuple(factors),
            systematics=tuple(Systematic(p.name, kind, ("background",)) for p in self.shape_nuisances),
            nuisances=tuple(
                Nuisance(p.name, None if p.constraint is None else p.constraint / steps[p.name])
                for p in self.shape_nuisances
            ),
            n_bins=n_bins,
            mc_stat=mc_stat,
        )

    def transform(self, steps: Optional[Dict[str, float]] = None) -> "PaperNuisanceTransform":
        """The input transform of :meth:`analysis` with ``kind="transform"``."""
        return PaperNuisanceTransform(dict(TEMPLATE_SHIFTS if steps is None else steps))


def paper_benchmark(index: int) -> PaperBenchmark:
    """Benchmarks of the paper (POI: signal yield s = 50):

    0: nothing floats; 1: r free; 2: r, λ free; 3: r ~ N(0, 0.4), λ ~ N(3, 1); 4: as 3 and b ~ N(1000, 100).
    """
    poi = Parameter("s", SIGNAL_YIELD, bounds=(0.0, None))
    r_free, lam_free = Parameter("r", R0), Parameter("lambda", LAMBDA0, bounds=(0.5, None))
    r_con = Parameter("r", R0, constraint=0.4)
    lam_con = Parameter("lambda", LAMBDA0, constraint=1.0, bounds=(0.5, None))
    configs: Dict[int, Tuple[Union[float, Parameter], List[Parameter]]] = {
        0: (BACKGROUND_YIELD, []),
        1: (BACKGROUND_YIELD, [r_free]),
        2: (BACKGROUND_YIELD, [r_free, lam_free]),
        3: (BACKGROUND_YIELD, [r_con, lam_con]),
        4: (Parameter("b", BACKGROUND_YIELD, constraint=100.0, bounds=(0.0, None)), [r_con, lam_con]),
    }
    if index not in configs:
        raise InvalidModelSpecError(f"the paper has benchmarks 0-4, got {index}")
    bkg, shapes = configs[index]
    return PaperBenchmark(index=index, poi=poi, background=bkg, shape_nuisances=shapes)


def _log_normal(x: Tensor, mean, var) -> Tensor:
    return -0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * torch.pi * torch.as_tensor(var, dtype=x.dtype))


def paper_intensity(parameters: Sequence[Parameter]):
    """ν(x | θ) = s f_s(x) + b f_b(x | r, λ) of the paper's problem on *raw* features, events per unit volume.

    Returns a function ``(x [n, 3], θ [n_par]) -> ν [n]`` with θ ordered as ``parameters`` (names among ``s``,
    ``b``, ``r``, ``lambda``); parameters not listed stay at their nominal values.
    """
    names = [p.name for p in parameters]
    unknown = set(names) - {"s", "b", "r", "lambda"}
    if unknown:
        raise InvalidModelSpecError(f"the paper's likelihood has parameters s, b, r, lambda; got unknown {sorted(unknown)}")

    def value(theta: Tensor, name: str, default: float) -> Tensor:
        return theta[names.index(name)] if name in names else torch.as_tensor(default, dtype=theta.dtype)

    def intensity(x: Tensor, theta: Tensor) -> Tensor:
        s, b = value(theta, "s", SIGNAL_YIELD), value(theta, "b", BACKGROUND_YIELD)
        r, lam = value(theta, "r", R0), value(theta, "lambda", LAMBDA0)
        x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
        log_fs = _log_normal(x0, 0.0, 1.0) + _log_normal(x1, 0.0, 1.0) + np.log(2.0) - 2.0 * x2
        log_fb = _log_normal(x0, 2.0 + r, 5.0) + _log_normal(x1, 0.0, 9.0) + torch.log(lam) - lam * x2
        return s * torch.exp(log_fs) + b * torch.exp(log_fb)

    return intensity


def analytic_limit(benchmark: Union[int, "PaperBenchmark"], n_per_class: int = 1_000_000, seed: int = 1234) -> float:
    """Expected σ(s) of the unbinned extended-likelihood fit (the paper's "analytical likelihood" row): the lower
    bound for any binned summary statistic. Fisher information by Monte Carlo on ``n_per_class`` events per process
    (statistical precision ~1/√n; 1M per class reproduces Table 2's row to ±0.01)."""
    from ..statistics.unbinned import unbinned_poi_uncertainty

    bm = paper_benchmark(benchmark) if isinstance(benchmark, int) else benchmark
    params = [bm.poi] + ([bm.background] if isinstance(bm.background, Parameter) else []) + list(bm.shape_nuisances)
    df = sample_paper(n_per_class, n_per_class, seed=seed)
    x = torch.as_tensor(df[FEATURES].values, dtype=torch.float64)
    is_sig = torch.as_tensor(df["gen_target"].values == 1)
    return unbinned_poi_uncertainty(
        paper_intensity(params),
        params,
        samples={"signal": x[is_sig], "background": x[~is_sig]},
        yields={"signal": SIGNAL_YIELD, "background": BACKGROUND_YIELD},
        poi_index=0,
    )


def write_paper_foldfiles(
    outdir: Union[str, Path],
    n_train_per_class: int = 100_000,
    n_test_per_class: int = 500_000,
    n_folds: int = 10,
    seed: int = 27,
) -> Tuple[Path, Path]:
    """Write ``train.hdf5`` (``n_folds`` folds, stratified; LUMIN uses one fold per model for validation) and
    ``test.hdf5`` (one fold, an independent large sample) with LUMIN's ``df2foldfile``. Returns their paths. The
    same ``seed`` writes the same files (events and folds: numpy's global generator, which LUMIN's fold split draws
    from, is seeded with ``seed`` first and left in its state after the split).

    Columns: inputs x0, x1, x2 (standardised), targets ``gen_target``, weights ``gen_weight``.
    """
    from lumin.data_processing.file_proc import df2foldfile

    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n, folds, s in (("train", n_train_per_class, n_folds, seed), ("test", n_test_per_class, 1, seed + 20)):
        df = standardise(sample_paper(n, n, seed=s)).sample(frac=1.0, random_state=s).reset_index(drop=True)
        target = outdir / f"{name}.hdf5"
        quiet_df2foldfile(
            df2foldfile,
            fold_seed=s,
            df=df,
            n_folds=folds,
            cont_feats=FEATURES,
            cat_feats=[],
            targ_feats="gen_target",
            savename=str(outdir / name),  # contains a '/', as df2foldfile needs
            targ_type="int64",
            wgt_feat="gen_weight",
            strat_key="gen_target" if folds > 1 else None,
        )
        paths.append(target)
    return paths[0], paths[1]
