"""Write the binned likelihood of a trained summary statistic as a pyhf (HistFactory JSON) workspace.

Input: a :class:`~lumin_inferno.statistics.TemplateModel`, e.g. from
:func:`~lumin_inferno.evaluation.asimov_template_model` (hard-assigned templates of a test sample) or built from its
pieces with :func:`~lumin_inferno.statistics.likelihood.signal_background_model` / ``TemplateModel(...)``. Output: one
channel with one sample per process, the observations set to the model's Asimov data, and one measurement.

Mapping (pyhf parameters are dimensionless; ours carry physical units):

* **yield parameters** (a process whose yield *is* a parameter θ with nominal θ⁰): the sample holds θ⁰ × template
  and a factor κ = θ/θ⁰ multiplies it. The POI and free yields become a ``normfactor`` (named ``poi_name``, default
  ``"mu"``, for the POI; the parameter's own name otherwise), so **σ(s) = θ⁰ · σ(mu)** (50 · σ(mu) for the paper;
  :func:`pyhf_poi_scale`). A Gaussian-constrained yield b ~ N(b⁰, σ_b) becomes pyhf's ``lumi`` modifier (the one
  normal-constrained multiplicative factor whose width pyhf lets us set; the schema fixes its name to ``"lumi"``)
  with auxdata 1 and sigma σ_b/b⁰: exactly our linear yield with its Gaussian constraint. Only one constrained yield
  can be exported.
* **shape systematics** → ``histosys`` with ``code4p``, the code our core uses. pyhf gives every histosys parameter
  α a unit Gaussian constraint, so α is measured in units of the constraint width σ: α = (θ − θ⁰)/σ, while our
  ``code4p`` runs in z = (θ − θ⁰)/step = cα, c = σ/step. When c = 1 (templates built at ±1σ) the export is exact.
  Otherwise the ``code4p`` polynomial cannot be rescaled exactly: with ``shape_matching="curvature"`` (default) the
  hi/lo histograms are chosen so that pyhf's interpolation equals ours to second order in α (same value, slope and
  curvature at nominal: the Fisher information and Hessian σ are identical, the profile differs at O(z⁴));
  ``"templates"`` exports our templates at θ⁰ ± σ instead (what a HistFactory user expects to see, exact at
  α = 0, ±1 and in slope, but with the up/down asymmetry scaled by c instead of c²). An **unconstrained** shape
  nuisance has no pyhf equivalent (every histosys is constrained): it gets a very wide constraint,
  σ = ``unconstrained_width`` (default: 100 × its expected uncertainty √(I⁻¹)_θθ from our Fisher information),
  which shifts σ(POI) by O(1e-4) relative.
* **normalisation systematics** → ``normsys`` (pyhf ``code4``), α in units of the constraint width as above, with
  hi/lo the factors of our model at θ⁰ ± σ (exact when σ = step). Unconstrained ones use the same wide width.

Accuracy on the paper problem (``tests/export/test_pyhf.py``; see ``docs/export.md``): σ(s) from pyhf's profile
likelihood equals ours within 0.10 % / 0.11 % / 0.05 % / 0.83 % for benchmarks 1 / 2 / 3 / 4 with the paper's
template steps (r ± 0.2, λ ± 0.5 against constraints 0.4 and 1), within 1e-5 with templates at ±1σ; the Hessian σ
agrees to 1e-4.

Parameter bounds are translated to α (or κ) units; the measurement lists every parameter's init and bounds, the
auxdata and sigma of constrained yields, and ``poi_name`` as POI.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..exceptions import ConfigurationError, SingularHessianError
from ..statistics.likelihood import Parameter, TemplateModel

__all__ = [
    "SHAPE_MATCHING",
    "MODIFIER_SETTINGS",
    "pyhf_workspace",
    "write_pyhf_workspace",
    "pyhf_poi_scale",
    "pyhf_parameter_map",
    "pyhf_poi_uncertainty",
    "analysis_workspace",
    "analysis_modifier_settings",
]

#: How the histosys hi/lo templates are chosen when α's unit (the constraint width) differs from the template step:
#: ``"curvature"`` matches our interpolation to second order at nominal, ``"templates"`` exports our templates at
#: ±1σ (see :func:`pyhf_workspace`).
SHAPE_MATCHING: Tuple[str, ...] = ("curvature", "templates")

#: Interpolation codes of our core (also pyhf's defaults): ``ws.model(modifier_settings=MODIFIER_SETTINGS)``.
MODIFIER_SETTINGS: Dict[str, Dict[str, str]] = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}

#: Shape / norm nuisances are kept within this many template steps of nominal in pyhf (the range where our own
#: interpolation is validated; pyhf's histosys default is ±5 in its α).
_MAX_STEPS: float = 10.0


def pyhf_poi_scale(model: TemplateModel) -> float:
    """θ⁰ of the POI: multiply pyhf's ``mu`` (best fit, uncertainty) by this to get the POI in its own units."""
    return _yield_nominal(model, model.poi)


