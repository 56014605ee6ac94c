"""The toy problem of *Learning to pivot* (Louppe, Kagan & Cranmer 2016, arXiv:1611.01046, section 5.1).

Two classes in x ∈ ℝ² and a continuous nuisance z ~ N(0, 1) that moves one class:

* signal (``gen_target`` = 1): x ~ N((0, 0), [[1, −0.5], [−0.5, 1]]), independent of z;
* background (``gen_target`` = 0): x ~ N((1, 1 + z), I).

(The paper's classes are Y = 0 and Y = 1 in that order; we call the z-independent one signal so that "adversary on
background only" is the physics case.) Every event carries its z, stored in the fold file as the extra column
``z`` (a ``misc_feats`` column of ``df2foldfile``) for the adversary; z is *not* an input of the classifier.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import pandas as pd

__all__ = ["TOY_FEATURES", "NUISANCE", "SIGNAL_COV", "sample_pivot_toy", "write_pivot_toy_foldfile"]

TOY_FEATURES: List[str] = ["x0", "x1"]
NUISANCE: str = "z"
SIGNAL_COV = np.array([[1.0, -0.5], [-0.5, 1.0]])


def sample_pivot_toy(
    n_signal: int,
    n_background: int,
    z: Optional[float] = None,
    z_sigma: float = 1.0,
    seed: Optional[int] = None,
) -> pd.DataFrame:
    """Draw events: columns x0, x1, z, gen_target (1 signal / 0 background), gen_weight (1), shuffled.

    ``z=None`` draws z ~ N(0, z_sigma) per event (training, inclusive tests); a number fixes z for every event (the
    output distribution at z = −σ, 0, +σ). Signal events get a z too (drawn the same way) though it does not act on
    them, so that "apply the adversary to all events" sees a z everywhere.
    """
    rng = np.random.default_rng(seed)
    n = n_signal + n_background
    zs = rng.normal(0.0, z_sigma, n) if z is None else np.full(n, float(z))
    sig = rng.multivariate_normal([0.0, 0.0], SIGNAL_COV, size=n_signal)
    bkg = rng.normal(size=(n_background, 2)) + np.column_stack(
        [np.ones(n_background), 1.0 + zs[n_signal:]]
    )
    df = pd.DataFrame(np.vstack([sig, bkg]).astype(np.float32), columns=TOY_FEATURES)
    df[NUISANCE] = zs.astype(np.float32)
    df["gen_target"] = np.concatenate([np.ones(n_signal), np.zeros(n_background)]).astype(np.int64)
    df["gen_weight"] = np.ones(n, dtype=np.float32)
    order = rng.permutation(n)
    return df.iloc[order].reset_index(drop=True)


def write_pivot_toy_foldfile(
    path: Union[str, Path],
    n_per_class: int = 25_000,
    n_folds: int = 5,
    seed: int = 11,
    z_sigma: float = 1.0,
) -> Path:
    """Write the toy with LUMIN's ``df2foldfile`` to ``path`` (``.hdf5`` added if missing): ``n_folds`` folds
    stratified on the class; inputs x0, x1; targets ``gen_target``; weights ``gen_weight``; extra column ``z``.
    Returns the file's path."""
    from lumin.data_processing.file_proc import df2foldfile

    path = Path(path).resolve()
    savename = str(path.with_suffix("")) if path.suffix == ".hdf5" else str(path)
    target = Path(savename + ".hdf5")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()  # df2foldfile shells out to `rm` first; give it something to remove, so it prints nothing
    df = sample_pivot_toy(n_per_class, n_per_class, z_sigma=z_sigma, seed=seed)
    # df2foldfile's StratifiedKFold(shuffle=True) draws from numpy's global generator: seed it for reproducible
    # folds, and give the caller's stream back afterwards
    state = np.random.get_state()
    np.random.seed(seed)
    with contextlib.redirect_stdout(io.StringIO()), _restore_numpy_state(state):
        df2foldfile(
            df=df,
            n_folds=n_folds,
            cont_feats=TOY_FEATURES,
            cat_feats=[],
            targ_feats="gen_target",
            savename=savename,  # absolute, so it contains the '/' df2foldfile needs
            targ_type="float32",
            misc_feats=[NUISANCE],
            wgt_feat="gen_weight",
            strat_key="gen_target",
        )
    return target


@contextlib.contextmanager
def _restore_numpy_state(state):
    try:
        yield
    finally:
        np.random.set_state(state)
