"""LUMIN ``Ensemble`` of INFERNO summary statistics: bin alignment, prediction, save/load with the loss configuration.

INFERNO's output bins are unordered classes: two networks trained from different initialisations learn similar
regions of feature space under different bin labels. LUMIN's ``Ensemble.predict`` returns
:math:`\\sum_m w_m\\,p_m(x)` column by column, which for INFERNO mixes unrelated bins and blurs the summary statistic
(measured on the paper problem in ``docs/ensembles_and_feature_selection.md``). :func:`align_ensemble` finds, once,
a permutation :math:`\\pi_m` of each member's bins that matches the reference member's binning on a reference sample
(:func:`~lumin_inferno.evaluation.templates.align_bins`), and returns an :class:`AlignedEnsemble` whose prediction is
:math:`\\bar p_i(x) = \\sum_m w_m\\,p_{m,\\pi_m(i)}(x)`.

LUMIN weights ensemble members by :math:`w_m \\propto 1/L_m` with :math:`L_m` the member's best validation loss
(``Ensemble._get_weights``, ``weighting="reciprocal"``, normalised to unit sum). With :class:`InfernoCallback` the
loss is the expected variance of the POI, :math:`L_m = \\sigma_m^2(s) > 0` in events², smaller is better, so the
weights are inverse-variance weights: positive, finite and larger for better members, as for a classification loss.

Saving (:func:`save_inferno_ensemble`) writes data only: each member's tensors (LUMIN's ``Model.save``), the
:class:`~lumin_inferno.analysis.Analysis` as JSON and a JSON manifest with the weights, the permutations and file
checksums, into a temporary directory that is renamed into place. Loading never unpickles (a saved ensemble from a
colleague cannot run code): tensors are read with ``torch.load(weights_only=True)`` into the networks of the
``ModelBuilder`` the caller passes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..exceptions import ConfigurationError, TargetShapeError
from .templates import align_bins

__all__ = [
    "AlignedEnsemble",
    "align_ensemble",
    "InfernoEnsemble",
    "save_inferno_ensemble",
    "load_inferno_ensemble",
    "MergedSummary",
    "merge_summaries",
]

#: Name of the manifest written by :func:`save_inferno_ensemble`.
MANIFEST = "inferno_ensemble.json"
ANALYSIS_FILE = "analysis.json"
_STEM = "ensemble"  # LUMIN's base name: ensemble_{i}.h5
_FORMAT = "lumin_inferno.inferno_ensemble"
_VERSION = 2
#: A permutation of a member's bins: a sequence of ints or an int array (what :func:`align_ensemble` finds).
_Permutation = Union[Sequence[int], np.ndarray]


def _as_array(x: Any) -> np.ndarray:
    """Inputs as a float32 array (LUMIN's ``Ensemble.predict`` fails on a DataFrame; we accept one)."""
    values = getattr(x, "values", x)  # pandas
    return np.asarray(values, dtype=np.float32)


def _members_and_weights(ensemble: Any) -> tuple:
    """(models, normalised weights) of a LUMIN ``Ensemble``, an :class:`AlignedEnsemble` or a list of ``Model``."""
    from lumin.nn.ensemble.abs_ensemble import AbsEnsemble
    from lumin.nn.models.abs_model import AbsModel

    if isinstance(ensemble, AlignedEnsemble):
        return list(ensemble.models), np.asarray(ensemble.weights, dtype=float)
    if isinstance(ensemble, AbsEnsemble):
        models, weights = list(ensemble.models), np.asarray(ensemble.weights, dtype=float).reshape(-1)
    elif isinstance(ensemble, (list, tuple)) and all(isinstance(m, AbsModel) for m in ensemble):
        models, weights = list(ensemble), np.ones(len(ensemble))
    else:
        raise ConfigurationError(
            f"expected a LUMIN Ensemble or a list of LUMIN Models, got {type(ensemble).__name__}"
        )
    if not models:
        raise ConfigurationError("the ensemble has no models")
    if len(weights) != len(models) or not np.all(np.isfinite(weights)) or np.any(weights < 0) or not weights.sum() > 0:
        raise ConfigurationError(f"need one finite weight ≥ 0 per model (not all 0), got {weights.tolist()}")
    return models, weights / weights.sum()


def _check_permutations(
    permutations: Sequence[_Permutation], n_models: int, n_bins: Optional[int]
) -> List[np.ndarray]:
    perms = [np.asarray(p, dtype=np.int64).reshape(-1) for p in permutations]
    if len(perms) != n_models:
        raise ConfigurationError(f"need one permutation per ensemble member: {n_models} members, {len(perms)} given")
    for i, p in enumerate(perms):
        size = len(p) if n_bins is None else n_bins
        if len(p) != size or not np.array_equal(np.sort(p), np.arange(size)):
            raise ConfigurationError(f"permutation {i} is not a permutation of range({size}): {p.tolist()}")
    return perms


@dataclass
class AlignedEnsemble:
    """An ensemble of INFERNO models whose bins are aligned before averaging.

    ``predict(x)`` returns :math:`\\bar p_i(x) = \\sum_m w_m\\,p_{m,\\pi_m(i)}(x)` (``[n_events, n_bins]``, rows sum
    to 1), with :math:`w_m` the (LUMIN) ensemble weights normalised to unit sum and :math:`\\pi_m` = ``permutations[m]``
    (identity for the reference member); ``predict_bins(x)`` its argmax, the hard bin used in the final fit. An
    instance is a bin function for :func:`~lumin_inferno.evaluation.analysis_template_model` (``__call__`` = hard bins).

    Attributes:
        models: the LUMIN ``Model`` members, in the ensemble's order.
        weights: normalised member weights.
        permutations: per member, the column order that maps its bins onto the reference member's.
        reference: index of the reference member (the most weighted one by default).
        bs: default prediction batch size of the members (``None``: all events at once).
    """

    models: List[Any]
    weights: np.ndarray
    permutations: List[np.ndarray]
    reference: int = 0
    bs: Optional[int] = None

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=float)
        self.permutations = _check_permutations(self.permutations, len(self.models), None)

    @property
    def n_bins(self) -> int:
        return len(self.permutations[0])

    def member_predictions(self, x: Any, bs: Optional[int] = None, aligned: bool = True) -> List[np.ndarray]:
        """Each member's softmax output on ``x`` (``[n_events, n_bins]`` arrays), columns aligned if ``aligned``."""
        x = _as_array(x)
        bs = self.bs if bs is None else bs
        probs = [np.asarray(m.predict(x, bs=bs), dtype=np.float64) for m in self.models]
        return [p[:, perm] for p, perm in zip(probs, self.permutations)] if aligned else probs

    def predict(self, x: Any, bs: Optional[int] = None) -> np.ndarray:
        """Weighted mean of the members' aligned softmax outputs, ``[n_events, n_bins]`` (bin probabilities)."""
        probs = self.member_predictions(x, bs)
        return np.sum([w * p for w, p in zip(self.weights, probs)], axis=0)

    def predict_bins(self, x: Any, bs: Optional[int] = None) -> np.ndarray:
        """Hard bin (int64 index in [0, n_bins)) of each event: argmax of :meth:`predict`."""
        return self.predict(x, bs).argmax(axis=1)

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict_bins(x)

    def to_lumin(self, model_builder: Any = None) -> Any:
        """A LUMIN ``Ensemble`` with the same members and weights (its own ``predict`` is *not* aligned)."""
        from lumin.nn.ensemble.ensemble import Ensemble

        builder = model_builder or getattr(self.models[0], "model_builder", None)
        return Ensemble.from_models(list(self.models), weights=self.weights, model_builder=builder)


