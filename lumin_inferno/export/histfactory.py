"""The final-fit inputs of an :class:`~lumin_inferno.analysis.Analysis` in the two formats HEP fits read besides
pyhf JSON: HistFactory XML with ROOT histograms (through ``pyhf.writexml``, which writes the histograms with
uproot; read back by ``pyhf.readxml`` or ROOT's ``hist2workspace``) and a CMS combine datacard with its ROOT shapes
file (uproot). Both are written from the same pyhf workspace (:func:`~lumin_inferno.export.pyhf.pyhf_workspace`),
so the three exports describe one likelihood; each is written into a temporary directory that replaces the target
only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union, cast

import numpy as np

from ..exceptions import ConfigurationError
from ..io import atomic_directory
from ..statistics.likelihood import TemplateModel
from .pyhf import pyhf_workspace

__all__ = ["write_histfactory_xml", "write_combine_datacard", "parse_datacard", "DATACARD", "SHAPES_FILE"]

DATACARD = "datacard.txt"
SHAPES_FILE = "shapes.root"


def write_histfactory_xml(
    analysis, model: TemplateModel, directory: Union[str, Path], observations: Optional[Any] = None,
    prefix: str = "inferno",
) -> Path:
    """Write ``directory/combination.xml``, ``directory/config/<prefix>_<channel>.xml``, the DTD and
    ``directory/data/data.root`` (HistFactory XML + ROOT histograms) of ``analysis`` with ``model``'s templates;
    paths inside are relative to ``directory`` (``pyhf.readxml.parse(directory / "combination.xml", directory)``).
    Returns ``directory``."""
    import pyhf.writexml

    if "lumi" in analysis.nuisance_names():
        raise ConfigurationError(
            "HistFactory XML reserves the name 'lumi' for its luminosity parameter, so the systematic 'lumi' would be "
            "dropped on reading; rename it (e.g. 'lumi_13TeV')"
        )
    spec = pyhf_workspace(analysis, model, observations)
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        (tmp / "config").mkdir()
        (tmp / "data").mkdir()
        combination = pyhf.writexml.writexml(spec, tmp / "config", tmp / "data", prefix)
        (tmp / "combination.xml").write_bytes(combination)
        root = f"{tmp}/"
        for xml in [tmp / "combination.xml", *sorted((tmp / "config").glob("*.xml"))]:
            xml.write_text(xml.read_text().replace(root, ""))  # relative to the export directory
    return directory


def _hist(counts: np.ndarray, variances: Optional[np.ndarray] = None):
    import hist

    h = hist.Hist.new.Regular(len(counts), 0.0, float(len(counts)), name="bin").Weight()
    view = h.view()
    view.value = np.asarray(counts, dtype=float)
    view.variance = np.zeros(len(counts)) if variances is None else np.asarray(variances, dtype=float)
    return h


def write_combine_datacard(
    analysis, model: TemplateModel, directory: Union[str, Path], observations: Optional[Any] = None
) -> Path:
    """Write a CMS combine datacard ``directory/datacard.txt`` and its shapes ``directory/shapes.root`` for
    ``analysis`` with ``model``'s templates. Returns the datacard's path.

    Lines: ``shapes * * shapes.root $CHANNEL/$PROCESS $CHANNEL/$PROCESS_$SYSTEMATIC``; one bin per channel with
    ``observation -1`` (the ``data_obs`` histogram, default the Asimov counts); every process present in a channel
    (signals with process index ≤ 0), ``rate -1`` (from the histograms); each shape systematic as ``shape`` with
    ``<process>_<name>Up/Down`` histograms (our ±1 templates; the column holds the nuisance's constraint width c,
    by which combine scales its unit Gaussian, so c = 2 means templates at ±½σ; a free nuisance is ``shapeU``);
    each normalisation systematic as ``lnN`` (κ^c, or κ_down^c/κ_up^c when asymmetric); each factor as a
    ``rateParam`` shared by name across channels and processes (a constrained one
    also as ``param``); ``* autoMCStats 0`` when the analysis has MC statistics, with each MC process's √Σw² as
    the histograms' errors (processes without MC statistics carry zero errors).

    Differences from the pyhf/HistFactory export that a user should know: combine interpolates ``shape``
    systematics with its own smooth vertical morphing, not pyhf's ``code4p`` (same templates at ±1σ and the
    same slope at nominal, so the same Fisher information); asymmetric ``lnN`` uses combine's log-normal
    interpolation, not ``code1``/``code4``; ``autoMCStats 0`` treats every bin Barlow-Beeston-lite, as here.
    The POIs are the rateParams: fit with ``--redefineSignalPOIs <POIs>`` (written in the card's header).
    """
    import uproot

    spec = pyhf_workspace(analysis, model, observations)
    tm = model.detached()
    templates = {(s.parameter, s.process): s for s in tm.shape_systematics}
    slices = tm.channel_slices()
    directory = Path(directory)
    signals = [p.name for p in analysis.processes if p.role == "signal"]
    backgrounds = [p.name for p in analysis.processes if p.role == "background"]
    index = {p: -i for i, p in enumerate(signals)}
    index.update({p: i + 1 for i, p in enumerate(backgrounds)})
    norm = analysis.systematics_of("norm")
    shapes = list(dict.fromkeys(s.name for s in analysis.shape_systematics()))
    columns: List[tuple] = []  # (channel, process, sample spec)
    for ch in spec["channels"]:
        for sample in ch["samples"]:
            columns.append((ch["name"], sample["name"], sample))
    with atomic_directory(directory) as tmp:
        with uproot.recreate(tmp / SHAPES_FILE) as f:
            for ch, obs in zip(spec["channels"], spec["observations"]):
                f[f"{ch['name']}/data_obs"] = _hist(np.asarray(obs["data"]), np.asarray(obs["data"]))
                for sample in ch["samples"]:
                    mods = {(m["type"], m["name"]): m for m in sample["modifiers"]}
                    stat = [m for (t, _), m in mods.items() if t == "staterror"]
                    variances = np.asarray(stat[0]["data"]) ** 2 if stat else None
                    f[f"{ch['name']}/{sample['name']}"] = _hist(np.asarray(sample["data"]), variances)
                    for (t, name), m in mods.items():
                        if t == "histosys" and name in shapes:  # our ±1 templates (pyhf's hi/lo are at ±1σ)
                            ss = templates[(name, sample["name"])]
                            sl = slices[ch["name"]]
                            for suffix, tmpl in (("Up", ss.shift_up), ("Down", ss.shift_down)):
                                # a fixed total (pyhf_workspace has read it as a float)
                                counts = cast(float, tm.yields[sample["name"]]) * tmpl[sl].numpy()
                                f[f"{ch['name']}/{sample['name']}_{name}{suffix}"] = _hist(counts)
        lines = [
            f"# combine datacard of a lumin_inferno Analysis (POIs: {', '.join(analysis.poi_names)})",
            "# text2workspace.py datacard.txt -o workspace.root",
            f"# combine -M MultiDimFit workspace.root --redefineSignalPOIs {','.join(analysis.poi_names)} -t -1",
            f"imax {len(spec['channels'])} number of channels",
            "jmax * number of backgrounds",
            "kmax * number of nuisance parameters",
            "-" * 40,
            f"shapes * * {SHAPES_FILE} $CHANNEL/$PROCESS $CHANNEL/$PROCESS_$SYSTEMATIC",
            "-" * 40,
            "bin " + " ".join(ch["name"] for ch in spec["channels"]),
            "observation " + " ".join("-1" for _ in spec["channels"]),
            "-" * 40,
            "bin " + " ".join(c for c, _, _ in columns),
            "process " + " ".join(p for _, p, _ in columns),
            "process " + " ".join(str(index[p]) for _, p, _ in columns),
            "rate " + " ".join("-1" for _ in columns),
            "-" * 40,
        ]
        for name in shapes:
            # combine scales the unit Gaussian by the column's value before interpolating: our α = c θ
            c = analysis.nuisance(name).constraint
            value = "1" if c is None else f"{c:.6g}"
            entries = [value if any(m["type"] == "histosys" and m["name"] == name for m in s["modifiers"]) else "-"
                       for _, _, s in columns]
            lines.append(f"{name} {'shapeU' if c is None else 'shape'} " + " ".join(entries))
        for name in dict.fromkeys(s.name for s in norm):
            entries = []
            for _, p, _ in columns:
                kappa = [s for s in norm if s.name == name and p in s.processes]
                if not kappa:
                    entries.append("-")
                    continue
                c = analysis.nuisance(name).constraint  # pyhf_workspace has refused free ones
                up, down = kappa[0].kappa_up ** c, kappa[0].kappa_down ** c  # κ^(cθ): exact for code1
                entries.append(f"{up:.6g}" if abs(up * down - 1.0) < 1e-12 else f"{down:.6g}/{up:.6g}")
            lines.append(f"{name} lnN " + " ".join(entries))
        lines.append("-" * 40)
        for fac in analysis.factors:
            lo, hi = fac.bounds
            for c, p, _ in columns:
                if p in fac.processes:
                    lines.append(f"{fac.name} rateParam {c} {p} {fac.nominal:g} [{lo:g},{hi:g}]")
            if fac.constraint is not None:
                lines.append(f"{fac.name} param {fac.nominal:g} {fac.constraint:g}")
        if analysis.mc_stat and any(p.mc_stat for p in analysis.processes):
            lines.append("* autoMCStats 0")
        (tmp / DATACARD).write_text("\n".join(lines) + "\n")
    return directory / DATACARD


def parse_datacard(path: Union[str, Path]) -> Dict[str, Any]:
    """The datacard's content as a dict (for tests and checks): ``bins``, ``columns`` [(bin, process, index)],
    ``systematics`` {name: (type, [entries])}, ``rate_params`` [(name, bin, process, init, range)],
    ``auto_mc_stats`` (bool), ``shapes`` (the shapes line)."""
    lines = [ln.split("#")[0].strip() for ln in Path(path).read_text().splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= {"-"}]
    out: Dict[str, Any] = {"systematics": {}, "rate_params": [], "auto_mc_stats": False}
    bins = [ln.split()[1:] for ln in lines if ln.startswith("bin ")]
    procs = [ln.split()[1:] for ln in lines if ln.startswith("process ")]
    if len(bins) != 2 or len(procs) != 2:
        raise ConfigurationError(f"{path}: not a datacard with one bin line per block and two process lines")
    out["bins"] = bins[0]
    out["columns"] = list(zip(bins[1], procs[0], [int(v) for v in procs[1]]))
    for ln in lines:
        words = ln.split()
        if words[0] == "shapes":
            out["shapes"] = words[1:]
        elif len(words) > 2 and words[1] in ("shape", "lnN"):
            out["systematics"][words[0]] = (words[1], words[2:])
        elif len(words) > 1 and words[1] == "rateParam":
            out["rate_params"].append((words[0], words[2], words[3], float(words[4]), words[5]))
        elif words[-1] == "0" and len(words) == 3 and words[1] == "autoMCStats":
            out["auto_mc_stats"] = True
    return out
