"""The binned likelihood of an :class:`~lumin_inferno.analysis.Analysis` as a pyhf (HistFactory JSON) workspace.

Input: the analysis and its :class:`~lumin_inferno.statistics.TemplateModel` (from
:func:`~lumin_inferno.analysis.template_model`, e.g. via :func:`~lumin_inferno.evaluation.analysis_template_model`:
hard-assigned templates of a test sample). Output: one pyhf channel per channel (the learned summary, then each
fixed channel), one sample per process present there holding its expected counts, the observations (default the
model's Asimov data) and one measurement whose POI is the analysis's first POI (the other POIs are free
normfactors).

Mapping, modifier by modifier:

* factors → ``normfactor``; a Gaussian-constrained factor k ~ N(1, σ) named ``"lumi"`` → pyhf's ``lumi``
  modifier (the schema fixes its name), any other → a ``histosys`` of its name with hi/lo = (1 ± σ) × nominal,
  which ``code4p`` interpolates linearly, k = 1 + σα' (exact alone on a sample; with other shape systematics on
  the same sample pyhf adds the two changes where we multiply, a difference of second order, so the Fisher
  information is the same);
* shape systematics → ``histosys`` (``code4p``, the code of our core), normalisation systematics → ``normsys``
  (the analysis's ``code4`` or ``code1``; pyhf sets one code per modifier type);
* MC statistics → one ``staterror`` per channel with each MC process's √Σw² (pyhf forms δ_i = √Σσ²/Σν as we do);
* parameters keep their names (our γ's are pyhf's ``staterror_<channel>[i]``).

pyhf gives every histosys/normsys parameter α' a unit Gaussian. A nuisance of ours with constraint width c ≠ 1
(its templates at α = ±1 are ±1/c σ) is exported with α = c α': normsys hi/lo are our factors at α = ±c, and
histosys hi/lo are chosen so that pyhf's ``code4p`` in α' equals ours in α = cα' to second order (same value,
slope and curvature at nominal: identical Fisher information and Hessian σ; the profile differs at O(α⁴)). With
c = 1 the export is exact (tested against pyhf's own autodiff Hessian to 1e-10). A **free** nuisance has no pyhf
equivalent: it gets a wide constraint c = 100 × its expected uncertainty from our Fisher information (shifts σ(POI)
by ~1e-4 relative).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..exceptions import ConfigurationError, SingularHessianError
from ..io import atomic_write_text
from ..statistics.interpolation import code1, code4
from ..statistics.likelihood import TemplateModel

__all__ = [
    "pyhf_workspace",
    "write_pyhf_workspace",
    "pyhf_modifier_settings",
    "pyhf_nuisance_scales",
    "pyhf_poi_uncertainty",
    "pyhf_search_figures",
]

#: a free nuisance is exported with a Gaussian this many times wider than its expected uncertainty.
FREE_WIDTH_FACTOR = 100.0
_DEFAULT_SETTINGS = {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}


def pyhf_modifier_settings(analysis) -> Dict[str, Dict[str, str]]:
    """pyhf ``modifier_settings`` for the workspace of ``analysis``: ``code4p`` shapes and the analysis's one
    normalisation code. pyhf sets interpolation codes per modifier *type*, so an analysis mixing ``code1`` and
    ``code4`` normalisations cannot be written exactly (:class:`ConfigurationError`)."""
    codes = {s.interpolation for s in analysis.systematics_of("norm")}
    if len(codes) > 1:
        raise ConfigurationError(
            f"pyhf applies one interpolation code to every normsys, but the analysis mixes {sorted(codes)}"
        )
    return {"normsys": {"interpcode": codes.pop() if codes else "code4"}, "histosys": {"interpcode": "code4p"}}


def pyhf_nuisance_scales(analysis, model: TemplateModel) -> Dict[str, float]:
    """c of each nuisance: our α = c · (pyhf's α'). Its constraint width, or for a free nuisance
    :data:`FREE_WIDTH_FACTOR` × its expected uncertainty √(I⁻¹)_αα."""
    scales: Dict[str, float] = {}
    free = []
    for name in analysis.nuisance_names():
        c = analysis.nuisance(name).constraint
        if c is None:
            free.append(name)
        else:
            scales[name] = float(c)
    if free:
        from ..statistics.hessian import covariance, fisher_information

        tm = model.detached()
        try:
            cov = covariance(fisher_information(tm))
        except SingularHessianError as err:
            raise ConfigurationError(
                f"cannot choose a wide constraint for the free nuisance(s) {free}: the Fisher information is "
                f"singular ({err})"
            ) from err
        for name in free:
            i = tm.index(name)
            scales[name] = FREE_WIDTH_FACTOR * float(cov[i, i].clamp_min(1e-300).sqrt())
    return scales


def _histosys(nominal: np.ndarray, up: np.ndarray, down: np.ndarray, c: float) -> tuple:
    """hi/lo for pyhf's code4p in α' equal to ours in α = cα' to second order: with S = (up − down)/2 and
    A = (up + down − 2T)/16 of our ±1 templates, S' = cS, A' = c²A, hi/lo = T ± S' + 8A' (exact for c = 1)."""
    s, a = c * 0.5 * (up - down), c * c * (up + down - 2.0 * nominal) / 16.0
    return nominal + s + 8.0 * a, nominal - s + 8.0 * a


def _norm_factor(syst, alpha: float) -> float:
    f = code1 if syst.interpolation == "code1" else code4
    z = torch.tensor(alpha, dtype=torch.float64)
    return float(f(z, torch.tensor(syst.kappa_up, dtype=torch.float64), torch.tensor(syst.kappa_down, dtype=torch.float64)))


def pyhf_workspace(
    analysis, model: TemplateModel, observations: Optional[Any] = None, measurement: str = "inferno",
    validate: bool = True,
) -> Dict[str, Any]:
    """The pyhf workspace (a dict, schema 1.0.0) of ``analysis`` with the templates of ``model``; see the module
    docstring for the mapping. ``observations``: counts for every bin of every channel (default: Asimov).

    Raises:
        ConfigurationError: what pyhf cannot express (mixed normsys codes, more than one constrained factor or one
            not named ``lumi``, a normalisation systematic on a free nuisance), bad observations, or a workspace
            pyhf rejects.
    """
    settings = pyhf_modifier_settings(analysis)
    constrained = {f.name: f for f in analysis.factors if f.constraint is not None}
    off = [n for n, f in constrained.items() if f.nominal != 1.0]
    if off:
        raise ConfigurationError(f"constrained factor(s) {off} need nominal 1 to be exported to pyhf")
    free_norm = [s.name for s in analysis.systematics_of("norm") if analysis.nuisance(s.name).constraint is None]
    if free_norm:
        raise ConfigurationError(f"normalisation systematic(s) {free_norm} on free nuisances: use a NormFactor")
    scales = pyhf_nuisance_scales(analysis, model)
    tm = model.detached()
    with torch.no_grad():
        observed = tm.asimov() if observations is None else torch.as_tensor(observations, dtype=torch.float64)
    data = observed.detach().reshape(-1).numpy()
    if data.shape != (tm.n_bins,) or not np.isfinite(data).all() or (data < 0).any():
        raise ConfigurationError(f"observations must be {tm.n_bins} finite counts >= 0, got {data.tolist()}")
    yields = {p: float(tm.yields[p]) for p in tm.processes}  # fixed totals: templates are fractions of them
    shapes = {(s.parameter, s.process): s for s in tm.shape_systematics}
    mc_sigma = {}
    if tm.staterror is not None:
        for k, p in enumerate(tm.staterror.processes):
            mc_sigma[p] = tm.staterror.uncertainty[k].detach().numpy()
    fixed = {c.name: c for c in analysis.channels}
    channels, observations_out = [], []
    for cname, sl in tm.channel_slices().items():
        samples = []
        for i, pname in enumerate(tm.processes):
            process = analysis.process(pname)
            present = bool(process.labels) if cname == analysis.summary else pname in fixed[cname].yields
            if not present:
                continue
            nominal = yields[pname] * tm.templates[i, sl].numpy()
            modifiers: List[Dict[str, Any]] = []
            for f in tm.factors.get(pname, []):
                if f == "lumi" and f in constrained:
                    modifiers.append({"name": f, "type": "lumi", "data": None})
                elif f in constrained:
                    width = constrained[f].constraint
                    modifiers.append({"name": f, "type": "histosys", "data": {
                        "hi_data": ((1 + width) * nominal).tolist(), "lo_data": ((1 - width) * nominal).tolist()}})
                else:
                    modifiers.append({"name": f, "type": "normfactor", "data": None})
            for name in dict.fromkeys(s.name for s in analysis.shape_systematics() if pname in s.processes):
                acts = cname == analysis.summary or pname in fixed[cname].variations.get(name, {})
                if not acts:
                    continue
                ss = shapes[(name, pname)]
                hi, lo = _histosys(nominal, yields[pname] * ss.shift_up[sl].numpy(),
                                   yields[pname] * ss.shift_down[sl].numpy(), scales[name])
                modifiers.append({"name": name, "type": "histosys",
                                  "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()}})
            for syst in analysis.systematics_of("norm"):
                if pname in syst.processes:
                    c = scales[syst.name]
                    modifiers.append({"name": syst.name, "type": "normsys",
                                      "data": {"hi": _norm_factor(syst, c), "lo": _norm_factor(syst, -c)}})
            if pname in mc_sigma:
                modifiers.append({"name": f"staterror_{cname}", "type": "staterror", "data": mc_sigma[pname][sl].tolist()})
            samples.append({"name": pname, "data": nominal.tolist(), "modifiers": modifiers})
        channels.append({"name": cname, "samples": samples})
        observations_out.append({"name": cname, "data": data[sl].tolist()})
    from ..analysis import NUISANCE_BOUNDS

    parameters = []
    for f in analysis.factors:
        if f.constraint is None:
            parameters.append({"name": f.name, "inits": [f.nominal], "bounds": [list(f.bounds)]})
        elif f.name == "lumi":
            parameters.append({"name": f.name, "inits": [1.0], "bounds": [list(f.bounds)], "auxdata": [1.0],
                               "sigmas": [f.constraint]})
        else:  # histosys α' = (k − 1)/σ
            parameters.append({"name": f.name, "inits": [0.0], "bounds": [
                [(b - 1.0) / f.constraint for b in f.bounds]]})
    parameters += [
        {"name": n, "bounds": [[NUISANCE_BOUNDS[0] / scales[n], NUISANCE_BOUNDS[1] / scales[n]]]}
        for n in analysis.nuisance_names() if scales[n] != 1.0
    ]
    spec = {
        "channels": channels,
        "observations": observations_out,
        "measurements": [{"name": measurement, "config": {"poi": analysis.poi_names[0], "parameters": parameters}}],
        "version": "1.0.0",
    }
    if validate:
        import pyhf

        try:
            pyhf.Workspace(spec).model(modifier_settings=settings)
        except _pyhf_errors() as err:
            raise ConfigurationError(f"pyhf rejects the exported workspace: {type(err).__name__}: {err}") from err
    return spec


def write_pyhf_workspace(analysis, model: TemplateModel, path: Union[str, Path], **kwargs: Any) -> Path:
    """Write :func:`pyhf_workspace` as JSON to ``path`` atomically (never a partial file); returns it. Load with
    ``pyhf.Workspace(json.load(open(path))).model(modifier_settings=pyhf_modifier_settings(analysis))``."""
    import json

    spec = pyhf_workspace(analysis, model, **kwargs)
    return atomic_write_text(path, json.dumps(spec, indent=1))


def _pyhf_errors() -> tuple:
    import pyhf

    e = pyhf.exceptions
    return (e.InvalidSpecification, e.InvalidModel, e.InvalidNameReuse, e.InvalidModifier, e.InvalidMeasurement,
            e.InvalidInterpCode)


@contextlib.contextmanager
def _numpy_backend(workspace, modifier_settings, poi: Optional[str], tolerance: float):
    """(pyhf model of ``workspace`` with ``modifier_settings`` and POI ``poi``, its data incl. auxdata) on pyhf's
    numpy backend with the scipy optimiser at ``tolerance``; the global backend is restored afterwards."""
    import pyhf

    ws = workspace if isinstance(workspace, pyhf.Workspace) else pyhf.Workspace(workspace)
    old_backend, old_optimizer = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    try:
        extra = {} if poi is None else {"poi_name": poi}
        pdf = ws.model(modifier_settings=modifier_settings or _DEFAULT_SETTINGS, **extra)
        yield pdf, np.asarray(ws.data(pdf), dtype=float)
    finally:
        pyhf.set_backend(old_backend, old_optimizer)


def pyhf_poi_uncertainty(
    workspace: Union[Dict[str, Any], Any],
    method: str = "profile",
    poi_scale: float = 1.0,
    tolerance: float = 1e-10,
    modifier_settings: Optional[Dict[str, Dict[str, str]]] = None,
    poi: Optional[str] = None,
) -> float:
    """Expected σ(POI) computed by pyhf itself from a workspace (its observations, e.g. the Asimov data we export).

    ``"profile"``: half-width of the interval where the profiled −2 ln L rises by 1 (pyhf's ``fixed_poi_fit`` at each
    point, nuisances re-minimised; crossings root-found with Brent); ``"hessian"``: √(H⁻¹)_poi,poi, with H the
    central finite-difference Hessian of pyhf's −ln L at pyhf's best fit (MINUIT's numerical HESSE through pyhf
    scatters by ~0.5 % here, so we do not use it), multiplied by ``poi_scale`` (e.g. the signal yield per unit of
    signal strength, 50 for the paper: σ(s) = 50 σ(μ)). Uses pyhf's numpy backend with the scipy optimiser; the
    global pyhf backend is restored.
    ``modifier_settings``: :func:`pyhf_modifier_settings` of the analysis (default: pyhf's own defaults, code4p
    shapes and code4 normalisations); ``poi``: another POI than the measurement's.
    """
    import pyhf
    from scipy.optimize import brentq

    from ..exceptions import FailedMinimizationError

    if method not in ("profile", "hessian"):
        raise ConfigurationError(f"method must be 'profile' or 'hessian', got {method!r}")
    with _numpy_backend(workspace, modifier_settings, poi, tolerance) as (pdf, data):
        best, twice_nll_min = pyhf.infer.mle.fit(data, pdf, return_fitted_val=True)
        best, twice_nll_min = np.asarray(best, dtype=float), float(twice_nll_min)
        i = pdf.config.poi_index
        sigma_h = _fd_poi_sigma(lambda p: -float(pdf.logpdf(p, data)[0]), best, i)
        if method == "hessian":
            return poi_scale * sigma_h
        low_bound, high_bound = pdf.config.suggested_bounds()[i]

        def excess(mu: float) -> float:
            twice = pyhf.infer.mle.fixed_poi_fit(mu, data, pdf, return_fitted_val=True)[1]
            return float(twice) - twice_nll_min - 1.0

        edges = []
        for sign in (-1.0, 1.0):
            far = best[i] + sign * 1.5 * sigma_h
            far = min(max(far, low_bound), high_bound)
            if excess(far) <= 0:
                far = min(max(best[i] + sign * 4.0 * sigma_h, low_bound), high_bound)
            if excess(far) <= 0:
                raise FailedMinimizationError(f"pyhf's profile likelihood does not rise by 1 before the POI bound {far}")
            edges.append(brentq(excess, *sorted((best[i], far)), xtol=1e-9))
        return poi_scale * 0.5 * (edges[1] - edges[0])


def pyhf_search_figures(
    workspace: Union[Dict[str, Any], Any],
    modifier_settings: Optional[Dict[str, Dict[str, str]]] = None,
    poi: Optional[str] = None,
    cl: float = 0.95,
    tolerance: float = 1e-10,
    limit_guess: Optional[float] = None,
    rtol: float = 1e-5,
) -> Dict[str, float]:
    """What pyhf's asymptotic calculator says of a workspace whose observations are the Asimov data at the nominal
    point (our exports' default): ``"z0"``, the discovery significance from ``hypotest(0, test_stat="q0")``, and
    ``"cls_limit"``, the median expected CLs upper limit at ``cl`` on the POI: the root of ``hypotest(μ,
    test_stat="qtilde", return_expected=True)``'s median expected CLs = 1 − ``cl``, on the background-only data
    (POI 0, everything else nominal; pyhf builds its background-only Asimov data from a fit to the data it is
    given, so this is the a-priori expected limit), found to ``rtol`` relative, bracketed around ``limit_guess``
    when given (each step is a pyhf hypotest, seconds on a model with tens of parameters). The reference for
    :func:`~lumin_inferno.statistics.search.discovery_significance` and
    :func:`~lumin_inferno.statistics.search.expected_cls_upper_limit`. numpy backend; the global backend is
    restored."""
    import pyhf
    from scipy.optimize import brentq
    from scipy.stats import norm

    with _numpy_backend(workspace, modifier_settings, poi, tolerance) as (pdf, data):
        p0 = float(pyhf.infer.hypotest(0.0, data, pdf, test_stat="q0", calctype="asymptotics"))
        init = np.asarray(pdf.config.suggested_init(), dtype=float)
        init[pdf.config.poi_index] = 0.0
        background = np.asarray(pdf.expected_data(init), dtype=float)

        def excess(mu: float) -> float:
            _, expected = pyhf.infer.hypotest(mu, background, pdf, test_stat="qtilde", calctype="asymptotics",
                                              return_expected=True)
            return float(expected) - (1.0 - cl)

        lo, hi = (0.8 * limit_guess, 1.25 * limit_guess) if limit_guess else (1e-6, 1.0)
        if excess(lo) < 0:
            lo = 1e-6
        while excess(hi) > 0:
            lo, hi = hi, 2.0 * hi
        limit = brentq(excess, lo, hi, rtol=rtol)
        return {"z0": float(norm.isf(p0)), "cls_limit": float(limit)}


def _fd_poi_sigma(nll, best: np.ndarray, poi_index: int, h: float = 1e-4) -> float:
    """√(H⁻¹)_poi,poi with H the central finite-difference Hessian of ``nll`` at ``best`` (step ``h``)."""
    n = len(best)
    eye = np.eye(n) * h
    hessian = np.empty((n, n))
    for a in range(n):
        for b in range(a, n):
            hessian[a, b] = hessian[b, a] = (
                nll(best + eye[a] + eye[b]) - nll(best + eye[a] - eye[b])
                - nll(best - eye[a] + eye[b]) + nll(best - eye[a] - eye[b])
            ) / (4 * h * h)
    return float(np.sqrt(np.linalg.inv(hessian)[poi_index, poi_index]))
