"""Which fold rows are in a LUMIN batch, and what the fold file holds for them beyond ``(x, y, w)``.

:class:`RowTrackingYielder` is a stand-in for LUMIN's ``BatchYielder`` that records the batch's rows;
:class:`FoldShifts` holds a fold's shifted inputs and up/down weight ratios, indexed by those rows;
:class:`ExtraColumns` carries other fold-file columns through LUMIN's batches alongside the inputs.

LUMIN's ``BatchYielder`` shuffles its indices in a local variable and yields only ``(x, y, w)``. A callback that
needs per-event data beyond those (the shifted copies of the batch's events, their up/down weights) swaps
``fit_params.by`` for a :class:`RowTrackingYielder` in ``on_fold_begin`` (``Model.fit`` iterates ``fit_params.by``
after that hook) and reads ``rows`` in ``on_batch_begin``. The shuffle is the same ``np.random.shuffle`` call
LUMIN makes, so batches and seeds are unchanged, and the row numbers are int64 (no float32 targets, no 2²⁴ cap).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from lumin.nn.data.batch_yielder import BatchYielder
from lumin.utils.misc import to_device
from torch import Tensor

from ..analysis import Analysis
from ..data.systematics import read_fold_systematics
from ..exceptions import FoldFileError, TargetShapeError

__all__ = ["RowTrackingYielder", "FoldShifts", "ExtraColumns"]


class RowTrackingYielder:
    """Yield the batches of ``yielder`` (a LUMIN ``BatchYielder``) exactly as it would, recording the fold rows of
    the current batch in ``rows`` (int64 numpy array). Attribute access falls through to ``yielder``."""

    def __init__(self, yielder: BatchYielder):
        self.yielder = yielder
        self.rows: Optional[np.ndarray] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["yielder"], name)

    def __iter__(self) -> Iterator[Tuple]:
        by = self.yielder
        n = len(by.inputs)
        order = np.arange(n)
        if by.shuffle:
            np.random.shuffle(order)  # the call LUMIN's BatchYielder.__iter__ makes
        targets = None if by.targets is None else np.asarray(by.targets)[order]
        weights = None if by.weights is None else np.asarray(by.weights)[order]
        inner = BatchYielder(
            np.asarray(by.inputs)[order], bs=by.bs, objective=by.objective, targets=targets, weights=weights,
            shuffle=False, use_weights=by.use_weights, bulk_move=by.bulk_move, input_mask=None,
            drop_last=by.drop_last,
        )
        start = 0
        for batch in inner:
            size = len(batch[0])
            self.rows = order[start:start + size]
            start += size
            yield batch
        self.rows = None


def input_columns(fy, by) -> np.ndarray:
    """Columns of the stored (full) inputs that reach the network: FoldYielder's ignored features removed, then the
    BatchYielder's input mask applied, exactly as LUMIN does to the nominal inputs."""
    feats = list(fy.input_feats)
    ignore = set(getattr(fy, "_ignore_feats", []))
    columns = np.array([i for i, f in enumerate(feats) if f not in ignore], dtype=np.int64)
    mask = getattr(by, "input_mask", None)
    return columns if mask is None else columns[np.asarray(mask)]


