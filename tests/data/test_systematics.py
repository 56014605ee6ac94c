"""Shifted systematics in LUMIN fold files: layout, event alignment, validation errors, atomic writes."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from lumin.nn.data.fold_yielder import FoldYielder

from lumin_inferno import FoldFileError
from lumin_inferno.data.systematics import (
    EVENT_ID,
    add_systematics_to_foldfile,
    read_fold_systematics,
    shifted_dataset_name,
    systematics_info,
    validate_systematics_foldfile,
    write_systematics_foldfile,
)

FEATS = ["a", "b", "c"]


def _nominal(n=600, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 3)).astype(np.float32), columns=FEATS)
    df["label"] = rng.integers(0, 3, n)
    df["weight"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return df


def _shift(df, col, delta, only_label=None):
    out = df.copy()
    rows = slice(None) if only_label is None else out["label"] == only_label
    out.loc[rows, col] = out.loc[rows, col] + delta
    return out


def _write(tmp_path, df, name="train", n_folds=3, inputs=None, weights=None):
    inputs = {"jes": (_shift(df, "a", 0.5, 0), _shift(df, "a", -0.5, 0))} if inputs is None else inputs
    weights = {"pdf": (df["weight"] * 1.1, df["weight"] * 0.8)} if weights is None else weights
    return write_systematics_foldfile(tmp_path / name, df, n_folds, FEATS, "label", inputs, weights,
                                      wgt_feat="weight", strat_key="label")


def test_layout_and_event_alignment_per_fold(tmp_path):
    df = _nominal()
    path = _write(tmp_path, df)
    assert path == (tmp_path / "train.hdf5").resolve() and sorted(p.name for p in tmp_path.iterdir()) == ["train.hdf5"]
    fy = FoldYielder(path)
    assert fy.n_folds == 3 and fy.cont_feats == FEATS  # still an ordinary LUMIN fold file
    info = validate_systematics_foldfile(fy)
    assert info.features == FEATS and info.input_systematics == ["jes"] and info.weight_systematics == ["pdf"]
    for i in range(3):
        fold, ids = fy.get_fold(i), fy.get_column(EVENT_ID, fold_idx=i)
        assert np.array_equal(fold["inputs"], df[FEATS].to_numpy()[ids])  # event_id = nominal row
        s = read_fold_systematics(fy, i)
        up, down = s.inputs["jes"]
        bkg0 = fold["targets"].reshape(-1) == 0
        assert np.allclose(up[:, 0] - fold["inputs"][:, 0], np.where(bkg0, 0.5, 0.0), atol=1e-6)
        assert np.allclose(down[:, 0] - fold["inputs"][:, 0], np.where(bkg0, -0.5, 0.0), atol=1e-6)
        assert np.array_equal(up[:, 1:], fold["inputs"][:, 1:])
        w_up, w_down = s.weights["pdf"]
        assert np.allclose(w_up, 1.1 * fold["weights"].reshape(-1)) and np.allclose(w_down, 0.8 * fold["weights"].reshape(-1))
    assert shifted_dataset_name("inputs", "up", "jes") in fy.columns()


def test_single_fold_test_file(tmp_path):
    df = _nominal(200)
    path = _write(tmp_path, df, name="test", n_folds=1)
    s = read_fold_systematics(path, 0)
    assert np.allclose(s.inputs["jes"][0][:, 0] - df["a"].to_numpy(), np.where(df["label"] == 0, 0.5, 0), atol=1e-6)
    df["run"] = np.arange(len(df)) % 7
    path = write_systematics_foldfile(tmp_path / "test2", df, 1, FEATS, "label", misc_feats=["run"])
    fy = FoldYielder(path)
    assert np.array_equal(fy.get_column("run", fold_idx=0), df["run"].to_numpy())
    assert systematics_info(fy).input_systematics == []


@pytest.mark.parametrize(
    "make_bad,match",
    [
        (lambda df: df.iloc[:-1], "not event-aligned"),
        (lambda df: df.sample(frac=1.0, random_state=1), "index differs"),
        (lambda df: df.assign(label=(df["label"] + 1) % 3), "column 'label' differs"),
        (lambda df: df.drop(columns=["b"]), r"missing feature column\(s\) \['b'\]"),
        (lambda df: df.assign(c=np.where(np.arange(len(df)) == 7, np.nan, df["c"])), "non-finite value in row 7"),
    ],
)
def test_misaligned_or_bad_shifted_inputs_are_named_and_nothing_is_written(tmp_path, make_bad, match):
    df = _nominal()
    with pytest.raises(FoldFileError, match=rf"systematic 'jes' \(up\).*{match}"):
        _write(tmp_path, df, inputs={"jes": (make_bad(_shift(df, "a", 0.5)), _shift(df, "a", -0.5))})
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left behind


def test_bad_shifted_weights(tmp_path):
    df = _nominal()
    with pytest.raises(FoldFileError, match=r"weight systematic 'pdf' \(down\).*not event-aligned"):
        _write(tmp_path, df, weights={"pdf": (df["weight"], df["weight"].to_numpy()[:-3])})
    with pytest.raises(FoldFileError, match="non-finite weight"):
        _write(tmp_path, df, weights={"pdf": (df["weight"] * np.nan, df["weight"])})


def test_reader_names_missing_systematic_and_fold(tmp_path):
    df = _nominal()
    path = _write(tmp_path, df)
    with h5py.File(path, "r+") as h5:
        del h5["fold_2"][shifted_dataset_name("inputs", "down", "jes")]
        h5["fold_1"][shifted_dataset_name("weights", "up", "pdf")][3] = np.nan
    with pytest.raises(FoldFileError, match=r"systematic 'jes': fold_2 .* has no 'shift_down_inputs_jes'"):
        validate_systematics_foldfile(path, weight_systematics=[])
    with pytest.raises(FoldFileError, match=r"weight systematic 'pdf': fold_1 up weights contain NaN"):
        read_fold_systematics(path, 1)
    with pytest.raises(FoldFileError, match="'unknown' is not an input systematic"):
        read_fold_systematics(path, 0, input_systematics=["unknown"])
    with pytest.raises(FoldFileError, match="has no fold_7"):
        read_fold_systematics(path, 7)


def test_reader_rejects_wrong_shape_and_feature_order(tmp_path):
    df = _nominal()
    path = _write(tmp_path, df)
    with h5py.File(path, "r+") as h5:
        key = shifted_dataset_name("inputs", "up", "jes")
        data = h5["fold_0"][key][()]
        del h5["fold_0"][key]
        h5["fold_0"].create_dataset(key, data=data[:-1])
    with pytest.raises(FoldFileError, match=r"systematic 'jes': fold_0 shifted up inputs have shape .* not event-aligned"):
        read_fold_systematics(path, 0)
    path2 = _write(tmp_path, df, name="other")
    with h5py.File(path2, "r+") as h5:
        meta = json.loads(h5["meta_data/systematics"][()])
        meta["features"] = ["b", "a", "c"]
        del h5["meta_data/systematics"]
        h5["meta_data"].create_dataset("systematics", data=json.dumps(meta))
    with pytest.raises(FoldFileError, match="feature order must match"):
        read_fold_systematics(path2, 0)


def test_plain_lumin_file_has_no_systematics(paper_foldfiles):
    with pytest.raises(FoldFileError, match="holds no shifted systematics"):
        systematics_info(paper_foldfiles[0])


def test_add_to_existing_file_atomically(tmp_path):
    df = _nominal()
    path = _write(tmp_path, df, weights={})
    before = path.read_bytes()
    # aligned by an event_id column in the frame (here given in reverse order)
    rev = _shift(df, "b", 1.0).assign(**{EVENT_ID: np.arange(len(df))}).iloc[::-1]
    with pytest.raises(FoldFileError, match="does not cover all"):
        add_systematics_to_foldfile(path, {"btag": (rev.iloc[:-1], rev)})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["train.hdf5"]
    add_systematics_to_foldfile(path, {"btag": (rev, _shift(df, "b", -1.0))}, {"pdf": (df["weight"] * 2, df["weight"])})
    info = systematics_info(path)
    assert info.input_systematics == ["jes", "btag"] and info.weight_systematics == ["pdf"]
    fy = FoldYielder(path)
    s = read_fold_systematics(fy, 1)
    x = fy.get_fold(1)["inputs"]
    assert np.allclose(s.inputs["btag"][0][:, 1], x[:, 1] + 1.0) and np.allclose(s.inputs["btag"][1][:, 1], x[:, 1] - 1.0)


def test_add_needs_event_ids(paper_foldfiles, tmp_path):
    import shutil

    path = tmp_path / "plain.hdf5"
    shutil.copyfile(paper_foldfiles[0], path)
    with pytest.raises(FoldFileError, match="fold_0 .* has no 'event_id' dataset"):
        add_systematics_to_foldfile(path, {"r": (np.zeros((10, 3)), np.zeros((10, 3)))})


def test_nan_in_nominal_features_is_named_and_nothing_written(tmp_path):
    df = _nominal()
    df.loc[5, "b"] = np.nan
    with pytest.raises(FoldFileError, match="nominal events: non-finite value in row 5, feature 'b'"):
        _write(tmp_path, df)
    assert list(tmp_path.iterdir()) == []


def test_validate_finds_a_shifted_copy_in_another_row_order(tmp_path):
    path = _write(tmp_path, _nominal())
    validate_systematics_foldfile(path)
    with h5py.File(path, "r+") as h5:
        for d in ("up", "down"):
            ds = h5["fold_1"][shifted_dataset_name("inputs", d, "jes")]
            ds[...] = ds[()][::-1]  # right shape, finite, but the rows of other events
    with pytest.raises(FoldFileError, match="systematic 'jes': fold_1 shifted inputs are not event-aligned"):
        validate_systematics_foldfile(path)


@pytest.mark.parametrize("content", [b"not an hdf5 file at all", b""])
def test_non_hdf5_or_truncated_file_is_named(tmp_path, content):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(content)
    with pytest.raises(FoldFileError, match="cannot be opened as HDF5"):
        validate_systematics_foldfile(bad)
    good = _write(tmp_path, _nominal())
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(FoldFileError, match="cannot be opened as HDF5"):
        read_fold_systematics(truncated, 0)
