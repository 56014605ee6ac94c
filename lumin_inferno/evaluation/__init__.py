"""Evaluation of trained summary statistics (hard-assigned templates, expected uncertainties) and plots."""

from .templates import align_bins, aligned_mean_probs, argmax_bins, asimov_template_model, expected_uncertainty, hard_templates, uniform_bins

__all__ = ["align_bins", "aligned_mean_probs", "argmax_bins", "uniform_bins", "hard_templates", "asimov_template_model", "expected_uncertainty"]
