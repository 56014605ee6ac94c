"""Wall time of ONE neos training update on neos' own demo problem, for a side-by-side with our search step.

neos (https://github.com/gradhep/neos, PyPI ``neos`` 0.3.0) is JAX-based and cannot share ``.venv`` with
lumin_inferno; this script runs in its own virtual environment and does not import lumin_inferno.

The problem and pipeline are those of neos' ``demo.ipynb``: four 2-D Gaussian blobs (signal, nominal background,
background up / down for one histosys), 10 000 points each, a 75 % train split, ``--batch`` points of EACH of the
four samples per update; a stax MLP 2 → W → W → 1 with ReLU and a sigmoid output (the demo's W is 1024); soft
histograms (``relaxed.hist`` bKDE, bandwidth 0.09) on ``--bins`` bins whose inner edges are trained too; yields
scaled 2 (signal) / 10 (backgrounds) × lumi 10; a pyhf model (normfactor ``mu`` + one histosys); the neos loss
(``cls``: expected CLs of mu=1 against background-only Asimov data; ``discovery``: p-value of q0; ``poi_uncert``:
Cramér–Rao σ(mu)); its gradient through everything (the fits by implicit differentiation); one Adam step
(lr 1e-3), all as ``jaxopt.OptaxSolver(..., jit=True).update`` exactly as the demo does. float64, as the demo.

The released pyhf's ``Model`` constructor is not differentiable in the yields (the demo asks for a pyhf git branch,
``make_difffable_model_ctor``, that is not on PyPI), so the update uses the demo's own workaround, its
``hacked_pipeline``: a skeleton pyhf model built once, whose nominal rates and histosys interpolator are replaced
by the network's soft histograms inside the traced update.

One update = ``solver.update`` on a fresh batch + ``block_until_ready``. The first call (trace + XLA compile + run)
is timed separately and reported as the compile time; then ``--warmup`` untimed updates, then ``--repeats`` timed
ones (median, min, max). Each update is on the next batch of the demo's batch stream, so every timed update is a
real training step at the same shapes (no recompilation).

Environment (``pip install neos`` alone fails: neos 0.3.0 requires the withdrawn PyPI package ``sklearn``, whose
build aborts with "The 'sklearn' PyPI package is deprecated, use 'scikit-learn'"; and relaxed 0.3/0.4 changed the
``hypotest`` API that neos 0.3.0 calls, so relaxed is pinned to 0.2.2)::

    python3 -m venv /work/neosenv
    /work/neosenv/bin/pip install --no-deps neos==0.3.0 relaxed==0.2.2
    /work/neosenv/bin/pip install "jax[cpu]==0.10.2" pyhf==0.7.6 jaxopt==0.8.5 optax==0.2.8 celluloid matplotlib

(pip reports "neos 0.3.0 requires sklearn" and "relaxed 0.2.2 requires jsonschema<4.15.0" as conflicts; both are
harmless here: sklearn is only used by the demo notebook's train/test split, and pyhf 0.6.3, which the jsonschema
pin goes with, does not import with current jax: ``from jax.config import config`` fails.)

Known failure (as of these versions): ``cls`` and ``discovery`` do not run. Their profile fits
(``relaxed.mle._minimize``, jitted, ``jax.closure_convert`` + ``jaxopt.OptaxSolver(optax.adam(lr),
implicit_diff=True)``) leak tracers of the enclosing trace into the solver's custom-VJP trace (the leak checker
names the traced ``lr`` captured by ``optax.adam``):
jax 0.10.2 stops with ``TypeError: No constant handler for type: <class '...DynamicJaxprTracer'>``, jax 0.4.38 with
``TypeError: Argument 'Traced<ShapedArray(int64[1,1])>...' ... is not a valid JAX type``, jax 0.4.13 (jaxopt 0.8,
optax 0.1.7) with ``UnexpectedTracerError`` (the leaked value was created in ``optax ... _scale_by_learning_rate``).
No jaxlib older than 0.4.13 exists for Python 3.11 (the only Python here), so relaxed 0.2.2's own era
(jax 0.3.x) cannot be installed. Those objectives are printed as "failed" rows; ``poi_uncert`` (Cramér–Rao
σ(mu), no fit) runs.

Run (``--objectives`` any of cls discovery poi_uncert; ``--width 100`` gives our benchmarks' network width)::

    /work/neosenv/bin/python benchmarks/bench_neos.py [--objectives cls discovery poi_uncert] [--batch 2000]
        [--width 1024] [--bins 4] [--repeats 7] [--warmup 2] [--single-thread]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from copy import deepcopy
from functools import partial


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objectives", nargs="+", default=["cls", "discovery", "poi_uncert"],
                   choices=["cls", "discovery", "poi_uncert"])
    p.add_argument("--batch", type=int, default=2000, help="points of EACH of the 4 samples per update (demo: 2000)")
    p.add_argument("--width", type=int, default=1024, help="hidden width of the 2-hidden-layer MLP (demo: 1024)")
    p.add_argument("--bins", type=int, default=4, help="number of bins (demo: 4, inner edges trained)")
    p.add_argument("--fixed-bins", action="store_true", help="do not train the bin edges (demo trains them)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2, help="untimed updates after the compiling one")
    p.add_argument("--float32", action="store_true", help="leave jax_enable_x64 off (the demo turns it on)")
    p.add_argument("--single-thread", action="store_true",
                   help="one CPU thread for XLA (sets XLA_FLAGS before jax is imported); default: XLA's own")
    return p.parse_args()


def main() -> None:
    a = _parse()
    if a.single_thread:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import pyhf
    from jax.random import PRNGKey, multivariate_normal
    from jaxopt import OptaxSolver

    import neos
    import relaxed

    try:
        from jax.example_libraries import stax
    except ImportError:  # older jax, as in the demo
        from jax.experimental import stax

    jax.config.update("jax_enable_x64", not a.float32)
    pyhf.set_backend("jax")  # the skeleton model is built with numpy as pyhf's default backend (see below)

    # ---- data: neos demo's generate_data() and batch stream --------------------------------------------------
    def generate_data(rng=0, num_points=10000, sig_mean=(-1, 1), bup_mean=(2.5, 2), bdown_mean=(-2.5, -1.5),
                      b_mean=(1, -1)):
        cov = jnp.asarray([[1, 0], [0, 1]])
        return tuple(multivariate_normal(PRNGKey(rng), jnp.asarray(m), cov, shape=(num_points,))
                     for m in (sig_mean, b_mean, bup_mean, bdown_mean))  # sig, bkg_nom, bkg_up, bkg_down

    data = [np.asarray(d) for d in generate_data()]
    rs = np.random.RandomState(0)
    train = []
    for d in data:  # 75 / 25 split per sample, as sklearn's train_test_split in the demo
        perm = rs.permutation(len(d))
        train.append(d[perm[: int(0.75 * len(d))]])
    num_train = train[0].shape[0]
    if a.batch > num_train:
        sys.exit(f"--batch {a.batch} exceeds the {num_train} training points per sample")

    def batch_stream():
        rng = np.random.RandomState(0)
        while True:
            perm = rng.permutation(num_train)
            for i in range(num_train // a.batch):  # complete batches only: fixed shapes, no recompiles
                idx = perm[i * a.batch:(i + 1) * a.batch]
                yield [jnp.asarray(t[idx]) for t in train]

    batches = batch_stream()

    # ---- network: the demo's stax MLP ------------------------------------------------------------------------
    init_random_params, nn = stax.serial(stax.Dense(a.width), stax.Relu, stax.Dense(a.width), stax.Relu,
                                         stax.Dense(1), stax.Sigmoid)
    _, nn_init = init_random_params(PRNGKey(0), (-1, 2))
    n_params = sum(int(np.prod(p.shape)) for layer in nn_init for p in layer)

    # ---- the demo's hacked_pipeline: skeleton pyhf model, yields swapped in -----------------------------------
    data_types = ["sig", "bkg_nominal", "bkg_up", "bkg_down"]
    scales = {k: 2.0 if k == "sig" else 10.0 for k in data_types}

    def model_from_hists(hists):
        spec = {"channels": [{"name": "singlechannel", "samples": [
            {"name": "signal", "data": hists["sig"],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": hists["bkg_nominal"],
             "modifiers": [{"name": "correlated_bkg_uncertainty", "type": "histosys",
                            "data": {"hi_data": hists["bkg_up"], "lo_data": hists["bkg_down"]}}]},
        ]}]}
        return pyhf.Model(spec, validate=False)

    skeleton = model_from_hists({k: jnp.ones(a.bins) for k in data_types})  # as the demo
    # the traced update needs jax as pyhf's default backend too (the histosys interpolator is rebuilt from tracers);
    # the demo sets it before building the skeleton, which current jax refuses (jnp.concatenate of Python lists)
    pyhf.set_backend("jax", default=True)

    def hacked_pipeline(pars, data, nn, loss, bandwidth, sample_names, skeleton_model, scale_factors, bins=None,
                        lumi=10.0):
        data_dct = dict(zip(sample_names, data))
        hists = neos.hists_from_nn(pars=pars["nn_pars"], nn=nn, data=data_dct, bandwidth=bandwidth,
                                   bins=jnp.array([0, *pars["bins"], 1]) if "bins" in pars else bins,
                                   scale_factors=scale_factors, overall_scale=lumi)
        model = deepcopy(skeleton_model)
        interpcode = model.main_model.modifiers_appliers["histosys"].interpcode
        interp_maker = getattr(pyhf.interpolators, interpcode)
        nominal_rates = jnp.stack([hists["bkg_nominal"], hists["sig"]]).reshape(model.main_model.nominal_rates.shape)
        histoset = [[[hists["bkg_down"], hists["bkg_nominal"], hists["bkg_up"]], [hists["sig"]] * 3]]
        model.main_model.nominal_rates = nominal_rates
        model.main_model.modifiers_appliers["histosys"].interpolator = interp_maker(histoset)
        return neos.loss_from_model(model, loss=loss)

    bins = jnp.linspace(0, 1, a.bins + 1)
    rows = []
    for objective in a.objectives:
        # the objective is bound here (a string cannot be an argument of the jitted update)
        loss = partial(hacked_pipeline, nn=nn, loss=objective, bandwidth=9e-2, sample_names=data_types,
                       skeleton_model=skeleton, scale_factors=scales, bins=bins)
        solver = OptaxSolver(loss, opt=optax.adam(1e-3), jit=True)
        params = {"nn_pars": nn_init}
        if not a.fixed_bins:
            params["bins"] = bins[1:-1]
        state = solver.init_state(params, data=next(batches))

        def update(params, state):
            params, state = solver.update(params, state, data=next(batches))
            jax.block_until_ready((params, state))
            return params, state

        t0 = time.perf_counter()
        try:
            params, state = update(params, state)
        except Exception as e:  # noqa: BLE001 -- see the docstring: cls / discovery fail in relaxed 0.2.2's fits
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            rows.append((objective, None, f"{type(e).__name__}: {msg}"))
            print(f"# {objective}: FAILED: {type(e).__name__}: {msg}", file=sys.stderr, flush=True)
            continue
        first = time.perf_counter() - t0
        for _ in range(a.warmup):
            params, state = update(params, state)
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            params, state = update(params, state)
            times.append(time.perf_counter() - t0)
        t = 1e3 * np.asarray(times)
        rows.append((objective, first, np.median(t), t.min(), t.max(), float(state.value)))
        print(f"# {objective}: " + " ".join(f"{x:.1f}" for x in t) + " ms", file=sys.stderr, flush=True)

    print(f"neos={neos.__version__} relaxed={relaxed.__version__} pyhf={pyhf.__version__} jax={jax.__version__} "
          f"optax={optax.__version__} x64={not a.float32} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
          f"cpus={os.cpu_count()}")
    print(f"problem: neos demo, 4 samples (sig, bkg nom/up/down) x batch {a.batch} = {4 * a.batch} points/update; "
          f"MLP 2-{a.width}-{a.width}-1 ({n_params} params); {a.bins} bins "
          f"({'fixed' if a.fixed_bins else 'edges trained'}); 1 POI + 1 histosys nuisance; "
          f"{a.warmup} warm-up, {a.repeats} timed updates")
    print()
    print("| objective | batch / sample | network | bins | nuisances | first update incl. JIT (s) "
          "| ms / update (median) | min | max | loss after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for objective, first, *rest in rows:
        if first is None:
            print(f"| {objective} | {a.batch} | 2-{a.width}-{a.width}-1 | {a.bins} | 1 histosys | failed: {rest[0]} "
                  "| – | – | – | – |")
            continue
        med, lo, hi, val = rest
        print(f"| {objective} | {a.batch} | 2-{a.width}-{a.width}-1 | {a.bins} | 1 histosys | {first:.1f} "
              f"| {med:.1f} | {lo:.1f} | {hi:.1f} | {val:.4g} |")


if __name__ == "__main__":
    main()