def align_ensemble(
    ensemble: Any,
    inputs: Any,
    reference: Optional[int] = None,
    bs: Optional[int] = None,
) -> AlignedEnsemble:
    """Align the bins of every ensemble member to a reference member on the sample ``inputs``.

    Args:
        ensemble: a LUMIN ``Ensemble`` (its weights are kept: LUMIN's 1/validation-loss = 1/σ²(s) weighting) or a
            list of LUMIN ``Model`` (uniform weights).
        inputs: reference sample ``[n_events, n_features]`` (array or DataFrame), e.g. a validation or test fold's
            nominal inputs; a few thousand events of each process are plenty. The permutations are fixed here and
            then apply to any input, shifted templates included.
        reference: index of the member whose bin labels are kept; default the most weighted member (first on ties).
        bs: prediction batch size (``None``: the whole sample at once), here and as the result's default.

    Returns:
        An :class:`AlignedEnsemble`; ``permutations[m]`` maximises the number of reference-sample events that member m
        and the reference put in the same (argmax) bin.
    """
    models, weights = _members_and_weights(ensemble)
    ref = int(np.argmax(weights)) if reference is None else int(reference)
    if not 0 <= ref < len(models):
        raise ConfigurationError(f"reference member {ref} out of range for {len(models)} models")
    x = _as_array(inputs)
    if x.ndim != 2 or len(x) == 0:
        raise TargetShapeError(f"need a non-empty [n_events, n_features] reference sample, got shape {x.shape}")
    probs = [np.asarray(m.predict(x, bs=bs)) for m in models]
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise ConfigurationError(f"ensemble members give outputs of different shapes: {sorted(shapes)}")
    perms = [np.arange(probs[ref].shape[1]) if i == ref else align_bins(probs[ref], p) for i, p in enumerate(probs)]
    return AlignedEnsemble(models, weights, perms, ref, bs)


