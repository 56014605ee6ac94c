"""Keep LUMIN 0.9.1 importable and harmless.

* pdpbox (imported by LUMIN, undeclared) runs ``warnings.filterwarnings("ignore")`` at import, silencing every warning
  in the process; we remove exactly that filter again after importing LUMIN.
* torch ≥ 2.6 loads with ``weights_only=True``; LUMIN's ``Model.load`` then refuses the numpy scalars/arrays that
  LUMIN itself saves (optimiser state after its ``OneCycle``/``CycleLR`` callbacks set a numpy learning rate, a numpy
  ``input_mask`` from ``cont_subsample_rate``). We allow-list exactly those numpy types (plain data, no code) with
  ``torch.serialization.add_safe_globals`` — the fix the host notes recommend — instead of disabling weights-only
  loading.
"""

from __future__ import annotations

import warnings
from typing import Any, List, cast

import numpy as np
import torch


_IMPORTED = False


def import_lumin() -> None:
    """Import LUMIN's model module (which pulls in pdpbox) and undo pdpbox's global warning silencing; once per
    process (later calls return at once)."""
    global _IMPORTED
    if _IMPORTED:
        return
    before = list(warnings.filters)
    import lumin.nn.models.model  # noqa: F401

    blanket = ("ignore", None, Warning, None, 0)
    filters = cast(List[Any], warnings.filters)  # a list at runtime; typeshed declares a read-only Sequence
    if blanket in filters and blanket not in before:
        filters.remove(blanket)
        warnings._filters_mutated()  # type: ignore[attr-defined]  # CPython's private hook, absent from typeshed

    _allow_numpy_in_weights_only_load()
    _IMPORTED = True


def _allow_numpy_in_weights_only_load() -> None:
    multiarray: Any = np.core.multiarray  # scalar and _reconstruct are private, absent from numpy's stubs
    torch.serialization.add_safe_globals(
        [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype]
        + [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    )
