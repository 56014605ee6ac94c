"""Coverage of a trained summary's profile-likelihood intervals with pseudo-experiments, for MC samples of a given
size, with and without the MC-statistics term.

The truth is the analysis's likelihood built from the whole evaluation sample (:class:`EventBins`); toys are drawn
from it at θ⁰ (Poisson main counts, Gaussian auxiliary measurements: :func:`~lumin_inferno.statistics.sample_toys`).
Each toy is then fitted, per :class:`CoverageSetting`, with the likelihood an analyst would have:

* ``mc_events=None``: the templates of the whole sample, the truth itself; only the asymptotic approximation is
  tested. The γ's of the MC-statistics term (if on) get randomised auxiliary measurements like every other
  constrained parameter (pyhf's toys).
* ``mc_events=N``: templates from a fresh draw of N events per process out of the sample (without replacement; the
  sample should be much larger than N), a new draw per toy: the finite-MC fluctuation of real templates. That
  fluctuation *is* the auxiliary measurement of the γ's, so their centres stay at 1; the other constrained
  parameters are randomised. Without the MC-statistics term such fits under-cover when N is small
  (arXiv:2401.10542); with it they should not.

Toys run in chunks (one task each, on a Dask cluster if a client is given); every finished chunk is written to
``outdir/toys/<setting>/chunk_<k>.npz`` atomically, so an interrupted run resumes from its finished chunks. A fit that
fails is kept as a failed toy with its message, counted and reported, never dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..analysis import Analysis
from ..exceptions import ConfigurationError, EmptyProcessError
from ..io import atomic_write, atomic_write_text
from ..statistics.toys import COVERAGE_LEVELS, coverage_fraction, fit_toy, fit_toys, sample_toys, toy_arrays
from .analysis import EventBins

__all__ = ["CoverageSetting", "ToyChunk", "run_coverage", "coverage_summary", "format_coverage"]

PathLike = Union[str, Path]


@dataclass(frozen=True)
class CoverageSetting:
    """One fit configuration of a coverage run.

    Attributes:
        name: label (also the sub-folder of its toys), e.g. ``"small MC, MC stat"``.
        mc_events: MC events per summary process from which each toy's fit templates are built (a fresh draw per
            toy); ``None``: the whole sample (the truth).
        mc_stat: whether the fit has the Barlow–Beeston-lite MC-statistics term (:attr:`Analysis.mc_stat`).
    """

    name: str
    mc_events: Optional[int] = None
    mc_stat: bool = True

    def __post_init__(self) -> None:
        if self.mc_events is not None and int(self.mc_events) < 1:
            raise ConfigurationError(f"coverage setting {self.name!r}: mc_events must be ≥ 1 or None, got {self.mc_events}")

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.name).strip("_").lower()


def _process_rows(analysis: Analysis, events: EventBins) -> Dict[str, np.ndarray]:
    """Event indices of each summary process."""
    return {p.name: np.nonzero(np.isin(events.targets, p.labels))[0] for p in analysis.summary_processes}


@dataclass
class ToyChunk:
    """``n_toys`` pseudo-experiments of one setting, seeded by (seed, setting, chunk): a picklable task. Its result
    is a dict of arrays (:func:`~lumin_inferno.statistics.toy_arrays` plus ``error``, the message of each failed fit,
    empty where the fit succeeded)."""

    analysis: Analysis
    setting: CoverageSetting
    index: int
    n_toys: int
    seed: int
    setting_index: int

    def __call__(self, events: EventBins) -> Dict[str, np.ndarray]:
        """Run the chunk on ``events``, the binned evaluation sample (:func:`run_coverage` sends it to each worker
        once, not inside every chunk)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # toys are small: many chunks in parallel beat threads within one
        try:
            return self._run(events)
        finally:
            torch.set_num_threads(threads)

    def _run(self, events: EventBins) -> Dict[str, np.ndarray]:
        # the main counts depend on (seed, chunk) only: every setting fits the same pseudo-data (paired comparison);
        # the auxiliary data and MC draws come from the setting's own stream
        data_seed = int(np.random.SeedSequence([self.seed, self.index]).generate_state(1)[0])
        torch_seed, numpy_seed = np.random.SeedSequence([self.seed, self.index, 1 + self.setting_index]).generate_state(2)
        gen = torch.Generator().manual_seed(int(torch_seed))
        rng = np.random.default_rng(int(numpy_seed))
        truth = events.template_model(replace(self.analysis, mc_stat=False))
        observed, _ = sample_toys(truth, self.n_toys, generator=torch.Generator().manual_seed(data_seed), randomise=[])
        fit_analysis = replace(self.analysis, mc_stat=self.setting.mc_stat)
        pois = list(self.analysis.poi_names)
        if self.setting.mc_events is None:
            model = events.template_model(fit_analysis)
            _, aux = sample_toys(model, self.n_toys, generator=gen)
            fits = fit_toys(model, observed, aux)
        else:
            rows = _process_rows(self.analysis, events)
            fits = []
            for k in range(self.n_toys):
                index = np.sort(np.concatenate([rng.choice(r, int(self.setting.mc_events), replace=False)
                                                for r in rows.values()]))
                model = events.template_model(fit_analysis, index)
                non_gamma = [p.name for p in model.parameters if not p.name.startswith("staterror_")]
                _, aux = sample_toys(model, 1, generator=gen, randomise=non_gamma)
                fits.append(fit_toy(model, observed[k], aux[0]))
        out = toy_arrays(fits, pois)
        out["n_observed"] = observed.sum(-1).numpy()  # total observed events per toy (the same for every setting)
        for p in pois:  # the truth is θ⁰ of the POI
            out[f"pull_{p}"] = (out[f"best_{p}"] - float(truth.nominal()[truth.index(p)])) / out[f"sigma_{p}"]
        out["error"] = np.array([f.error or "" for f in fits], dtype=str)
        return out


