"""TemperatureSchedule inside LUMIN's fit loop."""

import contextlib
import io
from functools import partial
from pathlib import Path

import pytest
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.training.train import train_models

from lumin_inferno import ConfigurationError, InfernoCallback, SoftmaxTemperatureTail, TemperatureSchedule
from lumin_inferno.data import paper_benchmark


def test_temperature_is_annealed_per_epoch_and_seen_by_the_loss(paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(paper_foldfiles[0])
    schedules, infernos, taus_seen = [], [], []

    def make_schedule():
        schedules.append(TemperatureSchedule(start=1.0, end=0.1))
        return schedules[-1]

    class SpyInferno(InfernoCallback):  # records the tail's temperature at each training batch
        def on_forwards_end(self):
            if self.model.fit_params.state == "train":
                taus_seen.append(self.model.model[-1].temperature)
            super().on_forwards_end()

    def make_inferno():
        infernos.append(SpyInferno(paper_benchmark(2).analysis(6, kind="transform"), transform=paper_benchmark(2).transform()))
        return infernos[-1]

    with contextlib.redirect_stdout(io.StringIO()):
        train_models(fy, n_models=1, bs=500, model_builder=inferno_builder(fy.cont_feats), n_epochs=3,
                     cb_partials=[make_inferno, make_schedule], savepath=Path(tmp_path / "w"), live_fdbk=False)
    sched = schedules[0]
    assert sched.history == pytest.approx([1.0, 0.1**0.5, 0.1])  # geometric: 1, 0.316, 0.1
    assert sorted(set(taus_seen), reverse=True) == pytest.approx(sched.history)
    assert taus_seen == sorted(taus_seen, reverse=True)  # τ only goes down, epoch by epoch
    assert infernos[0].jacobian_used == "recorded"  # the recorded tangents read τ at every batch
    assert sched.model.model[-1].temperature == 0.1
    assert isinstance(sched.model.model[-1], SoftmaxTemperatureTail)


def test_bad_schedules():
    with pytest.raises(ConfigurationError, match="> 0"):
        TemperatureSchedule(start=0.0, end=0.1)
    assert TemperatureSchedule(2.0, 0.5).temperature(1, 1) == 2.0
    assert TemperatureSchedule(2.0, 0.5).temperature(5, 5) == pytest.approx(0.5)


def test_network_without_temperature_tail(paper_foldfiles, tmp_path):
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    fy = FoldYielder(paper_foldfiles[0])
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(objective="classification", n_out=1, cont_feats=fy.cont_feats,
                               cat_embedder=CatEmbedder([], []), model_args={"body": {"width": 8, "depth": 1}})
        with pytest.raises(ConfigurationError, match="exactly one SoftmaxTemperatureTail"):
            train_models(fy, n_models=1, bs=500, model_builder=builder, n_epochs=1,
                         cb_partials=[partial(TemperatureSchedule, start=1.0, end=0.1)],
                         savepath=Path(tmp_path / "w"), live_fdbk=False)