# ------------------------------------------------------------------------------------------------- merged bins
@dataclass
class MergedSummary:
    """Several hard summaries combined into one of ``n_bins`` bins: the cells of the members' joint binning
    (member 1's bin × member 2's bin × …), merged back into ``n_bins`` groups (:func:`merge_summaries`).

    ``__call__(x)`` is the hard bin of each event (a bin function for
    :func:`~lumin_inferno.evaluation.analysis_template_model`): member 0's bin, then for each further member m the
    group ``tables[m - 1][group · n_cells_m + bin_m]``. A cell the merge never saw goes with the group the table
    gives it (the merge puts empty cells where they cost nothing).

    Attributes:
        bin_functions: each member's hard bins (inputs → int in [0, ``member_bins[m]``)).
        member_bins: each member's number of bins.
        tables: for members 1…M−1, ``[n_groups · member_bins[m]]`` group of each (previous group, member bin) cell.
        models: the LUMIN ``Model`` of each member when its bin function is the argmax of that model's output
            (what :func:`~lumin_inferno.export.export_onnx` exports); ``None`` for other bin functions.
    """

    bin_functions: List[Any]
    member_bins: List[int]
    tables: List[np.ndarray]
    models: Optional[List[Any]] = None

    @property
    def n_bins(self) -> int:
        return int(self.tables[-1].max()) + 1 if self.tables else self.member_bins[0]

    def lumin_models(self, purpose: str) -> List[Any]:
        """The members' LUMIN models, checked to be there and to have ``member_bins`` outputs each (what export
        and save need; ``purpose`` names the operation in the error)."""
        if self.models is None:
            raise ConfigurationError("this MergedSummary holds bin functions, not LUMIN models: build it with "
                                     f"merge_summaries(..., models=...) to {purpose} it")
        outputs = [int(m.get_out_size()) for m in self.models]
        if outputs != list(self.member_bins):
            raise ConfigurationError(f"the MergedSummary's member bins {self.member_bins} are not its models' "
                                     f"output sizes {outputs}")
        return list(self.models)

    def __call__(self, x: Any) -> np.ndarray:
        groups = _member_bins(self.bin_functions[0](x), self.member_bins[0], 0)
        for m, (fn, k, table) in enumerate(zip(self.bin_functions[1:], self.member_bins[1:], self.tables), 1):
            groups = table[groups * k + _member_bins(fn(x), k, m)]
        return groups