def _fingerprint(analysis: Analysis, events: EventBins, settings: Sequence[CoverageSetting], n_toys: int,
                 chunk_size: int, seed: int) -> str:
    h = hashlib.sha256()
    for a in [events.bins, events.targets, events.weights] + [v for pair in events.shifted_bins.values() for v in pair] \
            + [v for pair in events.shifted_weights.values() for v in pair]:
        h.update(np.ascontiguousarray(a).tobytes())
    from ..version import __version__

    return json.dumps({"analysis": analysis.to_dict(), "events": h.hexdigest(), "lumin_inferno": __version__,
                       "settings": [asdict(s) for s in settings], "n_toys": n_toys, "chunk_size": chunk_size,
                       "seed": seed}, sort_keys=True)


def _chunk_path(outdir: Path, task: ToyChunk) -> Path:
    return outdir / "toys" / task.setting.slug / f"chunk_{task.index:05d}.npz"


def _save_chunk(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def run_coverage(analysis: Analysis, events: EventBins, settings: Sequence[CoverageSetting], n_toys: int,
                 outdir: PathLike, seed: int = 0, chunk_size: int = 50, client: Any = None,
                 progress: bool = True) -> Dict[str, Dict[str, np.ndarray]]:
    """Run (or resume) ``n_toys`` pseudo-experiments per setting into ``outdir/toys`` and return each setting's
    toy arrays (name → column → array over toys). The toys of a setting depend only on (``seed``, setting position,
    chunk, ``chunk_size``), not on where or in what order the chunks ran.

    Raises :class:`ConfigurationError` if ``outdir/toys`` holds toys made with other inputs or settings, and
    :class:`EmptyProcessError` naming the process when a setting asks for more MC events than the sample has."""
    if int(n_toys) < 1 or int(chunk_size) < 1:
        raise ConfigurationError(f"n_toys and chunk_size must be ≥ 1, got {n_toys} and {chunk_size}")
    if not settings:
        raise ConfigurationError("no coverage settings given")
    names = [s.slug for s in settings]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"coverage settings need distinct names, got {[s.name for s in settings]}")
    rows = _process_rows(analysis, events)
    for s in settings:
        for p, r in rows.items():
            if s.mc_events is not None and len(r) < s.mc_events:
                raise EmptyProcessError(f"coverage setting {s.name!r} draws {s.mc_events} MC events of process {p!r}, "
                                        f"but the sample has only {len(r)}")
    out = Path(outdir)
    toys_dir = out / "toys"
    toys_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(analysis, events, settings, int(n_toys), int(chunk_size), int(seed))
    manifest = toys_dir / "manifest.json"
    if manifest.exists():
        if manifest.read_text() != fingerprint:
            raise ConfigurationError(f"{toys_dir} holds toys of another model, sample or settings: use another "
                                     "output folder or delete it")
    else:
        if any(toys_dir.rglob("chunk_*.npz")):
            raise ConfigurationError(f"{toys_dir} holds toys but no manifest.json saying what made them: use another "
                                     "output folder or delete it")
        atomic_write_text(manifest, fingerprint)
    tasks = []
    for si, s in enumerate(settings):
        for c, start in enumerate(range(0, int(n_toys), int(chunk_size))):
            tasks.append(ToyChunk(analysis, s, c, min(int(chunk_size), int(n_toys) - start), int(seed), si))
    todo = [t for t in tasks if not _chunk_path(out, t).exists()]
    from ..fanout.tasks import run_tasks

    # the event bins go to each worker once (scattered), not pickled into every chunk
    shared = client.scatter(events, broadcast=True) if client is not None and todo else events
    run_tasks(todo, client, progress=progress, done=len(tasks) - len(todo), key="lumin-inferno-toys",
              describe=lambda t: f"toy chunk {t.index} of setting {t.setting.name!r}",
              on_result=lambda t, r: _save_chunk(_chunk_path(out, t), r), args=(shared,))
    results: Dict[str, Dict[str, np.ndarray]] = {}
    for s in settings:
        chunks = [np.load(_chunk_path(out, t)) for t in tasks if t.setting == s]
        results[s.name] = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0].files}
    return results


