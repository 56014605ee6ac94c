"""Cost of an approximate-INFERNO step with tens of systematics, against a cross-entropy step and against its floor.

A synthetic analysis (signal + three backgrounds, 8 features) with ``K_shape`` shifted-input systematics (each
scales one feature of 1–4 processes by ±3 %, stored as ±1σ copies in a LUMIN fold file) and ``K_weight``
event-weight systematics (up/down weight columns), plus two normalisations and MC statistics. Every step goes
through LUMIN's ``Model._fit_batch`` (forward, loss, backward, Adam step) on the same batch:

* **CE**: a multi-class cross-entropy step of the same network body (4 classes);
* **INFERNO**: ``ApproxInfernoCallback`` on the analysis (soft templates of every process and systematic, Fisher
  information, generalised variance of the POI block);
* **floor**: the network work the loss needs and nothing else: the nominal forward, one forward of the shifted
  copies of exactly the rows each systematic affects (both directions, all systematics batched, as the callback
  does), a fixed linear function of all outputs as the loss, its backward and the optimiser step. No
  implementation of the approximate-INFERNO loss can do less network work.

Marginal cost per systematic = slope of the step time in K (least squares over the K values), for each kind. The
figures to quote are the ratios (this machine is shared): INFERNO / CE, INFERNO / floor, and the marginal costs
as fractions of a CE step and of the floor's own marginal cost.

    .venv/bin/python benchmarks/bench_analysis_step.py [--batches 2000 8000] [--k-shape 1 5 20 50]
        [--k-weight 0 20 50] [--k-norm 0 20 50] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lumin.nn.data.batch_yielder import BatchYielder
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.abs_model import FitParams
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model import Model
from lumin.nn.models.model_builder import ModelBuilder

from lumin_inferno import Analysis, ApproxInfernoCallback, NormFactor, Objective, Process, SoftmaxTemperatureTail, Systematic
from lumin_inferno.data.systematics import write_systematics_foldfile

FEATURES = [f"x{i}" for i in range(8)]
PROCESSES = ("signal", "bkg_a", "bkg_b", "bkg_c")
YIELDS = (50.0, 1000.0, 600.0, 300.0)
N_BINS = 10


def _analysis(k_shape: int, k_weight: int, k_norm: int = 0) -> Analysis:
    rng = np.random.default_rng(0)
    systs = []
    for k in range(k_shape):
        procs = tuple(sorted(rng.choice(PROCESSES, size=rng.integers(1, 5), replace=False)))
        systs.append(Systematic(f"shape_{k}", "inputs", procs))
    for k in range(k_weight):
        procs = tuple(sorted(rng.choice(PROCESSES, size=rng.integers(1, 3), replace=False)))
        systs.append(Systematic(f"weight_{k}", "weights", procs))
    systs += [Systematic("lumi", "norm", PROCESSES, kappa_up=1.025), Systematic("xs_b", "norm", ("bkg_b",), kappa_up=1.1)]
    for k in range(k_norm):
        procs = tuple(sorted(rng.choice(PROCESSES, size=rng.integers(1, 3), replace=False)))
        systs.append(Systematic(f"norm_{k}", "norm", procs, kappa_up=float(1.02 + 0.1 * rng.random())))
    return Analysis(
        processes=tuple(Process(p, y, labels=(i,), role="signal" if i == 0 else "background")
                        for i, (p, y) in enumerate(zip(PROCESSES, YIELDS))),
        factors=(NormFactor("mu", ("signal",)), NormFactor("k_a", ("bkg_a",), poi=False)),
        systematics=tuple(systs), n_bins=N_BINS, objective=Objective("generalised_variance"))


def _foldfile(directory: Path, analysis: Analysis, n_per_fold: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    n = 2 * n_per_fold
    labels = rng.integers(0, len(PROCESSES), n)
    x = rng.normal(labels[:, None] * 0.3, 1.0, size=(n, len(FEATURES))).astype(np.float32)
    df = pd.DataFrame(x, columns=FEATURES).assign(target=labels, weight=np.asarray(YIELDS)[labels] / n)
    shifted, weights = {}, {}
    for i, s in enumerate(analysis.systematics):
        hit = np.isin(labels, [PROCESSES.index(p) for p in s.processes])
        f = FEATURES[i % len(FEATURES)]
        if s.kind == "inputs":
            up, down = df.copy(), df.copy()
            up.loc[hit, f] *= 1.03
            down.loc[hit, f] *= 0.97
            shifted[s.name] = (up, down)
        elif s.kind == "weights":
            g = 0.05 * np.tanh(df[f].to_numpy())
            w = df["weight"].to_numpy()
            weights[s.name] = (np.where(hit, w * (1 + g), w), np.where(hit, w * (1 - g), w))
    return write_systematics_foldfile(directory / "bench", df, 2, FEATURES, "target", shifted, weights,
                                      wgt_feat="weight")


def _builders():
    with contextlib.redirect_stdout(io.StringIO()):
        common = dict(cont_feats=FEATURES, cat_embedder=CatEmbedder([], []), opt_args={"opt": "adam", "lr": 1e-3})
        ce = ModelBuilder(objective="multiclass", n_out=len(PROCESSES), model_args={"body": {"width": 100, "depth": 2}},
                          **common)
        inf = ModelBuilder(objective="classification", n_out=N_BINS, tail=SoftmaxTemperatureTail,
                           model_args={"body": {"width": 100, "depth": 2}, "tail": {"temperature": 0.1}}, **common)
    return ce, inf


class _Floor(ApproxInfernoCallback):
    """The callback's network work with a free loss: Σ c·p over the nominal outputs and the outputs of every
    systematic's shifted rows (both directions), all in one batched forward."""

    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        shifted = self.shifted_outputs(fp.x)
        outs = [fp.y_pred] + [o for pair in shifted.values() for o in pair[1]]
        flat = torch.cat(outs)
        if not hasattr(self, "_c") or self._c.shape != flat.shape:
            g = torch.Generator(device=flat.device).manual_seed(0)
            self._c = torch.randn(flat.shape, generator=g, device=flat.device)
        fp.loss_val = (self._c * flat).sum()


