"""±1σ shifted inputs (and up/down event weights) of systematics, stored in LUMIN fold files next to the nominal.

Layout (one HDF5 fold file, as written by LUMIN's ``df2foldfile``, plus the datasets marked *new*)::

    fold_<i>/inputs                       LUMIN: float32 [n_i, n_features], nominal inputs (cont_feats + cat_feats)
    fold_<i>/targets, fold_<i>/weights    LUMIN: process labels, nominal event weights
    fold_<i>/event_id                     new:   int64 [n_i], row of the event in the nominal DataFrame
    fold_<i>/shift_up_inputs_<name>       new:   float32 [n_i, n_features], inputs with systematic <name> at +1σ
    fold_<i>/shift_down_inputs_<name>     new:   float32 [n_i, n_features], ... at −1σ
    fold_<i>/shift_up_weights_<name>      new:   float32 [n_i], event weights with weight systematic <name> at +1σ
    fold_<i>/shift_down_weights_<name>    new:   float32 [n_i], ... at −1σ
    meta_data/systematics                 new:   JSON {"version", "features", "input_systematics",
                                                       "weight_systematics", "event_id"}

Row *j* of every shifted dataset is the **same event** as row *j* of ``inputs`` (the same physics event
re-processed with the systematic shifted), in the same feature order; events a systematic does not affect carry
their nominal values. LUMIN itself reads only ``inputs``/``targets``/``weights``, so such a file trains any LUMIN
model unchanged; :class:`~lumin_inferno.callbacks.approx_inferno.ApproxInfernoCallback` reads the rest.

Writers go through a temporary file in the target directory that is validated and then renamed over the target
(``os.replace``), so an error never leaves a half-written or corrupt fold file behind.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import h5py
import numpy as np
import pandas as pd

from ..exceptions import FoldFileError, InvalidModelSpecError
from ..io import atomic_write

__all__ = [
    "SYSTEMATICS_META",
    "EVENT_ID",
    "SystematicsInfo",
    "FoldSystematics",
    "shifted_dataset_name",
    "write_systematics_foldfile",
    "add_systematics_to_foldfile",
    "systematics_info",
    "read_fold_systematics",
    "validate_systematics_foldfile",
]

SYSTEMATICS_META = "systematics"  #: name of the JSON dataset in ``meta_data``
EVENT_ID = "event_id"  #: per-fold dataset: row of each event in the nominal DataFrame
_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")

#: shifted inputs of one systematic: (inputs at +1σ, inputs at −1σ), each a DataFrame (or array) aligned with the
#: nominal DataFrame.
ShiftedFrames = Tuple[Union[pd.DataFrame, np.ndarray], Union[pd.DataFrame, np.ndarray]]
#: up/down event weights of one weight-based systematic, each one value per nominal event.
ShiftedWeights = Tuple[Union[pd.Series, np.ndarray], Union[pd.Series, np.ndarray]]
FoldFileLike = Union[str, Path, h5py.File, "object"]  # path, open h5py.File, or a LUMIN FoldYielder


def shifted_dataset_name(kind: str, direction: str, systematic: str) -> str:
    """Name of a shifted dataset in a fold group, e.g. ``shift_up_inputs_r`` (kind: inputs/weights, direction:
    up/down)."""
    if kind not in ("inputs", "weights") or direction not in ("up", "down"):
        raise InvalidModelSpecError(f"kind must be inputs/weights and direction up/down, got {kind!r}, {direction!r}")
    return f"shift_{direction}_{kind}_{systematic}"


@dataclass
class SystematicsInfo:
    """What ``meta_data/systematics`` declares: the input feature order of the shifted inputs and the names."""

    features: List[str]
    input_systematics: List[str] = field(default_factory=list)
    weight_systematics: List[str] = field(default_factory=list)
    event_id: str = EVENT_ID

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": _VERSION,
                "features": self.features,
                "input_systematics": self.input_systematics,
                "weight_systematics": self.weight_systematics,
                "event_id": self.event_id,
            }
        )


@dataclass
class FoldSystematics:
    """The shifted data of one fold, row-aligned with the fold's ``inputs``: name → (shift_up, shift_down)."""

    fold: int
    inputs: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    weights: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------- helpers
