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

#: public name → the subpackage that defines it, by layer. Toy generators of the studies (``paper_benchmark``,
#: the pivot toy), plotting helpers and lower-level pieces stay in their subpackages (``lumin_inferno.data``,
#: ``.evaluation``, ``.statistics``, ``.models``, ``.fanout``).
_LAYERS: Dict[str, List[str]] = {
    # the measurement, read by every layer
    ".analysis": ["Analysis", "Process", "NormFactor", "Nuisance", "Systematic", "InputShift", "FixedChannel",
                  "Objective", "SummaryTemplates", "template_model"],
    # host integration: LUMIN callbacks, metric, prediction handler, network tails
    ".callbacks": ["InfernoCallback", "ApproxInfernoCallback", "PivotCallback", "LambdaRamp", "HardSigmaMetric",
                   "TemperatureSchedule", "ReseedEmptyBins", "HardBinPredHandler"],
    ".models": ["SoftmaxTemperatureTail", "ClassScoreTail"],
    # statistics core (pure torch)
    ".statistics": ["TemplateModel", "Parameter", "ShapeSystematic", "NormSystematic", "nll_hessian",
                    "fisher_information", "expected_poi_uncertainty", "expected_poi_uncertainties", "fit", "FitResult",
                    "profile_interval", "discovery_significance", "expected_cls_upper_limit", "sample_toys",
                    "fit_toys"],
    # fold files with systematics
    ".data": ["write_systematics_foldfile", "add_systematics_to_foldfile", "validate_systematics_foldfile"],
    # evaluation of trained summaries
    ".evaluation": ["foldfile_template_model", "align_ensemble", "AlignedEnsemble", "merge_summaries", "MergedSummary",
                    "save_inferno_ensemble",
                    "load_inferno_ensemble", "permutation_importance", "drop_column_importance", "training_report",
                    "TrainingWarning", "run_coverage", "CoverageSetting"],
    # inputs of the final fit
    ".export": ["export_onnx", "write_pyhf_workspace", "pyhf_poi_uncertainty", "write_combine_datacard",
                "write_histfactory_xml"],
    # fan-out on Dask
    ".fanout": ["train_members", "connect"],
    ".exceptions": ["LuminInfernoError", "ConfigurationError", "InvalidModelSpecError", "SingularHessianError",
                    "FailedMinimizationError", "EmptyProcessError", "TargetShapeError", "FoldFileError",
                    "InputTransformError", "UnsupportedNetworkError", "FanOutError"],
}
_PUBLIC: Dict[str, str] = {name: module for module, names in _LAYERS.items() for name in names}

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
