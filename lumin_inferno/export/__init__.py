"""Export a trained summary statistic to the analyst's downstream tools: ONNX (onnxruntime) for the network and a
pyhf (HistFactory JSON) workspace for the binned likelihood of its hard-assigned templates. See docs/export.md."""

from .histfactory import parse_datacard, write_combine_datacard, write_histfactory_xml
from .onnx import OUTPUT_MODES, SummaryStatisticModule, export_onnx
from .pyhf import (
    MODIFIER_SETTINGS,
    SHAPE_MATCHING,
    analysis_modifier_settings,
    analysis_workspace,
    pyhf_parameter_map,
    pyhf_poi_scale,
    pyhf_poi_uncertainty,
    pyhf_workspace,
    write_pyhf_workspace,
)

__all__ = [
    "write_histfactory_xml",
    "write_combine_datacard",
    "parse_datacard",
    "OUTPUT_MODES",
    "SummaryStatisticModule",
    "export_onnx",
    "MODIFIER_SETTINGS",
    "SHAPE_MATCHING",
    "pyhf_workspace",
    "write_pyhf_workspace",
    "pyhf_poi_scale",
    "pyhf_parameter_map",
    "pyhf_poi_uncertainty",
    "analysis_workspace",
    "analysis_modifier_settings",
]