def _step(model: Model, cb, fy: FoldYielder, bs: int, loss_func=None):
    """A ``_fit_batch`` closure on fold 0's first batch, set up as ``Model.fit`` does."""
    np.random.seed(0)
    by = BatchYielder(**fy.get_fold(0), bs=bs, objective=model.objective, shuffle=True)
    model.fit_params = FitParams(cbs=[] if cb is None else [cb], state="train", fy=fy, trn_idx=0, trn_idxs=[0],
                                 val_idx=1, bs=bs, by=by, loss_func=loss_func, opt=model.opt)
    model.model.train()
    if cb is not None:
        cb.set_model(model)
        cb.on_train_begin()
        cb.on_fold_begin()
    x, y, w = next(iter(model.fit_params.by))
    if loss_func is not None:
        y = y.long().reshape(-1)  # LUMIN's multiclass targets
    return lambda: model._fit_batch(x, y, w)


def _steps(directory: Path, bs: int, k_shape: int, k_weight: int, k_norm: int = 0) -> dict:
    a = _analysis(k_shape, k_weight, k_norm)
    fy = FoldYielder(_foldfile(directory / f"{bs}_{k_shape}_{k_weight}_{k_norm}", a, bs))
    ce_b, inf_b = _builders()
    torch.manual_seed(0)
    ce, inf, floor = Model(ce_b), Model(inf_b), Model(inf_b)
    floor.model.load_state_dict(inf.model.state_dict())
    from lumin.nn.losses.basic_weighted import WeightedCCE

    return {"ce": _step(ce, None, fy, bs, WeightedCCE()), "inferno": _step(inf, ApproxInfernoCallback(a), fy, bs),
            "floor": _step(floor, _Floor(a), fy, bs)}