def pyhf_parameter_map(
    model: TemplateModel,
    poi_name: str = "mu",
    unconstrained_width: Optional[Union[float, Dict[str, float]]] = None,
) -> Dict[str, Tuple[str, float, float]]:
    """How each of our parameters appears in the workspace: ``{name: (pyhf_name, offset, scale)}`` with
    θ = offset + scale · (pyhf value); e.g. ``s: ("mu", 0, 50)``, ``b: ("lumi", 0, 1000)``, ``r: ("r", 0, 0.4)``
    (α in units of σ_r). Same arguments as :func:`pyhf_workspace`."""
    plan = _plan(model, poi_name, unconstrained_width)
    return {name: (v["pyhf_name"], v["offset"], v["scale"]) for name, v in plan.items()}


def pyhf_workspace(
    model: TemplateModel,
    observations: Optional[Any] = None,
    poi_name: str = "mu",
    channel: str = "summary_statistic",
    measurement: str = "inferno",
    unconstrained_width: Optional[Union[float, Dict[str, float]]] = None,
    shape_matching: str = "curvature",
    validate: bool = True,
) -> Dict[str, Any]:
    """The HistFactory JSON workspace (a dict, pyhf schema 1.0.0) of ``model`` with ``observations`` as data.

    Args:
        model: the binned likelihood (templates are fractions of each process's nominal yield per bin).
        observations: counts per bin; default: the Asimov data ``model.asimov()`` (expected counts at nominal).
        poi_name: pyhf name of the POI's normfactor (its value 1 is the POI's nominal value).
        channel / measurement: names in the workspace.
        unconstrained_width: width (physical units) of the wide Gaussian that stands in for "unconstrained" on
            shape/norm nuisances without a constraint; one number for all or a dict by name. Default: 100 × the
            nuisance's expected uncertainty √(I⁻¹)_θθ from our Fisher information.
        shape_matching: ``"curvature"`` or ``"templates"``, how histosys hi/lo are chosen when σ ≠ step (see the
            module docstring).
        validate: build ``pyhf.Workspace`` (JSON-schema validation) and its model before returning.

    Raises:
        ConfigurationError: the model cannot be expressed in pyhf (a yield parameter with nominal 0 or also used by a
            systematic, a POI that is not a yield, name clashes, negative template counts).
    """
    if shape_matching not in SHAPE_MATCHING:
        raise ConfigurationError(f"shape_matching must be one of {SHAPE_MATCHING}, got {shape_matching!r}")
    plan = _plan(model, poi_name, unconstrained_width)
    tm = _float64(model)
    theta0 = tm.nominal()
    with torch.no_grad():
        templates0, yields0 = tm.process_templates(theta0).numpy(), tm.process_yields(theta0).numpy()
    samples = []
    for p, process in enumerate(model.processes):
        y0 = _process_nominal_yield(model, process)
        modifiers: List[Dict[str, Any]] = []
        yield_par = model.yields[process]
        if isinstance(yield_par, str):
            entry = plan[yield_par]
            kind = "lumi" if entry["constrained"] else "normfactor"
            modifiers.append({"name": entry["pyhf_name"], "type": kind, "data": None})
        for name in _parameters_of(model.shape_systematics, process):
            entry = plan[name]
            hi, lo = _histosys_templates(tm, p, name, entry["scale"], shape_matching)
            data = {"hi_data": (y0 * hi).tolist(), "lo_data": (y0 * lo).tolist()}
            modifiers.append({"name": entry["pyhf_name"], "type": "histosys", "data": data})
        for name in _parameters_of(model.norm_systematics, process):
            entry = plan[name]
            hi, lo = (
                float(_shifted(tm, name, sign * entry["scale"])[1][p] / yields0[p]) for sign in (1.0, -1.0)
            )
            modifiers.append({"name": entry["pyhf_name"], "type": "normsys", "data": {"hi": hi, "lo": lo}})
        nominal = y0 * templates0[p]
        if (nominal < 0).any():
            raise ConfigurationError(f"process {process!r} has negative template entries; pyhf needs counts ≥ 0")
        samples.append({"name": process, "data": nominal.tolist(), "modifiers": modifiers})

    data = tm.asimov() if observations is None else observations
    data = np.asarray(torch.as_tensor(data).detach().cpu().to(torch.float64).numpy(), dtype=float).reshape(-1)
    if data.shape != (model.n_bins,):
        raise ConfigurationError(f"observations must have {model.n_bins} bins, got shape {data.shape}")
    spec = {
        "channels": [{"name": channel, "samples": samples}],
        "observations": [{"name": channel, "data": data.tolist()}],
        "measurements": [
            {"name": measurement, "config": {"poi": poi_name, "parameters": [v["config"] for v in plan.values()]}}
        ],
        "version": "1.0.0",
    }
    if validate:
        import pyhf

        try:
            pyhf.Workspace(spec).model(modifier_settings=MODIFIER_SETTINGS)
        except (
            pyhf.exceptions.InvalidSpecification,
            pyhf.exceptions.InvalidModel,
            pyhf.exceptions.InvalidNameReuse,
            pyhf.exceptions.InvalidModifier,
        ) as err:
            raise ConfigurationError(f"pyhf rejects the exported workspace: {type(err).__name__}: {err}") from err
    return spec