def _h5(foldfile: FoldFileLike) -> Tuple[h5py.File, bool]:
    """An open h5py file and whether we opened it (and so must close it)."""
    if isinstance(foldfile, h5py.File):
        return foldfile, False
    if hasattr(foldfile, "foldfile") and isinstance(foldfile.foldfile, h5py.File):  # LUMIN FoldYielder
        return foldfile.foldfile, False
    path = Path(cast(Union[str, Path], foldfile))  # what is left should be a path (Path raises TypeError if not)
    if not path.exists():
        raise FoldFileError(f"fold file {path} does not exist")
    try:
        return h5py.File(path, "r"), True
    except OSError as err:  # not HDF5, truncated, locked
        raise FoldFileError(f"fold file {path} cannot be opened as HDF5 ({err}): not a LUMIN fold file, or damaged") from err


def _fold_names(h5: h5py.File) -> List[str]:
    folds = sorted((k for k in h5 if k.startswith("fold_")), key=lambda k: int(k.split("_")[1]))
    if not folds:
        raise FoldFileError(f"{h5.filename} has no fold_<i> groups: not a LUMIN fold file")
    return folds


def _input_features(h5: h5py.File) -> List[str]:
    try:
        meta = h5["meta_data"]
        return json.loads(meta["cont_feats"][()]) + json.loads(meta["cat_feats"][()])
    except KeyError:
        raise FoldFileError(f"{h5.filename} has no meta_data/cont_feats, cat_feats: not a LUMIN fold file") from None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise FoldFileError(f"systematic names must match [A-Za-z0-9_.-]+, got {name!r}")


def _frame_values(frame, features: Sequence[str], n: int, index, what: str) -> np.ndarray:
    """The feature columns of a shifted frame as float32 [n, n_features], checked against the nominal events."""
    if isinstance(frame, pd.DataFrame):
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise FoldFileError(f"{what}: missing feature column(s) {missing}")
        if len(frame) != n:
            raise FoldFileError(f"{what}: {len(frame)} events but the nominal DataFrame has {n}; not event-aligned")
        if index is not None and not frame.index.equals(index):
            raise FoldFileError(
                f"{what}: its index differs from the nominal DataFrame's; shifted copies must hold the same events "
                "in the same order (reindex it like the nominal)"
            )
        values = frame[list(features)].to_numpy(dtype=np.float32)
    else:
        values = np.asarray(frame, dtype=np.float32)
        if values.shape != (n, len(features)):
            raise FoldFileError(
                f"{what}: array of shape {values.shape}, expected ({n}, {len(features)}) (events × features "
                f"{list(features)})"
            )
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise FoldFileError(f"{what}: non-finite value in row {bad[0]}, feature {features[bad[1]]!r}")
    return values


def _weight_values(values, n: int, index, what: str) -> np.ndarray:
    if isinstance(values, pd.Series) and index is not None and not values.index.equals(index):
        raise FoldFileError(f"{what}: its index differs from the nominal DataFrame's; not event-aligned")
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if len(arr) != n:
        raise FoldFileError(f"{what}: {len(arr)} weights but the nominal DataFrame has {n} events; not event-aligned")
    if not np.isfinite(arr).all():
        raise FoldFileError(f"{what}: non-finite weight in row {int(np.argwhere(~np.isfinite(arr))[0, 0])}")
    return arr


def _check_same_events(nominal: pd.DataFrame, frame, columns: Sequence[str], what: str) -> None:
    """Columns that identify an event (targets, weights, event id) must agree between nominal and shifted copy."""
    if not isinstance(frame, pd.DataFrame):
        return
    for c in columns:
        if c in frame.columns and c in nominal.columns:
            if not np.array_equal(frame[c].to_numpy(), nominal[c].to_numpy()):
                raise FoldFileError(f"{what}: column {c!r} differs from the nominal; not the same events")