def _member_bins(bins: Any, k: int, member: int) -> np.ndarray:
    """A member's bins, checked to be integers in [0, k) (a larger one would read another cell's group)."""
    bins = np.asarray(bins)
    if not np.issubdtype(bins.dtype, np.integer) or (len(bins) and (bins.min() < 0 or bins.max() >= k)):
        raise TargetShapeError(f"member {member}'s bins must be integers in [0, {k}); got dtype {bins.dtype}, range "
                               f"[{bins.min() if len(bins) else '-'}, {bins.max() if len(bins) else '-'}]")
    return bins


def _map_bins(events: Any, f: Any) -> Any:
    """``events`` (an EventBins) with ``f(bins, key)`` applied to its nominal bins (key ``None``) and to each
    shifted input's up and down bins (key ``(column, 0 or 1)``)."""
    from dataclasses import replace

    return replace(events, bins=f(events.bins, None),
                   shifted_bins={k: (f(u, (k, 0)), f(d, (k, 1))) for k, (u, d) in events.shifted_bins.items()})


def _cells(a: Any, b: Any, k_b: int, member: int) -> Any:
    """The EventBins of the joint binning (a's bin × b's bin, b = ``member``) of the same events (the bins of
    both already checked to be in range)."""
    if (len(a) != len(b) or set(a.shifted_bins) != set(b.shifted_bins) or not np.array_equal(a.targets, b.targets)
            or not np.array_equal(a.weights, b.weights)):
        raise ConfigurationError(f"member {member}'s EventBins must be of the same events (targets, weights) and the "
                                 "same shifted inputs as the others'")
    return _map_bins(a, lambda x, key: x * k_b + (b.bins if key is None else b.shifted_bins[key[0]][key[1]]))


def _merge_table(analysis: Any, cells: Any, n_cells: int, n_bins: int) -> np.ndarray:
    """Group of each of ``n_cells`` summary cells after :func:`~lumin_inferno.statistics.merging.merge_bins` on the
    Asimov information of the analysis's model of ``cells`` (MC statistics left out of the criterion)."""
    from dataclasses import replace

    from ..statistics.merging import merge_bins

    a = replace(analysis, n_bins=n_cells, mc_stat=False)
    model = cells.template_model(a)
    theta = model.nominal()
    pois = a.objective_pois if a.objective.kind in ("weighted_variance", "generalised_variance") else \
        a.objective_pois[:1]
    weights = dict(zip(pois, a.objective.weights or ())) if a.objective.kind == "weighted_variance" else {}
    mergeable = np.zeros(model.n_bins, dtype=bool)
    mergeable[model.channel_slices()[a.summary]] = True
    labels = merge_bins(model.expected(theta).detach().numpy(), model.jacobian(theta).detach().numpy(),
                        model.constraint_precision().detach().numpy(), n_bins,
                        {model.index(p): float(weights.get(p, 1.0)) for p in pois}, mergeable)
    return labels[mergeable]


