"""Keep LUMIN 0.9.1 importable and harmless.

* pdpbox (imported by LUMIN, undeclared) runs ``warnings.filterwarnings("ignore")`` at import, silencing every warning
  in the process; we remove exactly that filter again after importing LUMIN.
"""

from __future__ import annotations

import warnings


def import_lumin() -> None:
    """Import LUMIN's model module (which pulls in pdpbox) and undo pdpbox's global warning silencing."""
    before = list(warnings.filters)
    import lumin.nn.models.model  # noqa: F401

    blanket = ("ignore", None, Warning, None, 0)
    if blanket in warnings.filters and blanket not in before:
        warnings.filters.remove(blanket)
        warnings._filters_mutated()