def write_pyhf_workspace(model: TemplateModel, path: Union[str, Path], **kwargs: Any) -> Path:
    """Write :func:`pyhf_workspace` as JSON to ``path`` (temp file + rename: never a partial file); returns it.

    Load with ``pyhf.Workspace(json.load(open(path)))``; ``kwargs`` go to :func:`pyhf_workspace`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigurationError(f"output directory {path.parent} does not exist")
    spec = pyhf_workspace(model, **kwargs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(spec, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ------------------------------------------------------------------------------------------------------------------
def analysis_modifier_settings(analysis) -> Dict[str, Dict[str, str]]:
    """pyhf ``modifier_settings`` for the workspace of ``analysis``: ``code4p`` shapes and the analysis's one
    normalisation code. pyhf sets interpolation codes per modifier *type*, so an analysis mixing ``code1`` and
    ``code4`` normalisations cannot be written exactly (:class:`ConfigurationError`)."""
    codes = {s.interpolation for s in analysis.systematics_of("norm")}
    if len(codes) > 1:
        raise ConfigurationError(
            f"pyhf applies one interpolation code to every normsys, but the analysis mixes {sorted(codes)}"
        )
    return {"normsys": {"interpcode": codes.pop() if codes else "code4"}, "histosys": {"interpcode": "code4p"}}


def analysis_workspace(
    analysis, model: TemplateModel, observations: Optional[Any] = None, measurement: str = "inferno",
    validate: bool = True,
) -> Dict[str, Any]:
    """The pyhf (HistFactory JSON) workspace of ``analysis`` with the templates of ``model`` (from
    :func:`~lumin_inferno.analysis.template_model`: the learned summary channel and every fixed channel).

    One pyhf channel per channel; one sample per process present there, holding its expected counts; modifiers:
    ``normfactor`` per factor, ``histosys`` (``code4p``) per shape systematic acting in the channel, ``normsys``
    (the analysis's code, :func:`analysis_modifier_settings`) per normalisation systematic, and one ``staterror``
    per channel with each MC process's √Σw² (pyhf forms δ_i = √Σσ² / Σν as our model does). Parameters keep their
    names (our γ's are pyhf's ``staterror_<channel>[i]``), so the likelihood is the same function of the same
    parameters (tested against pyhf's own Hessian). Observations: per channel, default the model's Asimov data.
    The measurement's POI is the analysis's first POI; the other POIs are free normfactors.
    """
    settings = analysis_modifier_settings(analysis)
    bad = [n for n in analysis.nuisance_names() if analysis.nuisance(n).constraint != 1.0]
    if bad:
        raise ConfigurationError(
            f"nuisance(s) {bad} are free or have a constraint width other than 1: pyhf constrains every histosys and "
            "normsys parameter with a unit Gaussian; declare the ±1σ variations instead"
        )
    constrained = [f.name for f in analysis.factors if f.constraint is not None]
    if len(constrained) > 1 or constrained and constrained != ["lumi"]:
        raise ConfigurationError(
            f"constrained factor(s) {constrained}: pyhf's one Gaussian-constrained factor is its 'lumi' modifier, so "
            "at most one, named 'lumi' (or declare a 'norm' systematic instead)"
        )
    tm = model.detached()
    with torch.no_grad():
        data = tm.asimov() if observations is None else torch.as_tensor(observations, dtype=torch.float64)
    data = data.detach().reshape(-1).numpy()
    if data.shape != (tm.n_bins,) or not np.isfinite(data).all() or (data < 0).any():
        raise ConfigurationError(f"observations must be {tm.n_bins} finite counts >= 0, got {data.tolist()}")
    yields = {p: float(tm.yields[p]) for p in tm.processes}  # fixed totals: templates are fractions of them
    shapes = {(s.parameter, s.process): s for s in tm.shape_systematics}
    mc_sigma = {}
    if tm.staterror is not None:
        for k, p in enumerate(tm.staterror.processes):
            mc_sigma[p] = tm.staterror.uncertainty[k].detach().numpy()
    factors = {p: list(f) for p, f in tm.factors.items()}
    channels, observations_out = [], []
    fixed = {c.name: c for c in analysis.channels}
    for cname, sl in tm.channel_slices().items():
        samples = []
        for i, pname in enumerate(tm.processes):
            process = analysis.process(pname)
            present = bool(process.labels) if cname == analysis.summary else pname in fixed[cname].yields
            if not present:
                continue
            nominal = yields[pname] * tm.templates[i, sl].numpy()
            modifiers: List[Dict[str, Any]] = [
                {"name": f, "type": "lumi" if f in constrained else "normfactor", "data": None}
                for f in factors.get(pname, [])
            ]
            for syst in analysis.shape_systematics():
                if pname not in syst.processes:
                    continue
                acts = cname == analysis.summary or pname in fixed[cname].variations.get(syst.name, {})
                if not acts or any(m["name"] == syst.name and m["type"] == "histosys" for m in modifiers):
                    continue
                ss = shapes[(syst.name, pname)]
                modifiers.append({
                    "name": syst.name, "type": "histosys",
                    "data": {"hi_data": (yields[pname] * ss.shift_up[sl].numpy()).tolist(),
                             "lo_data": (yields[pname] * ss.shift_down[sl].numpy()).tolist()},
                })
            for syst in analysis.systematics_of("norm"):
                if pname in syst.processes:
                    modifiers.append({"name": syst.name, "type": "normsys",
                                      "data": {"hi": syst.kappa_up, "lo": syst.kappa_down}})
            if pname in mc_sigma:
                modifiers.append({"name": f"staterror_{cname}", "type": "staterror", "data": mc_sigma[pname][sl].tolist()})
            samples.append({"name": pname, "data": nominal.tolist(), "modifiers": modifiers})
        channels.append({"name": cname, "samples": samples})
        observations_out.append({"name": cname, "data": data[sl].tolist()})
    parameters = [
        {"name": f.name, "inits": [f.nominal], "bounds": [list(f.bounds)],
         **({"auxdata": [f.nominal], "sigmas": [f.constraint]} if f.constraint is not None else {})}
        for f in analysis.factors
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


def _pyhf_errors() -> tuple:
    import pyhf

    e = pyhf.exceptions
    return (e.InvalidSpecification, e.InvalidModel, e.InvalidNameReuse, e.InvalidModifier, e.InvalidMeasurement,
            e.InvalidInterpCode)


def _yield_nominal(model: TemplateModel, name: str) -> float:
    par = model.parameters[model.index(name)]
    if name not in {v for v in model.yields.values() if isinstance(v, str)}:
        raise ConfigurationError(f"parameter {name!r} is not a process yield; pyhf's POI must scale a sample")
    if not par.nominal > 0:
        raise ConfigurationError(f"yield parameter {name!r} needs a nominal value > 0 to be a pyhf factor")
    return float(par.nominal)


def _process_nominal_yield(model: TemplateModel, process: str) -> float:
    y = model.yields[process]
    return _yield_nominal(model, y) if isinstance(y, str) else float(y)


def _parameters_of(systematics, process: str) -> List[str]:
    """Names of the parameters with a systematic on ``process``, in first-seen order, each once."""
    return list(dict.fromkeys(s.parameter for s in systematics if s.process == process))


def _histosys_templates(
    model: TemplateModel, p: int, name: str, width: float, shape_matching: str
) -> Tuple[np.ndarray, np.ndarray]:
    """hi/lo templates of process ``p`` for a histosys whose α is ``name`` in units of ``width``.

    Our ``code4p`` in z = Δθ/step is Δ(z) = zS + z²A(15 − 10z² + 3z⁴) for |z| ≤ 1, with S, A the symmetric and
    asymmetric parts of the ±step templates; in α = Δθ/width, z = cα with c = width/step. ``"templates"``: hi/lo
    are our templates at ±width (S' = cS exactly, A' = cA for c ≥ 1). ``"curvature"``: S' = cS and A' = c²A, so
    that pyhf's Δ(α) equals ours to second order in α (value, slope and curvature at nominal), and the two differ
    only by the (α⁴, α⁶) terms; hi/lo are then T + S' + 8A' and T − S' + 8A'.
    """
    if shape_matching == "templates":
        return _shifted(model, name, width)[0][p], _shifted(model, name, -width)[0][p]
    steps = [s.step for s in model.shape_systematics if s.parameter == name and s.process == model.processes[p]]
    if len(set(steps)) != 1:
        raise ConfigurationError(f"shape systematics of {name!r} on {model.processes[p]!r} use different steps {steps}")
    step = steps[0]
    up, down, nominal = (_shifted(model, name, delta)[0][p] for delta in (step, -step, 0.0))
    c = width / step
    symmetric, asymmetric = c * 0.5 * (up - down), c * c * (up + down - 2.0 * nominal) / 16.0
    return nominal + symmetric + 8.0 * asymmetric, nominal - symmetric + 8.0 * asymmetric


def _shifted(model: TemplateModel, name: str, delta: float) -> Tuple[np.ndarray, np.ndarray]:
    """(templates ``[n_processes, n_bins]``, yields ``[n_processes]``) with parameter ``name`` moved by ``delta``
    from nominal and every other parameter at nominal (float64 numpy)."""
    theta = model.nominal()
    theta[model.index(name)] += delta
    with torch.no_grad():
        return model.process_templates(theta).numpy(), model.process_yields(theta).numpy()


def _expected_widths(model: TemplateModel) -> Dict[str, float]:
    """√(I⁻¹)_θθ of every parameter at the Asimov point (our Fisher information, float64)."""
    from ..statistics.hessian import covariance, fisher_information

    tm = _float64(model)
    cov = covariance(fisher_information(tm))
    return {n: float(cov[i, i].clamp_min(0).sqrt()) for i, n in enumerate(model.parameter_names)}


def _float64(model: TemplateModel) -> TemplateModel:
    """A float64 copy of ``model`` without autograd graph (the same helper the fits use)."""
    return model.detached()


def _plan(
    model: TemplateModel, poi_name: str, unconstrained_width: Optional[Union[float, Dict[str, float]]]
) -> Dict[str, Dict[str, Any]]:
    """Per parameter: pyhf name, kind, θ = offset + scale·(pyhf value), and its measurement config entry."""
    yield_pars = {v for v in model.yields.values() if isinstance(v, str)}
    syst_pars = {s.parameter for s in list(model.shape_systematics) + list(model.norm_systematics)}
    if model.poi not in yield_pars:
        raise ConfigurationError(f"the POI {model.poi!r} must be a process yield to become a pyhf normfactor")
    if model.parameters[model.index(model.poi)].constraint is not None:
        raise ConfigurationError(f"the POI {model.poi!r} has a constraint; a pyhf normfactor POI cannot carry one")
    both = yield_pars & syst_pars
    if both:
        raise ConfigurationError(f"parameter(s) {sorted(both)} are both yields and systematics; pyhf cannot share them")
    unused = set(model.parameter_names) - yield_pars - syst_pars
    if unused:
        raise ConfigurationError(f"parameter(s) {sorted(unused)} affect nothing; drop them from the model")
    plan: Dict[str, Dict[str, Any]] = {}
    widths: Optional[Dict[str, float]] = None
    for par in model.parameters:
        if par.name in yield_pars:
            y0 = _yield_nominal(model, par.name)
            constrained = par.constraint is not None
            lo, hi = _bounds_in(par, y0, 0.0, default=(0.0, 10.0))
            config: Dict[str, Any] = {"inits": [1.0], "bounds": [[lo, hi]]}
            if constrained:
                config.update({"auxdata": [1.0], "sigmas": [par.constraint / y0]})
            plan[par.name] = {
                "pyhf_name": "lumi" if constrained else par.name,  # pyhf's schema fixes the lumi modifier's name
                "offset": 0.0,
                "scale": y0,
                "constrained": constrained,
                "config": config,
            }
            continue
        systematics = list(model.shape_systematics) + list(model.norm_systematics)
        step = min(s.step for s in systematics if s.parameter == par.name)
        if par.constraint is not None:
            width = float(par.constraint)
        else:
            if isinstance(unconstrained_width, dict) and par.name in unconstrained_width:
                width = float(unconstrained_width[par.name])
            elif isinstance(unconstrained_width, (int, float)):
                width = float(unconstrained_width)
            else:
                if widths is None:
                    try:
                        widths = _expected_widths(model)
                    except SingularHessianError as err:
                        raise ConfigurationError(
                            "cannot choose a wide constraint for the unconstrained nuisances: the Fisher "
                            f"information is singular ({err}); pass unconstrained_width"
                        ) from err
                width = 100.0 * widths[par.name]
        if not width > 0 or not math.isfinite(width):
            raise ConfigurationError(f"nuisance {par.name!r}: width must be finite and > 0, got {width}")
        reach = _MAX_STEPS * step / width
        lo, hi = _bounds_in(par, width, par.nominal, default=(-reach, reach))
        plan[par.name] = {
            "pyhf_name": par.name,
            "offset": float(par.nominal),
            "scale": width,
            "constrained": par.constraint is not None,
            "config": {"inits": [0.0], "bounds": [[max(lo, -reach), min(hi, reach)]]},
        }
    lumis = [n for n, v in plan.items() if v["pyhf_name"] == "lumi"]
    if len(lumis) > 1:
        raise ConfigurationError(
            f"pyhf has one Gaussian-constrained normalisation factor ('lumi'); the yields {lumis} are all constrained"
        )
    plan[model.poi]["pyhf_name"] = poi_name
    names = [v["pyhf_name"] for v in plan.values()]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"pyhf parameter names clash: {names} (rename the POI with poi_name)")
    for entry in plan.values():
        entry["config"]["name"] = entry["pyhf_name"]
    return plan


def _bounds_in(par: Parameter, scale: float, offset: float, default: Tuple[float, float]) -> Tuple[float, float]:
    """Parameter bounds in pyhf units, (bound − offset)/scale, with ``default`` where a side is open."""
    lo, hi = par.bounds if par.bounds is not None else (None, None)
    return (
        default[0] if lo is None else (lo - offset) / scale,
        default[1] if hi is None else (hi - offset) / scale,
    )


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
    scatters by ~0.5 % here, so we do not use it). Multiplied by ``poi_scale`` (:func:`pyhf_poi_scale`) to give the
    POI in its own units. Uses pyhf's numpy backend with the scipy optimiser; the global pyhf backend is restored.
    ``modifier_settings``: default :data:`MODIFIER_SETTINGS` (:func:`analysis_modifier_settings` for an analysis'
    workspace); ``poi``: another POI than the measurement's.
    """
    import pyhf
    from scipy.optimize import brentq

    from ..exceptions import FailedMinimization

    if method not in ("profile", "hessian"):
        raise ConfigurationError(f"method must be 'profile' or 'hessian', got {method!r}")
    ws = workspace if isinstance(workspace, pyhf.Workspace) else pyhf.Workspace(workspace)
    old_backend, old_optimizer = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    try:
        extra = {} if poi is None else {"poi_name": poi}
        pdf = ws.model(modifier_settings=modifier_settings or MODIFIER_SETTINGS, **extra)
        data = np.asarray(ws.data(pdf), dtype=float)
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
                raise FailedMinimization(f"pyhf's profile likelihood does not rise by 1 before the POI bound {far}")
            edges.append(brentq(excess, *sorted((best[i], far)), xtol=1e-9))
        return poi_scale * 0.5 * (edges[1] - edges[0])
    finally:
        pyhf.set_backend(old_backend, old_optimizer)


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
