"""Data: benchmark generators writing LUMIN fold files; shifted systematics stored next to the nominal inputs."""

from .._compat import import_lumin

import_lumin()  # LUMIN first, with pdpbox's global warning filter undone (lumin_inferno._compat)

from .analysis_toy import AnalysisToy, ToyLimit, analysis_toy
from .paper import (
    BACKGROUND_YIELD,
    FEATURES,
    LAMBDA0,
    R0,
    SIGNAL_YIELD,
    TEMPLATE_SHIFTS,
    PaperBenchmark,
    PaperTransform,
    analytic_limit,
    paper_benchmark,
    paper_intensity,
    sample_paper,
    write_paper_foldfiles,
)
from .foldfiles import open_foldfile
from .pivot_toy import NUISANCE, TOY_FEATURES, sample_pivot_toy, write_pivot_toy_foldfile
from .systematics import (
    FoldSystematics,
    SystematicsInfo,
    add_systematics_to_foldfile,
    read_fold_systematics,
    systematics_info,
    validate_systematics_foldfile,
    write_systematics_foldfile,
)

__all__ = [
    "AnalysisToy",
    "ToyLimit",
    "analysis_toy",
    "open_foldfile",
    "NUISANCE",
    "TOY_FEATURES",
    "sample_pivot_toy",
    "write_pivot_toy_foldfile",
    "BACKGROUND_YIELD",
    "FEATURES",
    "LAMBDA0",
    "R0",
    "SIGNAL_YIELD",
    "TEMPLATE_SHIFTS",
    "PaperBenchmark",
    "PaperTransform",
    "analytic_limit",
    "paper_benchmark",
    "paper_intensity",
    "sample_paper",
    "write_paper_foldfiles",
    "FoldSystematics",
    "SystematicsInfo",
    "add_systematics_to_foldfile",
    "read_fold_systematics",
    "systematics_info",
    "validate_systematics_foldfile",
    "write_systematics_foldfile",
]