def merge_summaries(analysis: Any, bin_functions: Sequence[Any], member_bins: Sequence[int], sample: Sequence[Any],
                    n_bins: Optional[int] = None, models: Optional[Sequence[Any]] = None) -> MergedSummary:
    """Combine the hard summaries of several members into one of ``n_bins`` (default ``analysis.n_bins``) bins.

    The cells of member 0 × member 1 (``member_bins[0] · member_bins[1]`` of them) are merged greedily into
    ``n_bins`` groups, each merge the one that raises the expected variance of the POI least
    (:func:`~lumin_inferno.statistics.merging.merge_bins`, on the analysis's Asimov Fisher information of the
    cells' templates, every nuisance and control region included); then those groups × member 2, and so on. Every
    member's partition is one of the merges the search can reach, so on ``sample`` the result keeps more information
    than a member whenever the greedy search finds it; an independent sample says whether that holds beyond it.

    Args:
        analysis: the measurement (its objective's POIs: the variance of the first, or the weighted sum for
            ``"weighted_variance"``/``"generalised_variance"``, is what merging keeps small).
        bin_functions: each member's hard bins (e.g. ``lambda x: argmax_bins(model.predict(x))``).
        member_bins: each member's number of bins.
        sample: per member, its :class:`~lumin_inferno.evaluation.EventBins` on one sample (the same events:
            :func:`~lumin_inferno.evaluation.event_bins` or :func:`~lumin_inferno.evaluation.foldfile_event_bins`
            with that member's bin function), e.g. the training fold file, large enough for the joint cells.
        models: the members' LUMIN ``Model`` s, when each bin function is the argmax of that model's output: kept on
            the result so that :func:`~lumin_inferno.export.export_onnx` can write the merged summary as one graph.
    """
    n_bins = analysis.n_bins if n_bins is None else int(n_bins)
    if not (len(bin_functions) == len(member_bins) == len(sample)) or not bin_functions:
        raise ConfigurationError(f"{len(bin_functions)} bin functions, {len(member_bins)} bin counts and "
                                 f"{len(sample)} EventBins: need one of each per member, at least one")
    if models is not None and len(models) != len(bin_functions):
        raise ConfigurationError(f"{len(models)} models for {len(bin_functions)} bin functions")
    if len(bin_functions) < 2:
        raise ConfigurationError("merging needs at least two members")
    for m, (k, b) in enumerate(zip(member_bins, sample)):
        for bins in [b.bins] + [v for pair in b.shifted_bins.values() for v in pair]:
            _member_bins(bins, int(k), m)
    if int(member_bins[0]) * int(member_bins[1]) < n_bins:
        raise ConfigurationError(f"members of {member_bins[0]} and {member_bins[1]} bins give "
                                 f"{int(member_bins[0]) * int(member_bins[1])} cells, fewer than n_bins = {n_bins}")
    current, k_current, tables = sample[0], int(member_bins[0]), []
    for m, (b, k) in enumerate(zip(sample[1:], member_bins[1:]), 1):
        cells = _cells(current, b, int(k), m)
        table = _merge_table(analysis, cells, k_current * int(k), n_bins)
        tables.append(table)
        current = _relabel(cells, table)
        k_current = n_bins
    return MergedSummary(list(bin_functions), [int(k) for k in member_bins], tables,
                         None if models is None else list(models))


def _relabel(cells: Any, table: np.ndarray) -> Any:
    """``cells`` with every cell replaced by its group in ``table``."""
    return _map_bins(cells, lambda x, key: table[x])


# ------------------------------------------------------------------------------------------------- save / load
@dataclass
class InfernoEnsemble:
    """What :func:`load_inferno_ensemble` returns: the LUMIN ``Ensemble``, the :class:`~lumin_inferno.analysis.
    Analysis` it was trained for, and the bin permutations.

    ``aligned`` is the :class:`AlignedEnsemble` (prediction with aligned bins). To train more members for the same
    measurement: ``partial(InfernoCallback, loaded.analysis, transform=transform)`` (the transform of custom exact
    systematics is code, so it is passed in, never loaded).
    """

    ensemble: Any
    analysis: Any
    permutations: List[np.ndarray]
    reference: int = 0
    metadata: Dict[str, Any] = field(default_factory=dict)
    merged_tables: Optional[List[np.ndarray]] = None

    @property
    def aligned(self) -> AlignedEnsemble:
        return AlignedEnsemble(list(self.ensemble.models), self.ensemble.weights, self.permutations, self.reference)

    @property
    def merged(self) -> Optional[MergedSummary]:
        """The :class:`MergedSummary` of the members (argmax bins, saved tables) when a merged summary was saved."""
        if self.merged_tables is None:
            return None
        models = list(self.ensemble.models)
        return MergedSummary([_argmax_function(m) for m in models], [int(m.get_out_size()) for m in models],
                             list(self.merged_tables), models)


def _argmax_function(model: Any) -> Any:
    from .templates import argmax_bins

    return lambda x: argmax_bins(model.predict(_as_array(x)))


