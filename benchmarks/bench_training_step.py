"""Time and peak memory of one LUMIN training step: INFERNO vs cross-entropy, same network and batch.

All steps go through LUMIN's own ``Model._fit_batch`` (forward, loss, backward, optimiser step); the INFERNO steps
use ``InfernoCallback`` for the paper's benchmark 4 (shape nuisances r and λ, constrained background b: 1 POI + 3
nuisances), once with the default Jacobian (``--jacobian``, default ``auto`` = recorded tangents) and once with the
generic ``jacobian="forward"`` for comparison. A third INFERNO column, the *tangent floor*, is the same step with
the likelihood replaced by a fixed linear function of the soft histograms' inputs (the softmax outputs and their
nuisance tangents): the network work of exact INFERNO alone (forward, the two shape nuisances' tangents, the
backward through both, the optimiser step), which no implementation of the loss can go below. Each batch size is
timed on the initial networks and again after ``--warm-steps`` training steps at τ = 1 (where the paper study's
annealing starts), timed at τ = 0.1: then the softmax has saturated and its tails hold denormal numbers, as in a
trained model (the column "denormals kept" is INFERNO with ``flush_denormals=False``). Timings are medians over
repeats, interleaved so that machine noise hits all alike; the figures to quote are the ratios.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over one step; on the CPU (Linux), the growth of the
process's peak resident set over the first step, in a fresh subprocess per kind of step (high-water mark reset
through /proc/self/clear_refs; coarse, but real memory).

    .venv/bin/python benchmarks/bench_training_step.py [--device cuda] [--batches 500 2000 8000] [--repeats 30]
        [--warm-steps 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time

import numpy as np
import torch
from lumin.nn.models.abs_model import FitParams
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model import Model
from lumin.nn.models.model_builder import ModelBuilder

from lumin_inferno import InfernoCallback, SoftmaxTemperatureTail
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data.paper import FEATURES, sample_paper, standardise


def _models(device: str):
    with contextlib.redirect_stdout(io.StringIO()):
        common = dict(cont_feats=FEATURES, cat_embedder=CatEmbedder([], []), opt_args={"opt": "adam", "lr": 1e-3})
        ce = ModelBuilder(objective="classification", n_out=1, model_args={"body": {"width": 100, "depth": 2}}, **common)
        inf = ModelBuilder(
            objective="classification",
            n_out=10,
            tail=SoftmaxTemperatureTail,
            model_args={"body": {"width": 100, "depth": 2}, "tail": {"temperature": 0.1}},
            **common,
        )
        return Model(ce), Model(inf)


def _step_fn(model: Model, cbs, loss_func, x, y, w):
    model.fit_params = FitParams(cbs=cbs, state="train", loss_func=loss_func, opt=model.opt)
    for c in cbs:
        c.set_model(model)
        c.on_train_begin()  # as LUMIN's fit does: the INFERNO callback sets up its Jacobian mode here
    model.model.train()

    def step():
        model._fit_batch(x, y, w)

    return step


def _time(step, device: str, repeats: int) -> list:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_step_memory(kind: str, bs: int, jacobian: str) -> float:
    """Peak-RSS growth (MiB) of the first ``kind`` step, measured in a fresh subprocess so that no memory cached by
    earlier steps hides it: the kernel's high-water mark is reset by writing 5 to /proc/self/clear_refs (Linux ≥ 4.0)
    after the model and batch are built, and read back as VmHWM."""
    cmd = [sys.executable, __file__, "--_rss", kind, "--batches", str(bs), "--jacobian", jacobian]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _rss_child(kind: str, bs: int, jacobian: str) -> None:
    step = _steps("cpu", bs, jacobian)[kind]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS")
    step()
    print(_status_mib("VmHWM") - before)


def _peak_memory(step, device: str) -> float:
    if device != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


class _TangentFloor(InfernoCallback):
    """INFERNO's network work with a free loss: Σ c₁·p + Σ c₂·∂p/∂θ over fixed random c (recorded tangents)."""

    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        t_out = self._jac.output_tangents()
        if not hasattr(self, "_c"):
            g = torch.Generator(device=fp.y_pred.device).manual_seed(0)
            self._c = (torch.randn(fp.y_pred.shape, generator=g, device=fp.y_pred.device),
                       torch.randn(t_out.shape, generator=g, device=fp.y_pred.device))
        fp.loss_val = (self._c[0] * fp.y_pred).sum() + (self._c[1] * t_out).sum()


def _batch(bs: int, seed: int, device: str):
    df = standardise(sample_paper(bs, bs, seed=seed)).sample(n=bs, random_state=seed)
    x = torch.tensor(df[FEATURES].values, device=device)
    y = torch.tensor(df.gen_target.values, dtype=torch.float32, device=device)[:, None]
    return x, y, torch.ones(bs, 1, device=device)


