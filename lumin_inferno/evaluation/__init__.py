"""Evaluation of trained summary statistics (hard-assigned templates, expected uncertainties) and plots."""

from .independence import (
    compare_at_nuisance,
    distance_correlation,
    js_divergence,
    ks_statistic,
    plot_output_vs_nuisance,
)
from .plots import plot_profile_curves, plot_sigma_summary, plot_templates, plot_training_curves
from .templates import align_bins, aligned_mean_probs, argmax_bins, asimov_template_model, expected_uncertainty, hard_templates, uniform_bins

__all__ = [
    "distance_correlation",
    "js_divergence",
    "ks_statistic",
    "compare_at_nuisance",
    "plot_output_vs_nuisance",
    "plot_training_curves",
    "plot_templates",
    "plot_profile_curves",
    "plot_sigma_summary",
"align_bins", "aligned_mean_probs", "argmax_bins", "uniform_bins", "hard_templates", "asimov_template_model", "expected_uncertainty"]