def _check_tables(tables: Sequence[Any], member_bins: Sequence[int]) -> List[np.ndarray]:
    """Merge tables as saved: one per member after the first, of (previous groups × member bins) entries, groups
    0…G−1 all used in the last."""
    out = [np.asarray(t, dtype=np.int64).reshape(-1) for t in tables]
    if len(out) != len(member_bins) - 1:
        raise ConfigurationError(f"{len(out)} merge tables for {len(member_bins)} members")
    groups = int(member_bins[0])
    for m, t in enumerate(out, 1):
        if len(t) != groups * int(member_bins[m]) or t.min() < 0:
            raise ConfigurationError(f"merge table {m - 1} has {len(t)} entries ≥ 0 expected {groups} × "
                                     f"{member_bins[m]}")
        groups = int(t.max()) + 1
        if set(np.unique(t).tolist()) != set(range(groups)):
            raise ConfigurationError(f"merge table {m - 1} leaves groups unused: {sorted(set(np.unique(t).tolist()))}")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_inferno_ensemble(
    directory: Union[str, Path],
    ensemble: Any,
    analysis: Any,
    permutations: Optional[Sequence[_Permutation]] = None,
    reference: Optional[int] = None,
    overwrite: bool = False,
) -> Path:
    """Save an INFERNO ensemble with the analysis it was trained for, as data only (no pickles).

    Args:
        directory: target directory (created; its parent must exist). Written as a temporary sibling directory and
            renamed into place, so a failed save leaves no partial directory and an existing save untouched.
        ensemble: a LUMIN ``Ensemble``, an :class:`AlignedEnsemble` (its permutations are used unless given), a
            :class:`MergedSummary` built with its models (its tables are saved; uniform weights) or a list of LUMIN
            models.
        analysis: the :class:`~lumin_inferno.analysis.Analysis`.
        permutations: per member, the aligned column order (see :func:`align_ensemble`); ``None`` = identity.
        reference: index of the reference member (stored for information).
        overwrite: replace an existing save at ``directory``.

    Returns:
        The directory. Files: ``ensemble_{i}.h5`` (one per member, LUMIN's ``Model.save``: tensors only),
        ``analysis.json`` and the manifest ``inferno_ensemble.json`` (weights, permutations, SHA-256 of each file,
        and for a :class:`MergedSummary` its ``"merged_tables"``).
    """
    from ..analysis import Analysis
    from ..io import atomic_directory

    if not isinstance(analysis, Analysis):
        raise ConfigurationError(f"save_inferno_ensemble needs the Analysis, got {type(analysis).__name__}")
    directory = Path(directory)
    if not directory.parent.is_dir():
        raise ConfigurationError(f"parent directory {directory.parent} does not exist")
    if directory.exists() and not overwrite:
        raise ConfigurationError(f"{directory} exists; pass overwrite=True to replace it")
    if directory.exists() and not (directory / MANIFEST).is_file() and any(directory.iterdir()):
        raise ConfigurationError(
            f"{directory} is a non-empty directory that is not a saved INFERNO ensemble; not replacing it"
        )
    tables = None
    if isinstance(ensemble, MergedSummary):
        tables = _check_tables(ensemble.tables, ensemble.member_bins)
        ensemble = ensemble.lumin_models("save")
    models, weights = _members_and_weights(ensemble)
    if isinstance(ensemble, AlignedEnsemble):
        permutations = ensemble.permutations if permutations is None else permutations
        reference = ensemble.reference if reference is None else reference
    n_bins = int(models[0].get_out_size())
    if n_bins != analysis.n_bins:
        raise ConfigurationError(f"the members have {n_bins} output bins but the analysis has n_bins = {analysis.n_bins}")
    perms = _check_permutations(
        [np.arange(n_bins)] * len(models) if permutations is None else permutations, len(models), n_bins
    )
    with atomic_directory(directory) as tmp:
        for i, m in enumerate(models):
            m.save(str(tmp / f"{_STEM}_{i}.h5"))
        (tmp / ANALYSIS_FILE).write_text(analysis.to_json())
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {
            "format": _FORMAT,
            "version": _VERSION,
            "n_models": len(models),
            "n_bins": n_bins,
            "weights": [float(w) for w in weights],
            "reference": None if reference is None else int(reference),
            "permutations": [p.tolist() for p in perms],
            "files": {name: _sha256(tmp / name) for name in files},
        }
        if tables is not None:
            manifest["merged_tables"] = [t.tolist() for t in tables]
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: its presence marks a complete save
    return directory


