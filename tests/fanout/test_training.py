"""train_members: serial and Dask runs give the same members; finished members are kept and resumed; a killed
worker or a failing task is retried or named."""

import json
import os
import signal
import threading
import time
from functools import partial

import pytest

from lumin_inferno import ConfigurationError, FanOutError, InfernoCallback, train_members
from lumin_inferno.data import paper_benchmark
from lumin_inferno.callbacks.metrics import HardSigmaMetric
from lumin_inferno.fanout import connect, load_member

BM = paper_benchmark(2)


def _kwargs(foldfile, builder, savepath, **extra):
    analysis, transform = BM.analysis(n_bins=6, kind="transform"), BM.transform()
    kwargs = dict(foldfile=foldfile, builder=builder, n_models=2, bs=500, n_epochs=2, savepath=savepath,
                  cb_partials=[partial(InfernoCallback, analysis, transform=transform)],
                  metric_partials=[partial(HardSigmaMetric, analysis, transform=transform)], seed=3, torch_threads=1,
                  progress=False)
    kwargs.update(extra)
    return kwargs


def _builder(fy_path):
    import contextlib
    import io

    from lumin.nn.data.fold_yielder import FoldYielder
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    from lumin_inferno import SoftmaxTemperatureTail

    with contextlib.redirect_stdout(io.StringIO()):
        return ModelBuilder(objective="classification", n_out=6, cont_feats=FoldYielder(str(fy_path)).cont_feats,
                            cat_embedder=CatEmbedder([], []),
                            model_args={"body": {"width": 16, "depth": 2}, "tail": {"temperature": 0.1}},
                            tail=SoftmaxTemperatureTail, opt_args={"opt": "adam", "lr": 3e-3})


def _figures(results, histories):
    return [(r["loss"], r["hard_sigma"], list(h[1]["hard_sigma"])) for r, h in zip(results, histories)]


def test_serial_and_local_cluster_agree_through_a_killed_worker_and_resume(paper_foldfiles, tmp_path):
    train = paper_foldfiles[0]
    builder = _builder(train)
    ref = train_members(**_kwargs(train, builder, tmp_path / "serial", n_epochs=3))
    assert [r["path"].name for r in ref[0]] == ["model_id_0", "model_id_1"]
    for r in ref[0]:
        assert (r["path"] / f"train_{r['path'].name.split('_')[-1]}.h5").is_file()
        assert (r["path"] / "train.log").read_text().startswith("Training model")
        assert json.loads((r["path"] / "member.json").read_text())["seed"] in (3, 4)
    with connect(n_workers=2) as client:
        pids = list(client.run(os.getpid).values())

        def kill_one() -> None:
            time.sleep(3.0)  # both members are training by now
            os.kill(pids[0], signal.SIGKILL)

        threading.Thread(target=kill_one, daemon=True).start()
        dist = train_members(**_kwargs(train, builder, tmp_path / "dask", n_epochs=3), client=client)
        alive = list(client.run(os.getpid).values())
        client.cluster.close()
    assert pids[0] not in alive  # the worker was killed (its nanny started a new one) and its member retried
    assert _figures(*dist) == _figures(*ref)  # the same numbers, to the last digit
    assert not [p for p in (tmp_path / "dask").iterdir() if p.name.startswith(".")]  # nothing half-written left
    # a rerun loads the finished members instead of training them (their files are not touched)
    stamp = [os.stat(r["path"] / "member.json").st_mtime_ns for r in ref[0]]
    again = train_members(**_kwargs(train, builder, tmp_path / "serial", n_epochs=3))
    assert _figures(*again) == _figures(*ref)
    assert [os.stat(r["path"] / "member.json").st_mtime_ns for r in again[0]] == stamp