def _write_shifted(
    h5: h5py.File,
    info: SystematicsInfo,
    inputs: Mapping[str, Tuple[np.ndarray, np.ndarray]],
    weights: Mapping[str, Tuple[np.ndarray, np.ndarray]],
    compression: Optional[str],
) -> None:
    """Write shifted arrays (indexed by event id) into every fold of an open file, and the metadata."""
    for fold in _fold_names(h5):
        if info.event_id not in h5[fold]:
            raise FoldFileError(
                f"{fold} of {h5.filename} has no {info.event_id!r} dataset, so shifted data cannot be aligned with "
                f"its events; write the fold file with misc_feats=[{info.event_id!r}] (the nominal row number)"
            )
        ids = h5[fold][info.event_id][()].astype(np.int64)
        for kind, data in (("inputs", inputs), ("weights", weights)):
            for name, (up, down) in data.items():
                for direction, arr in (("up", up), ("down", down)):
                    if ids.min(initial=0) < 0 or ids.max(initial=-1) >= len(arr):
                        raise FoldFileError(
                            f"systematic {name!r}: {fold} has event ids up to {ids.max()} but the shifted data has "
                            f"{len(arr)} events; not event-aligned"
                        )
                    key = shifted_dataset_name(kind, direction, name)
                    if key in h5[fold]:
                        del h5[fold][key]
                    h5[fold].create_dataset(key, data=arr[ids], compression=compression)
    meta = h5.require_group("meta_data")
    if SYSTEMATICS_META in meta:
        del meta[SYSTEMATICS_META]
    meta.create_dataset(SYSTEMATICS_META, data=info.to_json())