def load_inferno_ensemble(
    directory: Union[str, Path], model_builder: Any, verify: bool = True
) -> InfernoEnsemble:
    """Load what :func:`save_inferno_ensemble` wrote, without unpickling anything: the analysis from JSON, the
    weights and permutations from the manifest, and each member's tensors with ``torch.load(weights_only=True)``
    into networks built by ``model_builder`` (the architecture is code: build it as the saved ensemble was built;
    a mismatch is a named error).

    Members are read in numeric order ``ensemble_0.h5, ensemble_1.h5, …``.

    Raises:
        ConfigurationError: missing directory, manifest or file; unreadable or inconsistent manifest; checksum
            mismatch; member tensors that do not fit ``model_builder``'s network.
    """
    import torch
    from lumin.nn.ensemble.ensemble import Ensemble
    from lumin.nn.models.model import Model

    from ..analysis import Analysis

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigurationError(f"no saved INFERNO ensemble at {directory} (not a directory)")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ConfigurationError(f"{directory} has no {MANIFEST}: not a saved INFERNO ensemble, or an incomplete one")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}")
        if int(manifest["version"]) != _VERSION:
            raise ValueError(f"version {manifest['version']} is not the one this lumin_inferno reads ({_VERSION})")
        n_models, n_bins, files = int(manifest["n_models"]), int(manifest["n_bins"]), dict(manifest["files"])
        weights = np.asarray(manifest["weights"], dtype=float)
        perms = _check_permutations(manifest["permutations"], n_models, n_bins)
        tables = manifest.get("merged_tables")
        tables = None if tables is None else _check_tables(tables, [n_bins] * n_models)
    except (ValueError, KeyError, TypeError, ConfigurationError) as err:
        raise ConfigurationError(f"corrupt manifest {manifest_path}: {type(err).__name__}: {err}") from err
    needed = [f"{_STEM}_{i}.h5" for i in range(n_models)] + [ANALYSIS_FILE]
    missing = [name for name in needed if not (directory / name).is_file() or name not in files]
    missing += [name for name in files if not (directory / name).is_file() and name not in missing]
    if missing:
        raise ConfigurationError(f"saved INFERNO ensemble {directory} lacks {missing}")
    if verify:
        bad = [name for name, digest in files.items() if _sha256(directory / name) != digest]
        if bad:
            raise ConfigurationError(f"checksum mismatch in {directory}: {bad} changed since the save (corrupt?)")
    analysis = Analysis.load(directory / ANALYSIS_FILE)
    models = []
    for i in range(n_models):
        path = directory / f"{_STEM}_{i}.h5"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            m = Model(model_builder)
            m.model.load_state_dict(state["model"])
            m.opt.load_state_dict(state["opt"])
            m.input_mask = state.get("input_mask")
        except Exception as err:
            raise ConfigurationError(
                f"member {path.name} of {directory} does not load into model_builder's network: "
                f"{type(err).__name__}: {err}"
            ) from err
        models.append(m)
    if any(int(m.get_out_size()) != n_bins for m in models):
        raise ConfigurationError(f"members of {directory} do not have {n_bins} output bins as the manifest says")
    ensemble = Ensemble.from_models(models, weights=weights, model_builder=model_builder)
    ensemble.weights = weights  # exactly as saved (from_models renormalises, which can move the last bit)
    reference = manifest.get("reference")
    return InfernoEnsemble(
        ensemble=ensemble,
        analysis=analysis,
        permutations=perms,
        reference=0 if reference is None else int(reference),
        metadata={k: v for k, v in manifest.items() if k not in ("permutations", "weights", "merged_tables")},
        merged_tables=tables,
    )
