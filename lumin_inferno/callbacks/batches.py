"""Which fold rows are in a LUMIN batch: a stand-in for LUMIN's ``BatchYielder`` that records them.

LUMIN's ``BatchYielder`` shuffles its indices in a local variable and yields only ``(x, y, w)``. A callback that
needs per-event data beyond those (the shifted copies of the batch's events, their up/down weights) swaps
``fit_params.by`` for a :class:`RowTrackingYielder` in ``on_fold_begin`` (``Model.fit`` iterates ``fit_params.by``
after that hook) and reads ``rows`` in ``on_batch_begin``. The shuffle is the same ``np.random.shuffle`` call
LUMIN makes, so batches and seeds are unchanged, and the row numbers are int64 (no float32 targets, no 2²⁴ cap).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import numpy as np
from lumin.nn.data.batch_yielder import BatchYielder

__all__ = ["RowTrackingYielder"]


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