def test_a_failing_member_is_named_and_the_others_kept(paper_foldfiles, tmp_path):
    train = paper_foldfiles[0]
    builder = _builder(train)
    bad = _kwargs(train, builder, tmp_path / "bad")
    bad["cb_partials"] = [partial(InfernoCallback, paper_benchmark(2).analysis(n_bins=5, kind="transform"))]
    with pytest.raises(FanOutError, match="member 0"):
        train_members(**bad)
    assert load_member(tmp_path / "bad" / "model_id_0") is None
    assert not (tmp_path / "bad" / "model_id_0").exists()
    with pytest.raises(ConfigurationError, match="does not exist"):
        train_members(**_kwargs(tmp_path / "nowhere.hdf5", builder, tmp_path / "x"))


def test_unreachable_scheduler_is_named():
    with pytest.raises(ConfigurationError, match="tcp://127.0.0.1:1"):
        connect("tcp://127.0.0.1:1", timeout=2)


def test_forked_member_equals_one_started_from_scratch(paper_foldfiles, tmp_path, monkeypatch):
    """A member forked from the process server gives the numbers of one trained in a freshly started interpreter
    (``python -m lumin_inferno.fanout.member TASK.pkl``): the server's pre-imported state changes nothing. The
    fresh-interpreter path is also what ``train_members`` takes where CUDA is in use."""
    import pickle
    import subprocess
    import sys

    import lumin_inferno.fanout.training as training
    from lumin_inferno.fanout.training import MemberTask

    train = paper_foldfiles[0]
    builder = _builder(train)
    kw = _kwargs(train, builder, tmp_path / "forked", n_models=1)
    forked = train_members(**kw)
    task = MemberTask(str(train), builder, 0, 1, kw["bs"], kw["n_epochs"], str(tmp_path / "scratch"),
                      tuple(kw["cb_partials"]), tuple(kw["metric_partials"]), kw["seed"], 1, fingerprint="x")
    (tmp_path / "scratch").mkdir()
    with open(tmp_path / "task.pkl", "wb") as f:
        pickle.dump(task, f)
    subprocess.run([sys.executable, "-m", "lumin_inferno.fanout.member", str(tmp_path / "task.pkl")], check=True)
    scratch = load_member(tmp_path / "scratch" / "model_id_0")
    assert scratch is not None
    assert _figures([scratch[0]], [scratch[1]]) == _figures(*forked)
    monkeypatch.setattr(training, "_fork_safe", lambda: False)  # as with CUDA
    fresh = train_members(**_kwargs(train, builder, tmp_path / "fresh", n_models=1))
    assert _figures(*fresh) == _figures(*forked)


def test_a_dead_member_server_is_named_and_replaced(paper_foldfiles, tmp_path):
    from lumin_inferno.fanout.training import _MEMBER_SERVERS

    train = paper_foldfiles[0]
    builder = _builder(train)
    train_members(**_kwargs(train, builder, tmp_path / "warm", n_models=1, n_epochs=1))  # this thread's server is up
    server = _MEMBER_SERVERS._local.proc
    threading.Timer(1.0, server.kill).start()
    with pytest.raises(FanOutError, match="server .*died"):
        train_members(**_kwargs(train, builder, tmp_path / "killed", n_models=1, n_epochs=20))
    assert not (tmp_path / "killed" / "model_id_0").exists()
    again = train_members(**_kwargs(train, builder, tmp_path / "killed", n_models=1, n_epochs=1))  # a new server
    assert again[0][0]["path"].name == "model_id_0"
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]


class _ScriptCallback:  # stands for a callback class defined in the user's script
    pass


def test_callbacks_from_the_running_script_are_refused_with_a_reason(paper_foldfiles, tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(_ScriptCallback, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "_ScriptCallback", _ScriptCallback, raising=False)
    train = paper_foldfiles[0]
    kw = _kwargs(train, _builder(train), tmp_path / "m", n_models=1)
    kw["cb_partials"] = [partial(_ScriptCallback)]
    with pytest.raises(ConfigurationError, match="__main__.*importable module"):
        train_members(**kw)
    assert not (tmp_path / "m" / "model_id_0").exists()
