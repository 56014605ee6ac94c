"""Export a trained summary statistic to the analyst's downstream tools: ONNX (onnxruntime) for the network and a
pyhf (HistFactory JSON) workspace for the binned likelihood of its hard-assigned templates. See docs/export.md."""

from .._compat import import_lumin

import_lumin()  # LUMIN first, with pdpbox's global warning filter undone (lumin_inferno._compat)

from .histfactory import parse_datacard, write_combine_datacard, write_histfactory_xml
from .onnx import OUTPUT_MODES, MergedSummaryModule, SummaryStatisticModule, export_onnx
from .pyhf import (
    pyhf_modifier_settings,
    pyhf_nuisance_scales,
    pyhf_poi_uncertainty,
    pyhf_search_figures,
    pyhf_workspace,
    write_pyhf_workspace,
)

__all__ = [
    "write_histfactory_xml",
    "write_combine_datacard",
    "parse_datacard",
    "OUTPUT_MODES",
    "SummaryStatisticModule",
    "MergedSummaryModule",
    "export_onnx",
    "pyhf_workspace",
    "write_pyhf_workspace",
    "pyhf_poi_uncertainty",
    "pyhf_search_figures",
    "pyhf_modifier_settings",
    "pyhf_nuisance_scales",
]
