"""lumin_inferno: train LUMIN models for the final measurement.

INFERNO (de Castro & Dorigo 2018) as LUMIN callbacks, on a pure-torch binned-likelihood core.

The public names below are imported on first use (PEP 562), so ``import lumin_inferno.statistics`` or
``lumin_inferno.analysis`` loads neither LUMIN nor pdpbox: the statistics core and the ``Analysis`` work without
the host. The subpackages that use LUMIN (callbacks, models, data, evaluation, export, studies) import it through
:func:`lumin_inferno._compat.import_lumin`.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

from .version import __version__

#: public name → the module that defines it
_PUBLIC: Dict[str, str] = {
    "InfernoCallback": ".callbacks",
    "HardSigmaMetric": ".callbacks",
    "ReseedEmptyBins": ".callbacks",
    "ApproxInfernoCallback": ".callbacks",
    "PivotCallback": ".callbacks",
    "LambdaRamp": ".callbacks",
    "MixtureDensityNetwork": ".models",
    "ClassifierAdversary": ".models",
    "mdn_nll": ".models",
    "Analysis": ".analysis",
    "Process": ".analysis",
    "NormFactor": ".analysis",
    "Nuisance": ".analysis",
    "Systematic": ".analysis",
    "InputShift": ".analysis",
    "FixedChannel": ".analysis",
    "Objective": ".analysis",
    "SummaryTemplates": ".analysis",
    "template_model": ".analysis",
    "write_combine_datacard": ".export",
    "write_histfactory_xml": ".export",
    "foldfile_template_model": ".evaluation",
    "expected_poi_uncertainties": ".evaluation",
    "profile_interval": ".statistics",
    "sample_toys": ".statistics",
    "fit_toys": ".statistics",
    "unbinned_poi_uncertainty": ".statistics",
    "analytic_limit": ".data",
    "write_systematics_foldfile": ".data",
    "add_systematics_to_foldfile": ".data",
    "read_fold_systematics": ".data",
    "validate_systematics_foldfile": ".data",
    "sample_pivot_toy": ".data",
    "write_pivot_toy_foldfile": ".data",
    "align_bins": ".evaluation",
    "align_ensemble": ".evaluation",
    "save_inferno_ensemble": ".evaluation",
    "load_inferno_ensemble": ".evaluation",
    "permutation_importance": ".evaluation",
    "plot_feature_importance": ".evaluation",
    "expected_uncertainty": ".evaluation",
    "training_report": ".evaluation",
    "foldfile_event_bins": ".evaluation",
    "CoverageSetting": ".evaluation",
    "run_coverage": ".evaluation",
    "coverage_summary": ".evaluation",
    "TrainingWarning": ".evaluation",
    "bin_occupancy": ".evaluation",
    "distance_correlation": ".evaluation",
    "js_divergence": ".evaluation",
    "ks_statistic": ".evaluation",
    "compare_at_nuisance": ".evaluation",
    "export_onnx": ".export",
    "pyhf_workspace": ".export",
    "write_pyhf_workspace": ".export",
    "pyhf_poi_uncertainty": ".export",
    "pyhf_search_figures": ".export",
    "pyhf_modifier_settings": ".export",
    "InputTransform": ".callbacks",
    "HardBinPredHandler": ".callbacks",
    "TemperatureSchedule": ".callbacks",
    "SoftmaxTemperatureTail": ".models",
    "ClassScoreTail": ".models",
    "Parameter": ".statistics",
    "ShapeSystematic": ".statistics",
    "NormSystematic": ".statistics",
    "TemplateModel": ".statistics",
    "nll_hessian": ".statistics",
    "fisher_information": ".statistics",
    "covariance": ".statistics",
    "poi_variance": ".statistics",
    "expected_poi_uncertainty": ".statistics",
    "discovery_significance": ".statistics",
    "expected_cls_upper_limit": ".statistics",
    "PaperBenchmark": ".data",
    "PaperTransform": ".data",
    "paper_benchmark": ".data",
    "sample_paper": ".data",
    "write_paper_foldfiles": ".data",
    "LuminInfernoError": ".exceptions",
    "InvalidModelSpecError": ".exceptions",
    "SingularHessianError": ".exceptions",
    "EmptyProcessError": ".exceptions",
    "TargetShapeError": ".exceptions",
    "UnsupportedNetworkError": ".exceptions",
    "FanOutError": ".exceptions",
    "train_members": ".fanout",
    "connect": ".fanout",
    "run_tasks": ".fanout",
    "InputTransformError": ".exceptions",
    "FoldFileError": ".exceptions",
    "FailedMinimizationError": ".exceptions",
    "ConfigurationError": ".exceptions",
}

__all__ = ["__version__"] + list(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'lumin_inferno' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
