"""End-to-end studies (the paper benchmark) built from the public API."""

from .._compat import import_lumin

import_lumin()  # LUMIN first, with pdpbox's global warning filter undone (lumin_inferno._compat)

from .paper import PAPER_RESULTS, StudySettings, run_paper_study

__all__ = ["PAPER_RESULTS", "StudySettings", "run_paper_study"]
