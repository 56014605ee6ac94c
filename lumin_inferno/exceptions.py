"""All errors raised by lumin_inferno, in one place so that users can catch them and tests can assert them.

Every error derives from :class:`LuminInfernoError` (itself a ``ValueError``, because every one of them is a
statement that some input, configuration or numerical state is not acceptable).
"""

__all__ = [
    "LuminInfernoError",
    "InvalidModelSpecError",
    "SingularHessianError",
    "EmptyProcessError",
    "TargetShapeError",
    "InputTransformError",
    "FoldFileError",
    "FailedMinimizationError",
    "ConfigurationError",
    "UnsupportedNetworkError",
    "FanOutError",
]


class LuminInfernoError(ValueError):
    """Base class of every lumin_inferno error."""


class InvalidModelSpecError(LuminInfernoError):
    """A likelihood / nuisance / constraint specification is inconsistent (unknown name, wrong shape, duplicate)."""


class SingularHessianError(LuminInfernoError):
    """The Hessian (Fisher information) is singular, not finite, or not positive definite, so no variance exists."""


class EmptyProcessError(LuminInfernoError):
    """A batch (or sample) has no events, or zero total weight, for a process whose template is needed."""


class TargetShapeError(LuminInfernoError):
    """Targets do not have the shape or values the callback expects (one column of process labels)."""


class InputTransformError(LuminInfernoError):
    """A shape-nuisance input transform changed the input shape, or does not return the inputs at nominal values."""


class FoldFileError(LuminInfernoError):
    """A LUMIN fold file lacks a dataset (e.g. a systematic column) or holds inconsistent data."""


class FailedMinimizationError(LuminInfernoError):
    """A likelihood fit or profile did not converge (MIGRAD/MINOS reported an invalid minimum)."""


class ConfigurationError(LuminInfernoError):
    """The training set-up cannot work as given (e.g. a batch size larger than a fold, a model without a softmax
    output)."""


class UnsupportedNetworkError(ConfigurationError):
    """The network has a layer whose forward tangent cannot be built from its recorded activations (batch
    normalisation, active dropout, skip connections, categorical embeddings, an unknown module); INFERNO then uses
    its generic Jacobian."""


class FanOutError(LuminInfernoError):
    """A task of a fan-out (an ensemble member, a chunk of toys) failed after its retries; finished tasks are kept
    on disk."""
