"""Export a trained summary statistic to the analyst's downstream tools: ONNX (onnxruntime) for the network and a
pyhf (HistFactory JSON) workspace for the binned likelihood of its hard-assigned templates."""

from .onnx import OUTPUT_MODES, SummaryStatisticModule, export_onnx

__all__ = ["OUTPUT_MODES", "SummaryStatisticModule", "export_onnx"]
