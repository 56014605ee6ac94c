"""Ensembles of INFERNO members on a finished ``lumin-inferno paper-study`` output directory: each member's σ(s) on
the study's test file next to the alternatives of combining them (aligned mean with member 0 or the best-validation
member as reference, weights ∝ 1/σ²_val, the member of lowest validation hard σ, the members' joint bins merged
back into n_bins on the training file, :func:`~lumin_inferno.evaluation.merge_summaries`). Prints a Markdown table; Hessian
σ(s) (√(H⁻¹)ₛₛ, equal to the profile width to 0.01 event on these benchmarks).

    .venv/bin/python benchmarks/compare_ensembles.py OUTDIR [BENCHMARK ...]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from lumin_inferno.data.paper import SIGNAL_YIELD
from lumin_inferno.data.paper import paper_benchmark
from lumin_inferno.evaluation import event_bins
from lumin_inferno.evaluation.ensemble import AlignedEnsemble, align_ensemble, merge_summaries
from lumin_inferno.evaluation.templates import argmax_bins
from lumin_inferno.statistics import expected_poi_uncertainty
from lumin_inferno.studies.common import load_models, predict
from lumin_inferno.studies.paper import StudySettings, _evaluate, _model_builder


def main() -> None:
    from lumin_inferno.data.foldfiles import open_foldfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument("benchmarks", type=int, nargs="*", default=None)
    args = p.parse_args()
    out = Path(args.outdir)
    s = StudySettings(**json.loads((out / "settings.json").read_text()))
    fy = open_foldfile(out / "data" / "train.hdf5")
    test = open_foldfile(out / "data" / "test.hdf5").get_fold(0)
    reference = test["inputs"][:20_000]
    folds = [fy.get_fold(i) for i in range(fy.n_folds)]
    train = {c: np.concatenate([f[c] for f in folds]) for c in ("inputs", "targets", "weights")}
    print("| benchmark | members | validation hard σ | aligned mean (ref. 0) | aligned mean (ref. best val.) "
          "| weights ∝ 1/σ²_val | lowest validation σ | merged bins |")
    print("|---|---|---|---|---|---|---|---|")
    for k in args.benchmarks or s.benchmarks:
        dirs = sorted((out / "weights" / f"inferno_{k}").glob("model_id_*"), key=lambda d: int(d.name.split("_")[-1]))
        results = [{**json.loads((d / "member.json").read_text())["results"], "path": d} for d in dirs]
        models = load_models(results, _model_builder(s, fy, True))
        val = np.array([r["hard_sigma"] for r in results])

        def sigma(fn) -> float:
            return SIGNAL_YIELD * expected_poi_uncertainty(_evaluate(fn, test, s, k), method="hessian")

        fns = [lambda x, m=m: argmax_bins(predict(m, x)) for m in models]
        members = [sigma(fn) for fn in fns]
        bm = paper_benchmark(k)
        analysis = bm.analysis(s.n_bins, kind="transform")
        sample = [event_bins(analysis, fn, train["inputs"], train["targets"], train["weights"], bm.transform())
                  for fn in fns]
        merged = sigma(merge_summaries(analysis, fns, [s.n_bins] * len(fns), sample))
        best = int(np.argmin(val))
        ref0 = sigma(align_ensemble(models, reference, reference=0, bs=50_000))
        aligned = align_ensemble(models, reference, reference=best, bs=50_000)
        ref_best = sigma(aligned)
        w = val ** -2.0
        weighted = sigma(AlignedEnsemble(models, w / w.sum(), aligned.permutations, best, 50_000))
        print(f"| {k} | {', '.join(f'{v:.2f}' for v in members)} | {', '.join(f'{SIGNAL_YIELD * v:.2f}' for v in val)} "
              f"| {ref0:.2f} | {ref_best:.2f} | {weighted:.2f} | {members[best]:.2f} | {merged:.2f} |", flush=True)


if __name__ == "__main__":
    main()