# -------------------------------------------------------------------------------------------------------- writers
def write_systematics_foldfile(
    savename: Union[str, Path],
    nominal: pd.DataFrame,
    n_folds: int,
    cont_feats: Sequence[str],
    targ_feats: Union[str, Sequence[str]],
    shifted_inputs: Optional[Mapping[str, ShiftedFrames]] = None,
    shifted_weights: Optional[Mapping[str, ShiftedWeights]] = None,
    cat_feats: Sequence[str] = (),
    wgt_feat: Optional[str] = None,
    targ_type: str = "int64",
    strat_key: Optional[str] = None,
    misc_feats: Sequence[str] = (),
    compression: Optional[str] = None,
    fold_seed: Optional[int] = None,
) -> Path:
    """Write ``<savename>.hdf5``: LUMIN's fold file of ``nominal`` (via ``df2foldfile``) plus, per fold, the ±1σ
    shifted inputs of each shape systematic and the up/down weights of each weight systematic (layout in the
    module docstring). Returns the path.

    Args:
        savename: output path without ``.hdf5`` (as for ``df2foldfile``).
        nominal: one row per event: features, targets (process labels), optional weights.
        n_folds: number of folds (stratified on ``strat_key`` if given); 1 writes a single fold (a test file).
        cont_feats, cat_feats, targ_feats, wgt_feat, targ_type, strat_key, misc_feats, compression: as for LUMIN's
            ``df2foldfile``.
        shifted_inputs: systematic name → (DataFrame at +1σ, DataFrame at −1σ): the same events (same index, same
            length, same order) with the features shifted; unaffected events carry their nominal values. Targets or
            weight columns present in a shifted frame must equal the nominal's.
        shifted_weights: systematic name → (weights at +1σ, weights at −1σ), one per nominal event.
        fold_seed: seed of the fold split (``df2foldfile`` draws it from numpy's global generator, seeded with it
            first and left in its state after the split): the same seed, the same folds. ``None``: the generator's
            current state. Unused for a single fold (no split).

    Raises :class:`~lumin_inferno.exceptions.FoldFileError` naming the systematic when shifted data are missing
    features, not event-aligned, or not finite. Nothing is written then.
    """
    from lumin.data_processing.file_proc import df2foldfile

    from .foldfiles import quiet_df2foldfile

    shifted_inputs = dict(shifted_inputs or {})
    shifted_weights = dict(shifted_weights or {})
    features = list(cont_feats) + list(cat_feats)
    n = len(nominal)
    if EVENT_ID in nominal.columns:
        raise FoldFileError(f"the nominal DataFrame already has a column {EVENT_ID!r}; it is reserved for the writer")
    if set(shifted_inputs) & set(shifted_weights):
        raise FoldFileError(f"systematics both input- and weight-based: {sorted(set(shifted_inputs) & set(shifted_weights))}")
    targ_cols = [targ_feats] if isinstance(targ_feats, str) else list(targ_feats)
    ident = targ_cols + ([wgt_feat] if wgt_feat else [])
    _frame_values(nominal, features, n, nominal.index, "nominal events")  # finite features, all present
    if wgt_feat is not None and wgt_feat in nominal.columns:
        _weight_values(nominal[wgt_feat], n, nominal.index, f"nominal weights (column {wgt_feat!r})")
    inputs: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for name, pair in shifted_inputs.items():
        _check_name(name)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise FoldFileError(f"systematic {name!r}: give (shift_up, shift_down) inputs, got {type(pair).__name__}")
        arrs = []
        for direction, frame in zip(("up", "down"), pair):
            what = f"systematic {name!r} ({direction})"
            arrs.append(_frame_values(frame, features, n, nominal.index, what))
            _check_same_events(nominal, frame, ident, what)
        inputs[name] = (arrs[0], arrs[1])
    weights: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for name, pair in shifted_weights.items():
        _check_name(name)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise FoldFileError(f"weight systematic {name!r}: give (shift_up, shift_down) weights")
        up, down = (
            _weight_values(w, n, nominal.index, f"weight systematic {name!r} ({d})") for d, w in zip(("up", "down"), pair)
        )
        weights[name] = (up, down)

    target = Path(f"{savename}.hdf5").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, suffix=".tmp.hdf5") as tmp:
        tmp.unlink()  # df2foldfile creates it
        df = nominal.copy()
        df[EVENT_ID] = np.arange(n, dtype=np.int64)
        quiet_df2foldfile(
            df2foldfile,
            fold_seed=fold_seed,
            df=df,
            n_folds=n_folds,
            cont_feats=list(cont_feats),
            cat_feats=list(cat_feats),
            targ_feats=targ_feats,
            savename=str(tmp.with_suffix("")),
            targ_type=targ_type,
            wgt_feat=wgt_feat,
            strat_key=strat_key if n_folds > 1 else None,
            misc_feats=[EVENT_ID, *misc_feats],
            compression=compression,
        )
        with h5py.File(tmp, "r+") as h5:
            if n_folds == 1:  # the single-fold writer ignores misc_feats: write them (unshuffled, in row order)
                for col in (EVENT_ID, *misc_feats):
                    if col not in h5["fold_0"]:
                        h5["fold_0"].create_dataset(col, data=df[col].to_numpy())
            info = SystematicsInfo(features, list(inputs), list(weights))
            _write_shifted(h5, info, inputs, weights, compression)
            validate_systematics_foldfile(h5)
    return target