class FoldShifts:
    """The ``"inputs"`` and ``"weights"`` systematics of ``analysis`` for fold ``idx`` of ``fy`` (a LUMIN
    ``FoldYielder`` of a fold file with shifted systematics), on LUMIN's device once per fold as
    ``BatchYielder(bulk_move=True)`` does with the nominal inputs; ``by`` is the fold's ``BatchYielder``.

    Attributes:
        nominal_inputs: the batch yielder's inputs (to check that a batch's rows are the recorded ones).
        inputs: column → (shift_up inputs, shift_down inputs) ``[n_fold, n_inputs]``, feature selection applied.
        weight_ratios: ``[K, 2, n_fold]`` float64 w_up/w, w_down/w of the K weight systematics (0 where w = 0);
            ``weight_index``: column → its k.
    """

    def __init__(self, analysis: Analysis, fy, idx: int, by):
        self.nominal_inputs = by.inputs
        n = len(by.inputs)
        columns = input_columns(fy, by)
        inputs = {s.stored_column: s for s in analysis.systematics_of("inputs")}
        weights = {s.stored_column: s for s in analysis.systematics_of("weights")}
        shifted = read_fold_systematics(fy, idx, list(inputs), list(weights))
        self.inputs: Dict[str, Tuple[Tensor, Tensor]] = {}
        for column, (up, down) in shifted.inputs.items():
            up, down = up[:, columns], down[:, columns]
            if up.shape != by.inputs.shape:
                raise FoldFileError(
                    f"systematic {inputs[column].name!r}: fold {idx} shifted inputs have shape {up.shape} after "
                    f"feature selection but the batch inputs {by.inputs.shape}"
                )
            self.inputs[column] = (to_device(torch.as_tensor(up)), to_device(torch.as_tensor(down)))
        self.weight_ratios: Optional[Tensor] = None
        self.weight_index: Dict[str, int] = {}
        if not shifted.weights:
            return
        nominal_w = fy.get_column("weights", n_folds=1, fold_idx=idx)
        nominal_w = np.ones(n, dtype=np.float32) if nominal_w is None else nominal_w.reshape(-1)
        stack = []
        for column, pair in shifted.weights.items():
            for direction, w_shift in zip(("up", "down"), pair):
                bad = (nominal_w == 0) & (w_shift != 0)
                if bad.any():
                    raise FoldFileError(
                        f"weight systematic {weights[column].name!r}: fold {idx} has {int(bad.sum())} event(s) "
                        f"with zero nominal weight but non-zero {direction} weight; their shift cannot be "
                        "expressed per event"
                    )
            stack.append(np.stack([np.divide(w_shift, nominal_w, out=np.zeros(n, dtype=np.float64),
                                             where=nominal_w != 0) for w_shift in pair]))
            self.weight_index[column] = len(stack) - 1
        self.weight_ratios = to_device(torch.as_tensor(np.stack(stack), dtype=torch.float64))


class ExtraColumns:
    """Fold-file columns (e.g. ``misc_feats`` of ``df2foldfile``) carried through LUMIN's shuffled batches: appended
    to a fold's *inputs* array before the ``BatchYielder`` iterates (it converts its arrays only then, and applies
    ``input_mask`` earlier), sliced off each batch before the forward pass. Inputs rather than targets, because
    BatchYielder casts multiclass targets to ``long``, which would truncate a continuous value. Set ``fy`` (LUMIN's
    ``FoldYielder``) before use."""

    def __init__(self, names: List[str]):
        self.names = list(names)
        self.fy: Any = None

    def read(self, idx: int) -> np.ndarray:
        """The columns of fold ``idx``, ``[n, len(names)]`` float32; named errors for a missing column, a column of
        more than one value per event or non-finite values."""
        cols = []
        for name in self.names:
            data = self.fy.get_column(name, fold_idx=idx)
            if data is None:
                raise FoldFileError(
                    f"column {name!r} is not in fold {idx} of {getattr(self.fy, 'foldfile', self.fy)}; write it "
                    f"with df2foldfile(..., misc_feats=[{name!r}, ...]). Columns: {sorted(self.fy.columns())}"
                )
            data = np.asarray(data)
            if data.ndim == 2 and data.shape[1] == 1:
                data = data[:, 0]
            if data.ndim != 1:
                raise TargetShapeError(f"column {name!r} must hold one value per event, shape {data.shape}")
            cols.append(data.astype(np.float32))
        out = np.stack(cols, axis=1)
        if not np.all(np.isfinite(out)):
            raise TargetShapeError(f"columns {self.names} in fold {idx} are not all finite")
        return out

    def append(self, by, idx: int) -> np.ndarray:
        """Append fold ``idx``'s columns to ``by.inputs`` (row-aligned, before any shuffling); returns the original
        inputs array, to be put back after the fold."""
        cols, original = self.read(idx), by.inputs
        if len(cols) != len(original):
            raise FoldFileError(f"fold {idx}: {len(cols)} rows of {self.names} for {len(original)} events")
        by.inputs = np.concatenate([np.asarray(original, dtype=np.float32), cols], axis=1)
        return original

    def split(self, x) -> Tuple[Any, Tensor]:
        """A batch's inputs without the appended columns, and those columns ``[n, len(names)]``."""
        n = len(self.names)
        if isinstance(x, tuple):  # (flat inputs, matrix inputs)
            flat, z = x[0][:, :-n], x[0][:, -n:]
            return (flat,) + tuple(x[1:]), z
        return x[:, :-n], x[:, -n:]
