import os

os.environ.setdefault("MPLBACKEND", "Agg")
import lumin_inferno  # noqa: E402,F401  (imports LUMIN once, removing pdpbox's global warning filter)