def add_systematics_to_foldfile(
    foldfile: Union[str, Path],
    shifted_inputs: Optional[Mapping[str, ShiftedFrames]] = None,
    shifted_weights: Optional[Mapping[str, ShiftedWeights]] = None,
    event_id: str = EVENT_ID,
) -> Path:
    """Add (or replace) shifted inputs / weights in an existing LUMIN fold file.

    The file must hold, per fold, a dataset ``event_id`` (e.g. written with ``misc_feats=["event_id"]``): the
    position of each event in the shifted frames given here. A frame that has an ``event_id`` column is matched by
    that column instead of by position. Works on a copy that is validated and then renamed over the file, so a
    failure leaves the original untouched. Existing systematics not named here are kept.
    """
    path = Path(foldfile).resolve()
    if not path.exists():
        raise FoldFileError(f"fold file {path} does not exist")
    with atomic_write(path, suffix=".tmp.hdf5") as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as h5:
            features = _input_features(h5)
            folds = _fold_names(h5)
            for fold in folds:
                if event_id not in h5[fold]:
                    raise FoldFileError(
                        f"{fold} of {path} has no {event_id!r} dataset, so shifted data cannot be aligned with its "
                        f"events; write the fold file with misc_feats=[{event_id!r}] (the nominal row number)"
                    )
            n = 1 + max(int(h5[f][event_id][()].max(initial=-1)) for f in folds)

            def ordered(frame, what):
                """A frame with an event-id column, put in event-id order (row k = event k)."""
                if not (isinstance(frame, pd.DataFrame) and event_id in frame.columns):
                    return frame
                ids = frame[event_id].to_numpy()
                if len(np.unique(ids)) != len(ids):
                    raise FoldFileError(f"{what}: column {event_id!r} has duplicate event ids")
                out = frame.set_index(event_id).reindex(np.arange(n))
                if out[[f for f in features if f in out.columns]].isna().any().any():
                    raise FoldFileError(f"{what}: does not cover all {n} events of the fold file (by {event_id!r})")
                return out

            old = _read_info(h5)
            inputs, weights = {}, {}
            for name, pair in dict(shifted_inputs or {}).items():
                _check_name(name)
                arrs = []
                for d, frame in zip(("up", "down"), pair):
                    what = f"systematic {name!r} ({d})"
                    arrs.append(_frame_values(ordered(frame, what), features, n, None, what))
                inputs[name] = tuple(arrs)
            for name, pair in dict(shifted_weights or {}).items():
                _check_name(name)
                weights[name] = tuple(
                    _weight_values(w, n, None, f"weight systematic {name!r} ({d})") for d, w in zip(("up", "down"), pair)
                )
            in_names = [s for s in (old.input_systematics if old else []) if s not in weights] + [
                s for s in inputs if not old or s not in old.input_systematics
            ]
            w_names = [s for s in (old.weight_systematics if old else []) if s not in inputs] + [
                s for s in weights if not old or s not in old.weight_systematics
            ]
            info = SystematicsInfo(features, in_names, w_names, event_id)
            # (up, down) pairs: zip with ("up", "down") above, from the ShiftedFrames / ShiftedWeights pairs
            Pairs = Dict[str, Tuple[np.ndarray, np.ndarray]]
            _write_shifted(h5, info, cast(Pairs, inputs), cast(Pairs, weights), None)
            validate_systematics_foldfile(h5)
    return path


# -------------------------------------------------------------------------------------------------------- readers
def _read_info(h5: h5py.File) -> Optional[SystematicsInfo]:
    if "meta_data" not in h5 or SYSTEMATICS_META not in h5["meta_data"]:
        return None
    raw = h5["meta_data"][SYSTEMATICS_META][()]
    d = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return SystematicsInfo(d["features"], list(d["input_systematics"]), list(d["weight_systematics"]), d["event_id"])


def systematics_info(foldfile: FoldFileLike) -> SystematicsInfo:
    """The systematics a fold file declares (``meta_data/systematics``); :class:`FoldFileError` if none."""
    h5, close = _h5(foldfile)
    try:
        info = _read_info(h5)
        if info is None:
            raise FoldFileError(
                f"{h5.filename} has no meta_data/{SYSTEMATICS_META}: it holds no shifted systematics (write it with "
                "lumin_inferno.data.write_systematics_foldfile)"
            )
        return info
    finally:
        if close:
            h5.close()


def _require(h5: h5py.File, fold: str, name: str, kind: str, direction: str) -> h5py.Dataset:
    key = shifted_dataset_name(kind, direction, name)
    if key not in h5[fold]:
        raise FoldFileError(
            f"systematic {name!r}: {fold} of {h5.filename} has no {key!r} (missing {direction} shifted {kind})"
        )
    return h5[fold][key]


