"""Evaluation of trained summary statistics (hard-assigned templates, expected uncertainties) and plots."""

from .._compat import import_lumin

import_lumin()  # LUMIN first, with pdpbox's global warning filter undone (lumin_inferno._compat)

from .analysis import (
    EventBins,
    event_bins,
    foldfile_event_bins,
    analysis_template_model,
    foldfile_template_model,
    hard_summary_templates,
    transform_shifted_bins,
)
from .coverage import CoverageSetting, coverage_summary, format_coverage, run_coverage
from .ensemble import (
    AlignedEnsemble,
    InfernoEnsemble,
    MergedSummary,
    align_ensemble,
    load_inferno_ensemble,
    merge_summaries,
    save_inferno_ensemble,
)
from .importance import (
    ColumnSubsetTransform,
    drop_column_importance,
    nuisances_acting_on,
    permutation_importance,
    plot_feature_importance,
    poi_uncertainty,
)
from .independence import (
    compare_at_nuisance,
    distance_correlation,
    js_divergence,
    ks_statistic,
    plot_output_vs_nuisance,
)
from .report import TrainingWarning, training_report
from .plots import (
    plot_channel_templates,
    plot_coverage,
    plot_poi_contours,
    plot_pulls,
    plot_poi_sigmas,
    plot_profile_curves,
    plot_sigma_summary,
    plot_templates,
    plot_training_curves,
)
from .templates import (
    align_bins,
    aligned_mean_probs,
    argmax_bins,
    bin_occupancy,
    class_score_bins,
    class_score_edges,
    hard_templates,
    uniform_bins,
)

__all__ = [
    "EventBins",
    "MergedSummary",
    "merge_summaries",
    "event_bins",
    "foldfile_event_bins",
    "CoverageSetting",
    "run_coverage",
    "coverage_summary",
    "format_coverage",
    "plot_pulls",
    "plot_coverage",
    "hard_summary_templates",
    "transform_shifted_bins",
    "analysis_template_model",
    "foldfile_template_model",
    "AlignedEnsemble",
    "InfernoEnsemble",
    "align_ensemble",
    "save_inferno_ensemble",
    "load_inferno_ensemble",
    "permutation_importance",
    "drop_column_importance",
    "poi_uncertainty",
    "plot_feature_importance",
    "ColumnSubsetTransform",
    "nuisances_acting_on",
    "distance_correlation",
    "js_divergence",
    "ks_statistic",
    "compare_at_nuisance",
    "plot_output_vs_nuisance",
    "plot_training_curves",
    "plot_templates",
    "plot_profile_curves",
    "plot_sigma_summary",
    "plot_channel_templates",
    "plot_poi_sigmas",
    "plot_poi_contours",
    "align_bins",
    "aligned_mean_probs",
    "argmax_bins",
    "uniform_bins",
    "bin_occupancy",
    "training_report",
    "TrainingWarning",
    "class_score_bins",
    "class_score_edges",
    "hard_templates",
]
