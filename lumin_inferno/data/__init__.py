"""Data: benchmark generators writing LUMIN fold files."""

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

__all__ = [
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
]
