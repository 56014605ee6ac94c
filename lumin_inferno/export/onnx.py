"""Export a trained summary statistic (one LUMIN ``Model`` or an ``Ensemble``) to ONNX, for onnxruntime.

The exported graph maps a ``float32 [batch, n_features]`` input (the same array ``Model.predict`` takes) to either
the soft bin-assignment probabilities ``float32 [batch, n_bins]``, i.e. the weighted mean over ensemble members of
:math:`\\mathrm{softmax}(z/\\tau)` (the :class:`~lumin_inferno.models.SoftmaxTemperatureTail` is part of the graph),
or the hard bin ``int64 [batch]``, the argmax of those probabilities (the bin used in the final fit). The batch
dimension is dynamic.

We do not use LUMIN's ``Model.export2onnx``: it needs a ``CatEmbedder`` (``AttributeError`` otherwise), fixes the
batch size in the graph, exports one file per ensemble member and does not create the output directory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..exceptions import ConfigurationError
from ..io import atomic_write

__all__ = ["OUTPUT_MODES", "export_onnx", "SummaryStatisticModule", "MergedSummaryModule"]

#: What the exported graph returns: the (ensemble-averaged) soft bin probabilities, or the argmax bin index.
OUTPUT_MODES: Tuple[str, ...] = ("probabilities", "bin_index")


class SummaryStatisticModule(nn.Module):
    """The network(s) of a trained summary statistic as one torch module:
    :math:`p_i(x) = \\sum_m w_m\\,f_{m,\\pi_m(i)}(x)` with :math:`\\sum_m w_m = 1` (LUMIN's ensemble average) and
    :math:`\\pi_m` an optional permutation of member m's output bins (INFERNO bins are unordered classes; see
    :func:`~lumin_inferno.evaluation.ensemble.align_ensemble`), then optionally :math:`\\arg\\max_i p_i(x)` as int64.

    Args:
        networks: the ``torch.nn.Module`` of each member (``Model.model``: head, body, tail).
        weights: one weight per member (normalised here to unit sum, as LUMIN's ``Ensemble`` does).
        output: ``"probabilities"`` or ``"bin_index"``.
        permutations: per member, the column order ``perm`` so that ``f_m(x)[:, perm]`` is aligned with the
            reference member; ``None``: no reordering (column-by-column average, LUMIN's ``Ensemble.predict``).
    """

    # buffers (register_buffer), declared for the type checker
    weights: Tensor
    permutations: Tensor

    def __init__(
        self,
        networks: Sequence[nn.Module],
        weights: Sequence[float],
        output: str = "probabilities",
        permutations: Optional[Sequence[Sequence[int]]] = None,
    ):
        super().__init__()
        if output not in OUTPUT_MODES:
            raise ConfigurationError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if len(networks) == 0 or len(networks) != len(weights):
            raise ConfigurationError(f"need one weight per network, got {len(networks)} networks and {len(weights)}")
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ConfigurationError(f"ensemble weights must be finite, ≥ 0 and not all zero, got {list(weights)}")
        self.networks = nn.ModuleList(networks)
        self.register_buffer("weights", (w / w.sum()).to(torch.float32))
        self.output = output
        self.permuted = permutations is not None
        if permutations is not None:
            perms = [np.asarray(p, dtype=np.int64).reshape(-1) for p in permutations]
            if len(perms) != len(networks) or len({len(p) for p in perms}) != 1:
                raise ConfigurationError(
                    f"need one permutation of equal length per network, got {len(perms)} for {len(networks)} networks"
                )
            for i, p in enumerate(perms):
                if not np.array_equal(np.sort(p), np.arange(len(p))):
                    raise ConfigurationError(f"permutation {i} is not a permutation of range({len(p)}): {p.tolist()}")
            self.register_buffer("permutations", torch.as_tensor(np.stack(perms)))

    def _member(self, i: int, inputs: Tensor) -> Tensor:
        out = self.networks[i](inputs)
        if self.permuted:
            out = out.index_select(-1, self.permutations[i])  # an ONNX Gather on the bin axis
        return out * self.weights[i]

    def forward(self, inputs: Tensor) -> Tensor:
        probabilities = self._member(0, inputs)
        for i in range(1, len(self.networks)):
            probabilities = probabilities + self._member(i, inputs)
        if self.output == "bin_index":
            return probabilities.argmax(dim=-1)
        return probabilities


class MergedSummaryModule(nn.Module):
    """A :class:`~lumin_inferno.evaluation.MergedSummary` as one torch module: member 0's argmax bin g, then for each
    further member m, g ← ``tables[m − 1][g · n_m + argmax f_m(x)]`` (ONNX ArgMax, Mul, Add, Gather). Output
    ``"bin_index"`` (int64 g) or ``"probabilities"``: the one-hot of g (float32 ``[batch, n_bins]``, a hard
    assignment in the layout of :class:`SummaryStatisticModule`'s)."""

    def __init__(self, networks: Sequence[nn.Module], member_bins: Sequence[int], tables: Sequence[np.ndarray],
                 output: str = "probabilities"):
        super().__init__()
        if output not in OUTPUT_MODES:
            raise ConfigurationError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if len(networks) < 2 or len(member_bins) != len(networks) or len(tables) != len(networks) - 1:
            raise ConfigurationError(f"a merged summary needs ≥ 2 networks, one bin count each and one table fewer, got "
                                     f"{len(networks)}, {len(member_bins)}, {len(tables)}")
        self.networks = nn.ModuleList(networks)
        self.member_bins = [int(k) for k in member_bins]
        self.n_bins = int(np.max(tables[-1])) + 1
        for i, t in enumerate(tables):
            self.register_buffer(f"table_{i}", torch.as_tensor(np.asarray(t, dtype=np.int64)))
        self.output = output

    def forward(self, inputs: Tensor) -> Tensor:
        group = self.networks[0](inputs).argmax(dim=-1)
        for i in range(1, len(self.networks)):
            table = getattr(self, f"table_{i - 1}")
            group = table.index_select(0, group * self.member_bins[i] + self.networks[i](inputs).argmax(dim=-1))
        if self.output == "bin_index":
            return group
        return (group[:, None] == torch.arange(self.n_bins, device=group.device)[None, :]).to(torch.float32)


def _members(model_or_ensemble: Any, weights: Optional[Sequence[float]]) -> Tuple[List[Any], List[float]]:
    """(LUMIN models, weights) of a ``Model``, an ``Ensemble`` (its own weights) or a list of models."""
    from lumin.nn.ensemble.abs_ensemble import AbsEnsemble
    from lumin.nn.models.abs_model import AbsModel

    from ..evaluation.ensemble import AlignedEnsemble, MergedSummary

    if isinstance(model_or_ensemble, MergedSummary):
        models = model_or_ensemble.lumin_models("export")
        if weights is not None:
            raise ConfigurationError("a MergedSummary has no member weights (its members' bins are combined, not "
                                     "averaged)")
        weights = [1.0] * len(models)
    elif isinstance(model_or_ensemble, AlignedEnsemble):
        models = list(model_or_ensemble.models)
        weights = [float(w) for w in model_or_ensemble.weights] if weights is None else list(weights)
    elif isinstance(model_or_ensemble, AbsEnsemble):
        models = list(model_or_ensemble.models)
        own = [float(w) for w in np.asarray(model_or_ensemble.weights).reshape(-1)]
        weights = own if weights is None else list(weights)
    elif isinstance(model_or_ensemble, AbsModel):
        models = [model_or_ensemble]
        weights = [1.0] if weights is None else list(weights)
    elif isinstance(model_or_ensemble, (list, tuple)):
        models = list(model_or_ensemble)
        weights = [1.0] * len(models) if weights is None else list(weights)
    else:
        raise ConfigurationError(
            "expected a LUMIN Model, Ensemble, AlignedEnsemble or list of Models, got "
            f"{type(model_or_ensemble).__name__}"
        )
    if not models:
        raise ConfigurationError("nothing to export: the ensemble has no models")
    for m in models:
        if not isinstance(m, AbsModel) or not hasattr(m, "model"):
            raise ConfigurationError(f"ensemble members must be LUMIN Models, got {type(m).__name__}")
    if len(weights) != len(models):
        raise ConfigurationError(f"{len(models)} models but {len(weights)} weights")
    return models, weights


def _n_features(models: Sequence[Any]) -> Tuple[int, List[int]]:
    """Width of the input array, checked to be the same for every member (continuous columns, then categorical
    codes as LUMIN's head reads them), and the cardinality of each categorical column (for the random check)."""
    widths = set()
    for m in models:
        head = m.head
        if getattr(m, "input_mask", None) is not None:
            raise ConfigurationError(
                "models with an input_mask (cont_subsample_rate) are not supported: apply the mask to the inputs "
                "before the exported graph"
            )
        if getattr(head, "n_matrix_in", 0):
            raise ConfigurationError("models with matrix inputs are not supported by the ONNX export")
        widths.add(int(head.n_cont_in) + int(getattr(head, "n_cat_in", 0) or 0))
    if len(widths) != 1:
        raise ConfigurationError(f"ensemble members take different numbers of inputs: {sorted(widths)}")
    embedder = getattr(models[0].head, "cat_embedder", None)
    cardinalities = [int(c) for c in getattr(embedder, "cat_szs", None) or []]
    return widths.pop(), cardinalities


def export_onnx(
    model_or_ensemble: Any,
    path: Union[str, Path],
    output: str = "probabilities",
    weights: Optional[Sequence[float]] = None,
    input_name: str = "inputs",
    output_name: Optional[str] = None,
    dynamo: bool = True,
    opset_version: Optional[int] = None,
    verify: bool = True,
    permutations: Optional[Sequence[Sequence[int]]] = None,
) -> Path:
    """Write the summary statistic to ``path`` as an ONNX model with a dynamic batch dimension; returns the path.

    Args:
        model_or_ensemble: a trained LUMIN ``Model``, a LUMIN ``Ensemble`` (its weights are used), a list of
            ``Model`` (uniform weights unless ``weights`` is given), an ``AlignedEnsemble`` or a ``MergedSummary``
            built with its models (:class:`MergedSummaryModule`; ``"probabilities"`` are then one-hot). Members must
            have no matrix inputs and no ``input_mask``; categorical features, if any, are columns of the float input,
            as for ``predict``.
        path: the ``.onnx`` file; its directory must exist. Written to a temporary file in that directory, checked
            with ``onnx.checker`` (and onnxruntime if ``verify``), then moved into place, so a failed export never
            leaves a partial or stale-looking file under ``path``.
        output: ``"probabilities"`` (``float32 [batch, n_bins]``, rows sum to 1) or ``"bin_index"``
            (``int64 [batch]``, argmax of the probabilities).
        weights: override the ensemble weights (normalised to unit sum).
        input_name / output_name: graph I/O names (default output name: the value of ``output``).
        dynamo: use torch's ``torch.export``-based exporter (default; the TorchScript exporter is deprecated in
            torch ≥ 2.9) or, with ``False``, the legacy one with ``dynamic_axes``. Both give the same graph
            semantics (tested).
        opset_version: ONNX opset; ``None`` lets torch choose.
        verify: run the written file with onnxruntime on a random batch of 5 and compare with torch (max abs
            difference ≤ 1e-5 on probabilities; identical bins except near-ties), raising ``ConfigurationError``
            on a mismatch.
        permutations: for an ensemble of INFERNO models, per member the bin order ``perm`` such that
            ``member.predict(x)[:, perm]`` is aligned with the reference member (``AlignedEnsemble.permutations``
            from :func:`~lumin_inferno.evaluation.ensemble.align_ensemble`); the graph then returns
            ``AlignedEnsemble.predict``. Default: the permutations of an ``AlignedEnsemble`` passed as
            ``model_or_ensemble``, else none (LUMIN's column-by-column average).

    Raises:
        ConfigurationError: unknown ``output``, missing directory, unsupported model, or a failed/invalid export.
    """
    if output not in OUTPUT_MODES:
        raise ConfigurationError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
    path = Path(path)
    if path.is_dir():
        raise ConfigurationError(f"{path} is a directory; give a file name such as {path / 'model.onnx'}")
    if not path.parent.is_dir():
        raise ConfigurationError(f"output directory {path.parent} does not exist")
    models, weights = _members(model_or_ensemble, weights)
    from ..evaluation.ensemble import MergedSummary

    if isinstance(model_or_ensemble, MergedSummary) and permutations is not None:
        raise ConfigurationError("permutations do not apply to a MergedSummary (its tables combine the members' bins)")
    if permutations is None:
        permutations = getattr(model_or_ensemble, "permutations", None)
    if permutations is not None:
        n_out = {int(m.get_out_size()) for m in models}
        if any(len(p) not in n_out for p in permutations) or len(n_out) != 1:
            raise ConfigurationError(f"permutations must have one entry per output bin ({sorted(n_out)} bins)")
    n_features, cardinalities = _n_features(models)
    output_name = output_name or output
    module: nn.Module
    if isinstance(model_or_ensemble, MergedSummary):
        module = MergedSummaryModule([m.model for m in models], model_or_ensemble.member_bins,
                                     model_or_ensemble.tables, output)
    else:
        module = SummaryStatisticModule([m.model for m in models], weights, output, permutations)
    modes = [m.model.training for m in models]
    try:
        with atomic_write(path) as tmp:
            module.eval()  # every member too: dropout off, batch-norm running statistics, as in Model.predict
            example = torch.zeros(2, n_features, dtype=torch.float32)  # batch ≥ 2: no 0/1 specialisation
            _torch_export(module, example, tmp, input_name, output_name, dynamo, opset_version)
            import onnx

            onnx.checker.check_model(str(tmp), full_check=True)
            if verify:
                _verify(module, tmp, n_features, cardinalities, input_name, output)
    except ConfigurationError:
        raise
    except Exception as err:  # the exporter and checker raise many types; report one, keep the cause
        raise ConfigurationError(f"ONNX export to {path} failed: {type(err).__name__}: {err}") from err
    finally:
        for m, training in zip(models, modes):
            m.model.train(training)
    return path


def _torch_export(
    module: nn.Module,
    example: Tensor,
    target: Path,
    input_name: str,
    output_name: str,
    dynamo: bool,
    opset_version: Optional[int],
) -> None:
    kwargs: dict = {"input_names": [input_name], "output_names": [output_name]}
    if opset_version is not None:
        kwargs["opset_version"] = opset_version
    with torch.no_grad(), _quiet_exporter():
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                module,
                (example,),
                str(target),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
                **kwargs,
            )
        else:
            torch.onnx.export(
                module,
                (example,),
                str(target),
                dynamo=False,
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                **kwargs,
            )


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, its deprecation/pytree warnings and its logger's notices (e.g.
    "torchvision is not installed"), restoring everything afterwards."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its deprecation
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own internals (pytree) in torch 2.13
            yield
    finally:
        exporter_log.setLevel(level)


def _verify(
    module: Any,
    target: Path,
    n_features: int,
    cardinalities: Sequence[int],
    input_name: str,
    output: str,
) -> None:
    """onnxruntime vs torch on a random batch of 5 (a size the exporter never saw); categorical columns (the last
    ``len(cardinalities)``) get valid integer codes."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, n_features)).astype(np.float32)
    for j, size in enumerate(cardinalities):
        x[:, n_features - len(cardinalities) + j] = rng.integers(0, size, len(x))
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_name: x})[0]
    with torch.no_grad():
        module.output = "probabilities"
        try:
            probs = module(torch.from_numpy(x)).numpy()
        finally:
            module.output = output
    if output == "probabilities":
        diff = float(np.abs(got - probs).max()) if got.shape == probs.shape else float("inf")
        if not diff <= 1e-5:
            raise ConfigurationError(f"onnxruntime differs from torch by {diff:.3g} (shape {got.shape})")
    else:
        top2 = np.sort(probs, axis=-1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 1e-5
        if got.shape != (len(x),) or got.dtype != np.int64 or not (got[clear] == probs.argmax(-1)[clear]).all():
            raise ConfigurationError(f"onnxruntime bin indices differ from torch's argmax: {got} vs {probs.argmax(-1)}")
