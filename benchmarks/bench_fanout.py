"""Wall time of training an INFERNO ensemble: LUMIN's ``train_models`` in this process, ``train_members`` one member
after the other (each its own process, forked from the member server), and ``train_members`` on a 2-worker
``LocalCluster``; the overhead per member is the difference to ``train_models`` over the number of members. Prints a
Markdown table.

    .venv/bin/python benchmarks/bench_fanout.py [--n-models 4] [--epochs 5] [--n-train 20000]
"""

import argparse
import contextlib
import io
import tempfile
import time
from functools import partial
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-models", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--n-train", type=int, default=20_000, help="training events per class")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    from lumin.nn.data.fold_yielder import FoldYielder
    from lumin.nn.training.train import train_models

    from lumin_inferno import HardSigmaMetric, InfernoCallback, TemperatureSchedule, train_members
    from lumin_inferno.data import paper_benchmark
    from lumin_inferno.data import write_paper_foldfiles
    from lumin_inferno.fanout import connect
    from lumin_inferno.studies.common import seed_everything
    from lumin_inferno.studies.paper import StudySettings, _model_builder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, _ = write_paper_foldfiles(tmp / "data", args.n_train, 1000, n_folds=max(5, args.n_models), seed=1)
        fy = FoldYielder(str(train))
        builder = _model_builder(StudySettings(), fy, True)
        bm = paper_benchmark(2)
        analysis, transform = bm.analysis(10, kind="transform"), bm.transform()
        cbs = [partial(InfernoCallback, analysis, transform=transform), partial(TemperatureSchedule, start=1.0, end=0.1)]
        metrics = [partial(HardSigmaMetric, analysis, transform=transform)]
        common = dict(bs=2000, cb_partials=cbs, metric_partials=metrics)
        rows = []

        seed_everything(0)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            train_models(fy, n_models=args.n_models, model_builder=builder, n_epochs=args.epochs,
                         savepath=tmp / "lumin", live_fdbk=False, **common)
        base = time.perf_counter() - t0
        rows.append(("LUMIN train_models, this process", base))

        t0 = time.perf_counter()
        train_members(train, builder, args.n_models, n_epochs=args.epochs, savepath=tmp / "serial", progress=False,
                      **common)
        rows.append(("train_members, serial (a forked process per member)", time.perf_counter() - t0))

        with connect(n_workers=args.workers) as client:
            t0 = time.perf_counter()
            train_members(train, builder, args.n_models, n_epochs=args.epochs, savepath=tmp / "dask",
                          progress=False, client=client, torch_threads=1, **common)
            rows.append((f"train_members, LocalCluster {args.workers} workers × 1 thread", time.perf_counter() - t0))
            client.cluster.close()

    print(f"{args.n_models} INFERNO members (paper benchmark 2), {args.epochs} epochs, {2 * args.n_train} training "
          "events; the floor is LUMIN's own loop in this process")
    print("| how | wall s | / train_models | overhead per member s |")
    print("|---|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.1f} | {sec / base:.2f} | {(sec - base) / args.n_models:+.1f} |")


if __name__ == "__main__":
    main()
