"""PivotCallback inside LUMIN's real fit loop, on the pivot toy's fold files."""

import contextlib
import io
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lumin.nn.callbacks.callback import Callback
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model import Model
from lumin.nn.models.model_builder import ModelBuilder
from lumin.nn.training.train import train_models

from lumin_inferno.callbacks.pivot import LambdaRamp, PivotCallback
from lumin_inferno.callbacks.adversary_training import standardise
from lumin_inferno.data.pivot_toy import NUISANCE, sample_pivot_toy, write_pivot_toy_foldfile
from lumin_inferno.exceptions import ConfigurationError, FoldFileError, TargetShapeError
from lumin_inferno.studies.pivot import evaluate_pivot, toy_model_builder


def _seed(s=0):
    torch.manual_seed(s)
    np.random.seed(s)  # LUMIN shuffles batches with numpy's global generator...
    random.seed(s)  # ...and the training folds with Python's


def _train(fy, builder, savepath, cb_partials, n_models=1, n_epochs=2, bs=128):
    savepath = Path(savepath)
    for i in range(n_models):
        (savepath / f"model_id_{i}").mkdir(parents=True, exist_ok=True)  # LUMIN `rm -r`s it first
    with contextlib.redirect_stdout(io.StringIO()):
        return train_models(fy, n_models=n_models, bs=bs, model_builder=builder, n_epochs=n_epochs,
                            cb_partials=cb_partials, savepath=savepath, live_fdbk=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: torch's intra-op threads only wait on each other (10x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_fy(tmp_path_factory):
    return FoldYielder(write_pivot_toy_foldfile(tmp_path_factory.mktemp("pivot") / "train", 2000, n_folds=3, seed=3))


class Recorder(Callback):
    """Records the training folds LUMIN visits, per epoch, and the validation fold."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def on_train_begin(self):
        super().on_train_begin()
        self.log.append({"val": self.model.fit_params.val_idx, "epochs": []})

    def on_epoch_begin(self):
        if self.model.fit_params.state == "train":
            self.log[-1]["epochs"].append([])

    def on_fold_begin(self):
        fp = self.model.fit_params
        if fp.state == "train":
            self.log[-1]["epochs"][-1].append(fp.trn_idx)

    def on_fold_end(self):  # after PivotCallback's: the (reused) validation BatchYielder never keeps the extra column
        assert self.model.fit_params.by.inputs.shape[1] == 2


# ---------------------------------------------------------------------------------------------- λ = 0 and λ > 0
@pytest.fixture(scope="module")
def trained(toy_fy, tmp_path_factory):
    """Plain LUMIN training, the callback at λ = 0, and the callback at λ = 10 after 2 + 2 pretraining epochs (same
    seeds, 12 epochs)."""
    out = tmp_path_factory.mktemp("trained")
    builder = toy_model_builder(toy_fy.cont_feats)
    runs = {}
    for name, cbs in (("plain", []), ("lam0", [0.0]), ("lam10", [10.0])):
        made = []

        def make(lam):
            n_pre = 2 if lam > 0 else 0
            c = PivotCallback(adv_targets=[NUISANCE], lam=lam, apply_to="background", adv_steps=5, adv_lr=5e-3,
                              n_pretrain_main=n_pre, n_pretrain_adv=n_pre)
            made.append(c)
            return c

        _seed(1)
        results, histories, _ = _train(toy_fy, builder, out / name, [partial(make, lam) for lam in cbs],
                                       n_epochs=12, bs=256)
        model = Model(builder)
        model.load(out / name / "model_id_0" / "train_0.h5")
        runs[name] = dict(model=model, history=histories[0][0], cb=made[0] if made else None, results=results)
    return runs


def test_lambda_zero_is_plain_training(trained):
    plain, lam0 = trained["plain"], trained["lam0"]
    for (k, a), (k2, b) in zip(plain["model"].model.state_dict().items(), lam0["model"].model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert plain["history"]["Training"] == lam0["history"]["Training"]
    assert plain["history"]["Validation"] == lam0["history"]["Validation"]
    cb = lam0["cb"]  # the adversary was trained alongside and learnt something about z (the model is not a pivot)
    assert len(cb.history["train_adv"]) == len(cb.history["train_main"]) > 0
    assert np.mean(cb.history["valid_adv"][-2:]) < cb.reference_nll_valid - 0.02


def test_positive_lambda_removes_the_dependence(trained):
    test = sample_pivot_toy(3000, 3000, seed=50)
    fixed = {z: sample_pivot_toy(3000, 3000, z=z, seed=51 + i) for i, z in enumerate((-1.0, 0.0, 1.0))}
    m0 = evaluate_pivot(lambda x: trained["plain"]["model"].predict(x), test, fixed)
    m10 = evaluate_pivot(lambda x: trained["lam10"]["model"].predict(x), test, fixed)
    # measured: dCor 0.09 vs 0.47, JS(∓σ‖0) 0.0012/0.0019 vs 0.025/0.023, KS 0.019/0.024 vs 0.13/0.13, AUC 0.78 vs 0.86
    assert m10["dcor"] < 0.4 * m0["dcor"]
    for z in ("-1", "+1"):
        assert m10[f"js_{z}"] < 0.25 * m0[f"js_{z}"] and m10[f"ks_{z}"] < 0.4 * m0[f"ks_{z}"]
    assert m10["auc"] > 0.7  # still a classifier (the paper's pivot trades some power for independence)
    assert m0["auc"] > m10["auc"]


def test_logged_loss_is_main_plus_lambda_dependence(trained):
    run = trained["lam10"]
    cb, valid = run["cb"], run["history"]["Validation"]
    assert np.allclose(valid, cb.history["valid_logged"])  # what LUMIN logs, SaveBest and the ensemble use
    main, adv = np.array(cb.history["valid_main"]), np.array(cb.history["valid_adv"])
    assert np.allclose(valid, main + 10.0 * np.maximum(cb.reference_nll_valid - adv, 0.0), rtol=1e-5)
    assert (np.array(valid) >= main - 1e-7).all() and (np.array(valid) > 0).all()
    assert run["results"][0]["loss"] == pytest.approx(min(valid))
    assert len(cb.history["pretrain_main"]) == len(cb.history["pretrain_adv"]) == 2
    assert cb.history["lam"] == [10.0] * 12
    assert len(cb.history["refresh_adv"]) == 12


# ---------------------------------------------------------------------------------------------- folds and alignment
def test_every_fold_once_per_epoch_across_models(toy_fy, tmp_path):
    log, instances = [], []

    def make():
        c = PivotCallback(adv_targets=[NUISANCE], lam=LambdaRamp(10.0, 2), n_pretrain_main=1, n_pretrain_adv=1,
                          adv_update_freq=1, adv_steps=2)
        instances.append(c)
        return c

    _seed(2)
    _train(toy_fy, toy_model_builder(toy_fy.cont_feats), tmp_path, [make, partial(Recorder, log)], n_models=3,
           n_epochs=3, bs=200)
    assert len(log) == 3 and sorted(r["val"] for r in log) == [0, 1, 2]  # each model validates on another fold
    for rec, cb in zip(log, instances):
        train_folds = sorted({0, 1, 2} - {rec["val"]})
        assert len(rec["epochs"]) == 3
        for visits in rec["epochs"]:
            assert sorted(visits) == train_folds  # no fold skipped or repeated
        assert cb.visited_folds == [i for e in rec["epochs"] for i in e]
        assert cb.history["lam"] == [5.0, 10.0, 10.0]
        assert len(cb.history["pretrain_main"]) == len(cb.history["pretrain_adv"]) == 1
    assert instances[0].adversary is not instances[1].adversary


def test_adversary_updates_every_k_batches(toy_fy, tmp_path):
    made = []

    def make():
        made.append(PivotCallback(adv_targets=[NUISANCE], lam=1.0, adv_update_freq=5, adv_steps=2, n_adv_refresh=0))
        return made[-1]

    _seed(5)
    _train(toy_fy, toy_model_builder(toy_fy.cont_feats), tmp_path, [make], n_epochs=2, bs=200)
    n_batches = len(made[0].history["train_main"])
    assert n_batches == 2 * 2 * (len(toy_fy.get_fold(0)["inputs"]) // 200)  # 2 epochs x 2 folds, drop_last
    assert made[0].n_adv_updates == n_batches // 5


class AlignmentCheck(PivotCallback):
    """In a fold file where the nuisance column is a copy of input x0, every batch's z must equal its x0 (LUMIN's
    batches and the callback's own pretraining batches: every split of the carried columns is checked)."""

    checked = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        split = self.trainer.columns.split

        def checked_split(x):
            inputs, z = split(x)
            assert inputs.shape[1] == 2 and torch.equal(z[:, 0], inputs[:, 0]) and torch.equal(inputs, x[:, :2])
            AlignmentCheck.checked += 1
            return inputs, z

        self.trainer.columns.split = checked_split

    def on_batch_begin(self):
        super().on_batch_begin()
        assert self.model.fit_params.x.shape[1] == 2  # the model sees its inputs only


@pytest.mark.parametrize("objective", ["classification", "multiclass"])
def test_adversary_targets_follow_lumin_shuffling(tmp_path, objective):
    from lumin.data_processing.file_proc import df2foldfile

    df = sample_pivot_toy(600, 600, seed=4)
    df["z"] = df["x0"] * 1.0  # continuous: a multiclass target (cast to long by LUMIN) could not carry it
    (tmp_path / "f.hdf5").touch()
    with contextlib.redirect_stdout(io.StringIO()):
        df2foldfile(df=df, n_folds=3, cont_feats=["x0", "x1"], cat_feats=[], targ_feats="gen_target",
                    savename=str(tmp_path / "f"), targ_type="int64", misc_feats=["z"], wgt_feat="gen_weight",
                    strat_key="gen_target")
    fy = FoldYielder(tmp_path / "f.hdf5")
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(objective=objective, n_out=1 if objective == "classification" else 2,
                               cont_feats=fy.cont_feats, cat_embedder=CatEmbedder([], []),
                               model_args={"body": {"width": 8, "depth": 1}})
    AlignmentCheck.checked = 0
    _seed(3)
    _train(fy, builder, tmp_path / "w", [partial(AlignmentCheck, adv_targets=["z"], lam=1.0, n_pretrain_main=1,
                                                 n_pretrain_adv=1)], n_epochs=2, bs=100)
    # 400 events a fold, bs 100: pretraining 2 x (2 folds x 4 batches); 2 epochs x (2 folds x 4 batches, twice with
    # the adversary's catch-up epoch, + 1 validation batch)
    assert AlignmentCheck.checked == 2 * 8 + 2 * (2 * 2 * 4 + 1)


# ---------------------------------------------------------------------------------------------- discrete, inert
def test_classifier_adversary_on_a_discrete_nuisance(tmp_path):
    from lumin.data_processing.file_proc import df2foldfile

    df = sample_pivot_toy(900, 900, seed=5)
    df["z_bin"] = (df["z"] > 0).astype(np.int64)  # two nuisance "variations"
    (tmp_path / "d.hdf5").touch()
    with contextlib.redirect_stdout(io.StringIO()):
        df2foldfile(df=df, n_folds=3, cont_feats=["x0", "x1"], cat_feats=[], targ_feats="gen_target",
                    savename=str(tmp_path / "d"), targ_type="float32", misc_feats=["z_bin", "z"],
                    wgt_feat="gen_weight", strat_key="gen_target")
    fy = FoldYielder(tmp_path / "d.hdf5")
    made = []

    def make():
        made.append(PivotCallback(adv_targets=["z_bin"], adversary="classifier", lam=5.0, apply_to="background",
                                  n_pretrain_main=3, n_pretrain_adv=10, adv_lr=1e-2))
        return made[-1]

    _seed(4)
    _train(fy, toy_model_builder(fy.cont_feats), tmp_path / "w", [make], n_epochs=2, bs=150)
    cb = made[0]
    assert cb.n_classes == 2 and cb.reference_nll == pytest.approx(np.log(2), abs=0.01)
    assert cb.adversary.n_classes == 2
    assert np.mean(cb.history["pretrain_adv"][-3:]) < cb.reference_nll - 0.02  # a plain output reveals sign(z)

    bad = PivotCallback(adv_targets=["z"], adversary="classifier")  # continuous values are no labels
    with pytest.raises(TargetShapeError, match="integer labels"):
        _train(fy, toy_model_builder(fy.cont_feats), tmp_path / "w2", [lambda: bad], n_epochs=1, bs=150)


def test_inert_at_prediction(toy_fy):
    model = Model(toy_model_builder(toy_fy.cont_feats))
    x = toy_fy.get_fold(0)["inputs"][:50]
    assert np.allclose(model.predict(x, cbs=[PivotCallback(adv_targets=[NUISANCE])]), model.predict(x))


# ---------------------------------------------------------------------------------------------- named errors
def test_configuration_errors():
    with pytest.raises(ConfigurationError, match=r"adv_targets=\['z'\]"):
        PivotCallback(adv_targets="z")
    with pytest.raises(ConfigurationError, match="adv_update_freq"):
        PivotCallback(adv_targets=["z"], adv_update_freq=0)
    with pytest.raises(ConfigurationError, match="adv_steps"):
        PivotCallback(adv_targets=["z"], adv_steps=0)
    with pytest.raises(ConfigurationError, match="n_pretrain_main"):
        PivotCallback(adv_targets=["z"], n_pretrain_main=-1)
    with pytest.raises(ConfigurationError, match="lam"):
        PivotCallback(adv_targets=["z"], lam=-1.0)
    with pytest.raises(ConfigurationError, match="adversary"):
        PivotCallback(adv_targets=["z"], adversary="gan")
    with pytest.raises(ConfigurationError, match="apply_to"):
        PivotCallback(adv_targets=["z"], apply_to="signal")
    with pytest.raises(ConfigurationError, match="one label column"):
        PivotCallback(adv_targets=["a", "b"], adversary="classifier")
    with pytest.raises(ConfigurationError, match="non-empty"):
        PivotCallback(adv_targets=[])


def test_missing_column_and_bad_batch_size(toy_fy, tmp_path):
    builder = toy_model_builder(toy_fy.cont_feats)
    with pytest.raises(FoldFileError, match="'nuisance' is not in fold"):
        _train(toy_fy, builder, tmp_path / "a", [partial(PivotCallback, adv_targets=["nuisance"])], n_epochs=1)
    with pytest.raises(ConfigurationError, match="larger than training fold"):
        _train(toy_fy, builder, tmp_path / "b", [partial(PivotCallback, adv_targets=[NUISANCE])], n_epochs=1,
               bs=100_000)
    sched = PivotCallback(adv_targets=[NUISANCE], lam=lambda epoch: -1.0)
    with pytest.raises(ConfigurationError, match="schedule"):
        _train(toy_fy, builder, tmp_path / "c", [lambda: sched], n_epochs=1)


def test_adversary_loss_pieces_by_hand():
    from lumin_inferno.models.adversary import MixtureDensityNetwork

    cb = PivotCallback(adv_targets=[NUISANCE])
    cb.adversary = MixtureDensityNetwork(n_in=1, n_components=2)
    s, z = torch.randn(6, 1), torch.randn(6, 1)
    w = torch.tensor([1.0, 2.0, 0.0, 1.0, 3.0, 1.0])
    per_event = cb.adversary.nll(s, z)
    assert torch.allclose(cb.adversary_nll(s, z, w), (w * per_event).sum() / w.sum())  # weighted mean
    assert torch.allclose(cb.adversary_nll(s, z), per_event.mean())
    st = standardise(3.0 * s + 7.0)  # an affine map of the output changes nothing the adversary sees
    assert torch.allclose(st, standardise(s), atol=1e-5)
    assert torch.allclose(st.mean(0), torch.zeros(1), atol=1e-6) and torch.allclose(st.std(0), torch.ones(1), atol=1e-4)

    p = torch.tensor([[0.1], [0.5], [0.9]])  # the model's objective decides the default adversary input
    assert torch.allclose(cb.trainer.input(p, "classification"), torch.log(p / (1 - p)), atol=1e-6)
    assert torch.equal(cb.trainer.input(p, "regression"), p)
