"""lumin_inferno: train LUMIN models for the final measurement.

INFERNO (de Castro & Dorigo 2018) as LUMIN callbacks, on a pure-torch binned-likelihood core.
"""

from ._compat import import_lumin as _import_lumin

_import_lumin()

from .callbacks import HardBinPredHandler, InfernoCallback, InputTransform  # noqa: E402
from .data import PaperBenchmark, PaperTransform, paper_benchmark, sample_paper, write_paper_foldfiles  # noqa: E402
from .exceptions import (  # noqa: E402
    ConfigurationError,
    EmptyProcessError,
    FailedMinimization,
    FoldFileError,
    InputTransformError,
    InvalidModelSpec,
    LuminInfernoError,
    SingularHessianError,
    TargetShapeError,
)
from .models import SoftmaxTemperatureTail  # noqa: E402
from .statistics import (  # noqa: E402
    NormSystematic,
    Parameter,
    ShapeSystematic,
    TemplateModel,
    covariance,
    expected_poi_uncertainty,
    fisher_information,
    nll_hessian,
    poi_variance,
)
from .version import __version__  # noqa: E402

__all__ = [
    "__version__",
    "InfernoCallback",
    "InputTransform",
    "HardBinPredHandler",
    "SoftmaxTemperatureTail",
    "Parameter",
    "ShapeSystematic",
    "NormSystematic",
    "TemplateModel",
    "nll_hessian",
    "fisher_information",
    "covariance",
    "poi_variance",
    "expected_poi_uncertainty",
    "PaperBenchmark",
    "PaperTransform",
    "paper_benchmark",
    "sample_paper",
    "write_paper_foldfiles",
    "LuminInfernoError",
    "InvalidModelSpec",
    "SingularHessianError",
    "EmptyProcessError",
    "TargetShapeError",
    "InputTransformError",
    "FoldFileError",
    "FailedMinimization",
    "ConfigurationError",
]