def read_fold_systematics(
    foldfile: FoldFileLike,
    fold_idx: int,
    input_systematics: Optional[Sequence[str]] = None,
    weight_systematics: Optional[Sequence[str]] = None,
) -> FoldSystematics:
    """Read and validate the shifted data of one fold (default: every systematic the file declares).

    Checks, raising :class:`FoldFileError` that names the systematic and the fold: declared in the file; present
    in the fold; shifted inputs have the nominal ``inputs``' shape (same events) and were written with the file's
    feature order; shifted weights one per event; all values finite.
    """
    h5, close = _h5(foldfile)
    try:
        info = systematics_info(h5)
        fold = f"fold_{fold_idx}"
        if fold not in h5:
            raise FoldFileError(f"{h5.filename} has no {fold} (folds: {_fold_names(h5)})")
        features = _input_features(h5)
        if info.features != features:
            raise FoldFileError(
                f"{h5.filename}: shifted inputs were written with features {info.features} but the fold file's "
                f"inputs are {features}; feature order must match"
            )
        wanted_in = list(info.input_systematics if input_systematics is None else input_systematics)
        wanted_w = list(info.weight_systematics if weight_systematics is None else weight_systematics)
        for name, declared, kind in [(s, info.input_systematics, "input") for s in wanted_in] + [
            (s, info.weight_systematics, "weight") for s in wanted_w
        ]:
            if name not in declared:
                raise FoldFileError(
                    f"systematic {name!r} is not an {kind} systematic of {h5.filename} (input systematics: "
                    f"{info.input_systematics}, weight systematics: {info.weight_systematics})"
                )
        n, n_feat = h5[fold]["inputs"].shape
        out = FoldSystematics(fold_idx)
        for name in wanted_in:
            pair = []
            for direction in ("up", "down"):
                arr = _require(h5, fold, name, "inputs", direction)[()]
                if arr.shape != (n, n_feat):
                    raise FoldFileError(
                        f"systematic {name!r}: {fold} shifted {direction} inputs have shape {arr.shape} but the "
                        f"nominal inputs {(n, n_feat)}; not event-aligned"
                    )
                if not np.isfinite(arr).all():
                    raise FoldFileError(f"systematic {name!r}: {fold} shifted {direction} inputs contain NaN/inf")
                pair.append(arr)
            out.inputs[name] = (pair[0], pair[1])
        for name in wanted_w:
            pair = []
            for direction in ("up", "down"):
                arr = _require(h5, fold, name, "weights", direction)[()]
                if arr.shape != (n,):
                    raise FoldFileError(
                        f"weight systematic {name!r}: {fold} {direction} weights have shape {arr.shape}, expected "
                        f"({n},); not event-aligned"
                    )
                if not np.isfinite(arr).all():
                    raise FoldFileError(f"weight systematic {name!r}: {fold} {direction} weights contain NaN/inf")
                pair.append(arr)
            out.weights[name] = (pair[0], pair[1])
        return out
    finally:
        if close:
            h5.close()


def validate_systematics_foldfile(
    foldfile: FoldFileLike,
    input_systematics: Optional[Sequence[str]] = None,
    weight_systematics: Optional[Sequence[str]] = None,
) -> SystematicsInfo:
    """Validate every fold (see :func:`read_fold_systematics`); returns the file's :class:`SystematicsInfo`."""
    h5, close = _h5(foldfile)
    try:
        info = systematics_info(h5)
        features = _input_features(h5)
        for fold in _fold_names(h5):
            shifted = read_fold_systematics(h5, int(fold.split("_")[1]), input_systematics, weight_systematics)
            nominal = h5[fold]["inputs"][()]
            for name, (up, down) in shifted.inputs.items():
                # where a systematic leaves a value alone (up == down), the shifted copy must hold the nominal value
                # of the same event: a copy stored in another row order fails here
                # (to float32 rounding: copies made by transforming back and forth differ in the last bits)
                scale = np.maximum(np.abs(nominal).max(0, initial=0.0), 1e-30)
                bad = np.argwhere((up == down) & ~np.isclose(up, nominal, rtol=1e-5, atol=1e-6 * scale))
                if len(bad):
                    row, col = bad[0]
                    raise FoldFileError(
                        f"systematic {name!r}: {fold} shifted inputs are not event-aligned with the nominal ones: row "
                        f"{row}, feature {features[col]!r} is unshifted in both directions ({up[row, col]}) but the "
                        f"nominal value is {nominal[row, col]} ({len(bad)} such values)")
        return info
    finally:
        if close:
            h5.close()