def _time(step, repeats: int, device: str) -> float:
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def _peak_child(bs: int, k_shape: int, k_weight: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        step = _steps(Path(tmp), bs, k_shape, k_weight)["inferno"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark after the set-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        print(hwm / 1024, before / 1024)


def peak_memory_mib(bs: int, k_shape: int, k_weight: int) -> float:
    """Peak resident memory (MiB) of one INFERNO step in a fresh process (VmHWM after a reset)."""
    cmd = [sys.executable, __file__, "--_peak", str(bs), str(k_shape), str(k_weight)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[2000, 8000])
    p.add_argument("--k-shape", type=int, nargs="+", default=[1, 5, 20, 50])
    p.add_argument("--k-weight", type=int, nargs="+", default=[0, 20, 50])
    p.add_argument("--k-norm", type=int, nargs="+", default=[0, 20, 50],
                   help="extra normalisation systematics, swept at the smallest K_shape and K_weight")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--_peak", type=int, nargs=3, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._peak:
        _peak_child(*a._peak)
        return
    torch.manual_seed(0)
    print(f"device={a.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print("| batch | K_shape | K_weight | CE step (ms) | INFERNO (ms) | floor (ms) | INFERNO / CE | INFERNO / floor |")
    print("|---|---|---|---|---|---|---|---|")
    results, norm_results = {}, {}

    def measure(tmp: str, bs: int, ks: int, kw: int, kn: int = 0) -> dict:
        steps = _steps(Path(tmp), bs, ks, kw, kn)
        for s in steps.values():
            _time(s, 2, a.device)  # warm-up
        t = {k: [] for k in steps}
        for _ in range(a.repeats):  # interleaved, so machine noise hits all alike
            for k, s in steps.items():
                t[k].append(_time(s, 1, a.device))
        t = {k: 1e3 * float(np.median(v)) for k, v in t.items()}
        print(f"| {bs} | {ks} | {kw}{f' (+{kn} norm)' if kn else ''} | {t['ce']:.1f} | {t['inferno']:.1f} | "
              f"{t['floor']:.1f} | {t['inferno'] / t['ce']:.2f} | {t['inferno'] / t['floor']:.2f} |", flush=True)
        return t

    with tempfile.TemporaryDirectory() as tmp:
        for bs in a.batches:
            for kw in a.k_weight:
                for ks in a.k_shape:
                    results[(bs, ks, kw)] = measure(tmp, bs, ks, kw)
            for kn in a.k_norm:
                norm_results[(bs, kn)] = measure(tmp, bs, min(a.k_shape), min(a.k_weight), kn)
    print("\nMarginal cost per systematic (least-squares slope in K; as a fraction of a CE step, and INFERNO's slope "
          "over the floor's):")
    print("| batch | kind | INFERNO ms / syst | floor ms / syst | INFERNO slope / CE step | INFERNO slope / floor slope |")
    print("|---|---|---|---|---|---|")
    for bs in a.batches:
        ce = np.median([t["ce"] for (b, _, _), t in results.items() if b == bs])
        for kind, ks_list, fixed in (("shifted inputs", a.k_shape, min(a.k_weight)), ("weights", a.k_weight, min(a.k_shape))):
            keys = [(bs, k, fixed) if kind == "shifted inputs" else (bs, fixed, k) for k in ks_list]
            if len(keys) < 2:
                continue
            slope = {c: np.polyfit(ks_list, [results[k][c] for k in keys], 1)[0] for c in ("inferno", "floor")}
            ratio = slope["inferno"] / slope["floor"] if abs(slope["floor"]) > 1e-3 else float("nan")
            print(f"| {bs} | {kind} | {slope['inferno']:.2f} | {slope['floor']:.2f} | {slope['inferno'] / ce:.3f} | "
                  f"{ratio:.2f} |")
        if len(a.k_norm) > 1:  # a normalisation needs no network work: the floor does not change with K_norm
            slope = np.polyfit(a.k_norm, [norm_results[(bs, k)]["inferno"] for k in a.k_norm], 1)[0]
            print(f"| {bs} | normalisations | {slope:.3f} | – | {slope / ce:.4f} | – |")
    if Path("/proc/self/clear_refs").exists():
        big = (max(a.batches), max(a.k_shape), min(a.k_weight))
        print(f"\npeak resident memory of one INFERNO step at batch {big[0]}, K_shape = {big[1]}, K_weight = {big[2]}: "
              f"{peak_memory_mib(*big):.0f} MiB (whole process, fresh)")


if __name__ == "__main__":
    main()