def coverage_summary(analysis: Analysis, toys: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Dict[str, Any]]:
    """Per setting and POI: coverage of the 68 % and 95 % intervals (fraction, Clopper–Pearson 68 % interval),
    pull mean and width (with their standard errors), the number of toys and of failed fits, and the first few
    failure messages."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, arr in toys.items():
        failed = arr["failed"]
        messages = sorted({m for m in arr["error"][failed]})
        entry: Dict[str, Any] = {"n_toys": int(len(failed)), "n_failed": int(failed.sum()), "errors": messages[:5],
                                 "pois": {}}
        for poi in analysis.poi_names:
            q = arr[f"q_{poi}"]
            pulls = arr[f"pull_{poi}"][~failed]
            n = max(len(pulls), 1)
            cov = {}
            for level, c in COVERAGE_LEVELS.items():
                f = coverage_fraction(q, c)
                cov[level] = {"fraction": f.fraction, "low": f.low, "high": f.high, "covered": f.covered, "n": f.n}
            entry["pois"][poi] = {
                "coverage": cov,
                "pull_mean": float(np.mean(pulls)) if len(pulls) else float("nan"),
                "pull_mean_error": float(np.std(pulls) / np.sqrt(n)) if len(pulls) else float("nan"),
                "pull_std": float(np.std(pulls, ddof=1)) if len(pulls) > 1 else float("nan"),
                "pull_std_error": float(np.std(pulls, ddof=1) / np.sqrt(2 * (n - 1))) if len(pulls) > 1 else float("nan"),
            }
        out[name] = entry
    return out


def format_coverage(summary: Dict[str, Dict[str, Any]]) -> str:
    """A markdown table of :func:`coverage_summary`: one row per setting and POI."""
    lines = ["| setting | POI | toys (failed) | coverage 68 % | coverage 95 % | pull mean | pull width |",
             "|---|---|---|---|---|---|---|"]
    for name, e in summary.items():
        for poi, r in e["pois"].items():
            c = {k: f"{v['fraction']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for k, v in r["coverage"].items()}
            lines.append(f"| {name} | {poi} | {e['n_toys']} ({e['n_failed']}) | {c['68%']} | {c['95%']} | "
                         f"{r['pull_mean']:+.3f} ± {r['pull_mean_error']:.3f} | "
                         f"{r['pull_std']:.3f} ± {r['pull_std_error']:.3f} |")
    return "\n".join(lines)