def _steps(device: str, bs: int, jacobian: str, warm_steps: int = 0) -> dict:
    """The step functions, all on one batch; with ``warm_steps``, both networks are first trained that many steps
    on fresh batches, so that the timings see a trained network (a saturated softmax) rather than the initial one."""
    x, y, w = _batch(bs, 1, device)
    ce, inf = _models(device)
    bce = torch.nn.BCELoss()
    bm = paper_benchmark(4)
    n_bins = int(inf.get_out_size())
    kw = {"analysis": bm.analysis(n_bins, kind="transform"), "transform": bm.transform()}
    if warm_steps:
        batches = [_batch(bs, 100 + i, device) for i in range(20)]
        tail = inf.model[-1]
        tau, tail.temperature = tail.temperature, 1.0  # as the paper study's annealing starts (τ 1.0 → 0.1)
        for model, cbs, loss in ((ce, [], bce), (inf, [InfernoCallback(**kw)], None)):
            _step_fn(model, cbs, loss, x, y, w)  # LUMIN's fit set-up
            for i in range(warm_steps):
                model._fit_batch(*batches[i % len(batches)])
        tail.temperature = tau
    copies = {}
    for name in ("no_flush", "generic", "floor"):
        copies[name] = Model(inf.model_builder)
        copies[name].model.load_state_dict(inf.model.state_dict())
    return {
        "ce": _step_fn(ce, [], bce, x, y, w),
        "inferno": _step_fn(inf, [InfernoCallback(jacobian=jacobian, **kw)], None, x, y, w),
        "no_flush": _step_fn(
            copies["no_flush"], [InfernoCallback(jacobian=jacobian, flush_denormals=False, **kw)], None, x, y, w
        ),
        "generic": _step_fn(copies["generic"], [InfernoCallback(jacobian="forward", **kw)], None, x, y, w),
        "floor": _step_fn(copies["floor"], [_TangentFloor(jacobian="recorded", **kw)], None, x, y, w),
    }


def run(device: str, batches, repeats: int, jacobian: str, warm_steps: int) -> list:
    rows = []
    for bs in batches:
        for warm in (0, warm_steps) if warm_steps else (0,):
            steps = _steps(device, bs, jacobian, warm)
            for s in steps.values():  # warm-up
                _time(s, device, 3)
            times = {k: [] for k in steps}
            for _ in range(repeats):  # interleave
                for k, s in steps.items():
                    times[k] += _time(s, device, 1)
            kinds = ("ce", "inferno", "generic")
            if warm:  # memory does not depend on the training state: measured once per batch size
                mem = {k: float("nan") for k in kinds}
            elif device == "cuda":
                mem = {k: _peak_memory(steps[k], device) for k in kinds}
            else:
                mem = {k: _cpu_step_memory(k, bs, jacobian) for k in kinds}
            t = {k: np.median(v) * 1e3 for k, v in times.items()}
            ratio = {k: t[k] / t["ce"] for k in t}
            rows.append(dict(bs=bs, state=f"trained {warm} steps" if warm else "initial", t=t, ratio=ratio, mem=mem))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[500, 2000, 8000])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warm-steps", type=int, default=1000,
                   help="also time networks trained this many steps (saturated softmax); 0: initial networks only")
    p.add_argument("--jacobian", default="auto", choices=["auto", "recorded", "forward", "reverse"])
    p.add_argument("--_rss", default=None, help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    a = p.parse_args()
    if a._rss:
        _rss_child(a._rss, a.batches[0], a.jacobian)
        return
    print(f"device={a.device} torch={torch.__version__} threads={torch.get_num_threads()} jacobian={a.jacobian}")
    mem = "peak MiB" if a.device == "cuda" else "peak-RSS growth MiB"
    print(f"| batch | network | CE step (ms) | INFERNO step (ms) | INFERNO / CE | INFERNO, denormals kept / CE "
          f"| generic-Jacobian INFERNO / CE | tangent floor / CE | CE {mem} | INFERNO {mem} | generic INFERNO {mem} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "" if v != v else f"{v:.1f}"  # noqa: E731  (nan: not measured)
    for r in run(a.device, a.batches, a.repeats, a.jacobian, a.warm_steps):
        t, q, m = r["t"], r["ratio"], r["mem"]
        print(f"| {r['bs']} | {r['state']} | {t['ce']:.2f} | {t['inferno']:.2f} | {q['inferno']:.2f} | "
              f"{q['no_flush']:.2f} | {q['generic']:.2f} | {q['floor']:.2f} | {fmt(m['ce'])} | {fmt(m['inferno'])} | "
              f"{fmt(m['generic'])} |")


if __name__ == "__main__":
    main()
