"""Ensemble members as independent tasks: LUMIN's ``train_models`` for one member each, serially or on Dask.

Member ``i`` is trained exactly as ``train_models(fy, n_models, ...)`` would train its ``i``-th model (validation
fold ``i mod n_folds``, the other folds for training) with its own seed, ``seed + i``, so a member's numbers do not
depend on where, when or next to what it ran: a serial run and a run on any cluster give the same models. Each
member is written into ``savepath/model_id_i`` atomically (LUMIN's files, ``member.json`` with its results and
history, ``train.log`` with LUMIN's printout); a rerun finds the finished members and trains only the others.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..exceptions import ConfigurationError, FanOutError
from ..io import atomic_directory, atomic_write_text
from .tasks import run_tasks

__all__ = ["MemberTask", "train_members", "member_tasks", "train_member_tasks", "load_member", "FanOutError"]

PathLike = Union[str, Path]
MEMBER_FILE = "member.json"


@dataclass
class MemberTask:
    """Everything one ensemble member needs, picklable for a Dask worker.

    Attributes:
        foldfile: path of the training fold file; ``foldfile_kwargs`` go to LUMIN's ``FoldYielder`` (e.g.
            ``input_pipe``).
        builder: the LUMIN ``ModelBuilder``; ``cb_partials`` / ``metric_partials`` as for ``train_models``.
        model_id, n_models: the member and the ensemble size (LUMIN picks the validation fold from them).
        seed: the member's seed (torch, numpy, random) is ``seed + model_id``.
        torch_threads: ``torch.set_num_threads`` inside the task (``None``: leave it); the thread count changes the
            order of floating-point sums, so serial and distributed runs compare equal only with the same value.
        train_kwargs: the other ``train_models`` arguments (``patience``, ``train_on_weights``, ...).
    """

    foldfile: str
    builder: Any
    model_id: int
    n_models: int
    bs: int
    n_epochs: int
    savepath: str
    cb_partials: Sequence[Callable] = ()
    metric_partials: Sequence[Callable] = ()
    seed: int = 0
    torch_threads: Optional[int] = None
    foldfile_kwargs: Dict[str, Any] = field(default_factory=dict)
    train_kwargs: Dict[str, Any] = field(default_factory=dict)
    #: what the member was trained with; a member on disk with another fingerprint is retrained, not reused
    fingerprint: str = ""

    @property
    def directory(self) -> Path:
        return Path(self.savepath) / f"model_id_{self.model_id}"

    def __call__(self) -> Tuple[dict, tuple]:
        """Train the member (unless it is already on disk) in a process of its own and return LUMIN's (results,
        history) for it.

        A process per member: LUMIN draws from Python's and numpy's global generators, which anything else in a
        long-lived process may also draw from (Dask's own threads do), and a process carries state from one training
        to the next. Seeded in a process of its own, a member gives the same numbers wherever it runs. The process is
        forked from a server that has imported LUMIN once (``fanout/member.py``), or, where CUDA is in use, a fresh
        interpreter."""
        done = load_member(self.directory, self.fingerprint)
        if done is not None:
            return done
        return _in_subprocess(self)


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def load_member(directory: PathLike, fingerprint: Optional[str] = None) -> Optional[Tuple[dict, tuple]]:
    """(results, history) of a finished member written by :func:`train_members`, or ``None`` if there is none (or,
    with ``fingerprint``, none trained with that fingerprint): ``results`` as LUMIN's (``"path"`` the member's
    directory), ``history`` its (losses, metrics) per epoch."""
    directory = Path(directory)
    path = directory / MEMBER_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    if fingerprint is not None and d.get("fingerprint", "") != fingerprint:
        return None
    results = dict(d["results"], path=directory)
    return results, (d["history"][0], d["history"][1])


def _in_subprocess(task: MemberTask) -> Tuple[dict, tuple]:
    import tempfile

    Path(task.savepath).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(prefix=f".member_{task.model_id}.", suffix=".pkl", dir=task.savepath) as f:
        f.write(_pickled(task))
        f.flush()
        log = Path(f.name + ".log")
        try:
            if _fork_safe():
                code = _MEMBER_SERVERS.run(f.name)
            else:  # CUDA cannot be used in a forked child: a fresh interpreter per member
                from .member import die_with_parent

                with open(log, "w") as out:
                    code = subprocess.run([sys.executable, "-m", "lumin_inferno.fanout.member", f.name], stdout=out,
                                          stderr=subprocess.STDOUT, preexec_fn=die_with_parent).returncode
            tail = _tail(log.read_text(errors="replace")) if log.is_file() else ""
        finally:
            log.unlink(missing_ok=True)
    if code != 0:
        raise FanOutError(f"ensemble member {task.model_id} ({task.directory}) failed (exit {code}):\n{tail}")
    done = load_member(task.directory, task.fingerprint)
    if done is None:  # pragma: no cover - the child exits 0 only after writing the member
        raise FanOutError(f"ensemble member {task.model_id}: the training process wrote no {task.directory / MEMBER_FILE}")
    return done


def _tail(output: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a process's output, for an error message."""
    return "\n".join(output.strip().splitlines()[-lines:])


def _pickled(task: MemberTask) -> bytes:
    """The task as the member's process will read it; a :class:`ConfigurationError` if it cannot be pickled, or if it
    refers to classes or functions of the running script (``__main__``), which the member's process cannot load."""
    import pickle
    import pickletools

    try:
        payload = pickle.dumps(task)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise ConfigurationError(f"ensemble member {task.model_id}: its builder and callback partials must be "
                                 f"picklable (module-level classes and functions, no lambdas): {err}") from err
    # a global is named by GLOBAL "module name" or by the strings pushed before STACK_GLOBAL
    if any(isinstance(arg, str) and (arg == "__main__" or arg.startswith("__main__ "))
           for _, arg, _ in pickletools.genops(payload)):
        raise ConfigurationError(f"ensemble member {task.model_id}: its builder or callback partials refer to classes "
                                 "or functions defined in the script being run (__main__); the member's process "
                                 "cannot load those: move them into an importable module")
    return payload


def _fork_safe() -> bool:
    """Members fork from the server unless CUDA is in use here (a forked child cannot initialise CUDA) or the
    platform cannot fork."""
    if not hasattr(os, "fork"):  # pragma: no cover - not Linux
        return False
    import torch

    return not torch.cuda.is_available()


class _MemberServers:
    """One fork server (``python -m lumin_inferno.fanout.member --serve``) per calling thread, started at its first
    member and kept for the process's life: the imports are paid once per thread, not once per member; each member
    still trains in a process of its own, forked from the server's clean post-import state."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: List[subprocess.Popen] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    def run(self, task_path: str) -> int:
        """Exit status of the member process that trained the pickled task at ``task_path`` (its output in
        ``task_path + ".log"``)."""
        proc = getattr(self._local, "proc", None)
        if proc is None or proc.poll() is not None:
            if proc is not None:
                self._drop(proc)
            proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(task_path + "\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()
            code = int(answer) if answer.strip() else None
        except (OSError, ValueError):  # a broken pipe, or not an exit status: the server is gone or out of step
            code = None
        except BaseException:  # interrupted while a member trains: never leave its answer for the next member
            self._drop(proc)
            raise
        if code is None:  # the server died (killed, or it could not import the package)
            self._drop(proc)
            err = self._local.stderr
            err.seek(0)
            tail = _tail(err.read().decode(errors="replace"))
            raise FanOutError(f"the member process server (python -m lumin_inferno.fanout.member --serve) died "
                              f"(exit {proc.returncode}):\n{tail}")
        return code

    def _start(self) -> subprocess.Popen:
        import tempfile

        from .member import die_with_parent

        stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTORCH_NVML_BASED_CUDA_CHECK="1")  # an import-time CUDA check must not break forks
        proc = subprocess.Popen([sys.executable, "-m", "lumin_inferno.fanout.member", "--serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, preexec_fn=die_with_parent)
        self._local.proc, self._local.stderr = proc, stderr
        with self._lock:
            self._all.append(proc)
        return proc

    def _drop(self, proc: subprocess.Popen) -> None:
        """Kill a server (its member dies with it) and release it."""
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with self._lock:
            if proc in self._all:
                self._all.remove(proc)
        if getattr(self._local, "proc", None) is proc:
            self._local.proc = None

    def close(self, timeout: float = 5.0) -> None:
        """Stop every server: end of input lets an idle one exit; one still training a member after ``timeout``
        seconds (for all together) is killed, its member with it (its result would go nowhere)."""
        with self._lock:
            procs, self._all = self._all, []
        for proc in procs:
            if proc.poll() is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


_MEMBER_SERVERS = _MemberServers()


def train_member(task: MemberTask) -> Tuple[dict, tuple]:
    """Train one member in this process (what the member's own process of :meth:`MemberTask.__call__` runs)."""
    return _train(task)


def _train(task: MemberTask) -> Tuple[dict, tuple]:
    import torch
    from ..data.foldfiles import open_foldfile
    from lumin.nn.training.train import train_models

    from ..studies.common import seed_everything

    threads = torch.get_num_threads()
    if task.torch_threads is not None:
        torch.set_num_threads(task.torch_threads)
    t0 = time.time()
    try:
        Path(task.savepath).mkdir(parents=True, exist_ok=True)
        for stale in Path(task.savepath).glob(f".{task.directory.name}.*.tmp"):  # left by an attempt that was killed
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_directory(task.directory) as tmp:
            seed_everything(task.seed + task.model_id)
            # read-only and without HDF5's file lock: every worker (and the caller, which may hold the file open
            # read-write) reads the same fold file at once
            fy = open_foldfile(task.foldfile, **task.foldfile_kwargs)
            inner = tmp / "lumin"
            inner.mkdir()
            (inner / f"model_id_{task.model_id}").mkdir()  # train_models shells out `rm -r` on it
            with open(tmp / "train.log", "w") as log, contextlib.redirect_stdout(log):
                results, histories, _ = train_models(
                    fy, n_models=task.model_id + 1, start_model_id=task.model_id, bs=task.bs,
                    model_builder=task.builder, n_epochs=task.n_epochs, cb_partials=list(task.cb_partials) or None,
                    metric_partials=list(task.metric_partials) or None, savepath=inner, live_fdbk=False,
                    **task.train_kwargs)
            member = inner / f"model_id_{task.model_id}"
            for f in member.iterdir():  # LUMIN's layout: the member's files directly in model_id_i
                os.replace(f, tmp / f.name)
            for f in inner.iterdir():
                if f.is_file():
                    os.replace(f, tmp / f"ensemble_{f.name}")
            shutil.rmtree(inner)
            result = {k: v for k, v in results[0].items() if k != "path"}
            history = (dict(histories[0][0]), dict(histories[0][1]))
            atomic_write_text(tmp / MEMBER_FILE, json.dumps(_to_json(
                {"model_id": task.model_id, "seed": task.seed + task.model_id, "fingerprint": task.fingerprint,
                 "results": result,
                 "history": history, "seconds": time.time() - t0}), indent=1))
    finally:
        torch.set_num_threads(threads)
    loaded = load_member(task.directory, task.fingerprint)
    assert loaded is not None  # written just above, with this fingerprint
    return loaded


def member_tasks(
    foldfile: PathLike,
    builder: Any,
    n_models: int,
    bs: int,
    n_epochs: int,
    savepath: PathLike,
    cb_partials: Optional[Sequence[Callable]] = None,
    metric_partials: Optional[Sequence[Callable]] = None,
    seed: int = 0,
    torch_threads: Optional[int] = None,
    foldfile_kwargs: Optional[Dict[str, Any]] = None,
    fingerprint: Optional[str] = None,
    **train_kwargs: Any,
) -> List[MemberTask]:
    """The ``n_models`` :class:`MemberTask` s of one ensemble (arguments as :func:`train_members`), to be run with
    :func:`train_member_tasks`, e.g. together with other ensembles' in one fan-out."""
    if n_models < 1:
        raise ConfigurationError(f"n_models must be ≥ 1, got {n_models}")
    foldfile = str(foldfile)
    if not Path(foldfile).is_file():
        raise ConfigurationError(f"fold file {foldfile} does not exist")
    if fingerprint is None:
        st = os.stat(foldfile)
        fingerprint = json.dumps([os.path.abspath(foldfile), st.st_size, st.st_mtime_ns, n_models, bs, n_epochs, seed,
                                  repr(sorted(train_kwargs.items()))])
    tasks = [MemberTask(os.path.abspath(foldfile), builder, i, n_models, bs, n_epochs, os.path.abspath(savepath),
                        tuple(cb_partials or ()), tuple(metric_partials or ()), seed, torch_threads,
                        dict(foldfile_kwargs or {}), dict(train_kwargs), fingerprint) for i in range(n_models)]
    _pickled(tasks[0])  # every member pickles alike: one clear error before anything runs
    return tasks


def train_member_tasks(tasks: Sequence[MemberTask], client: Any = None, retries: int = 2,
                       progress: bool = True) -> List[Tuple[dict, tuple]]:
    """(results, history) of every task, in task order: members already on disk (same fingerprint) are loaded, the
    others trained here one after the other or, with a Dask ``client``, all at once on its workers (one fastprogress
    bar over the whole fan-out). Raises :class:`FanOutError` naming every member that still failed after its
    retries; finished members stay on disk."""
    out: Dict[int, Tuple[dict, tuple]] = {}
    for i, t in enumerate(tasks):
        done = load_member(t.directory, t.fingerprint)
        if done is not None:
            out[i] = done
    todo = [i for i in range(len(tasks)) if i not in out]
    for i, r in zip(todo, run_tasks([tasks[i] for i in todo], client, retries, progress, len(out), _describe,
                                    key="lumin-inferno-member")):
        out[i] = r
    return [out[i] for i in range(len(tasks))]


def train_members(
    foldfile: PathLike,
    builder: Any,
    n_models: int,
    bs: int,
    n_epochs: int,
    savepath: PathLike,
    cb_partials: Optional[Sequence[Callable]] = None,
    metric_partials: Optional[Sequence[Callable]] = None,
    seed: int = 0,
    client: Any = None,
    retries: int = 2,
    torch_threads: Optional[int] = None,
    foldfile_kwargs: Optional[Dict[str, Any]] = None,
    progress: bool = True,
    fingerprint: Optional[str] = None,
    **train_kwargs: Any,
) -> Tuple[List[dict], List[tuple]]:
    """Train ``n_models`` ensemble members, one task each, and return ``(results, histories)`` in member order, as
    LUMIN's ``train_models`` does (so ``Ensemble.from_results``, alignment and export take them unchanged).

    Without ``client`` the tasks run here, one after the other; with a ``dask.distributed`` client
    (:func:`~lumin_inferno.fanout.connect`) they run on its workers, each retried ``retries`` times if it raises
    or its worker dies. Members already in ``savepath`` are loaded, not retrained; the others are written there
    atomically as each finishes, so an interrupted run resumes where it stopped; a member on disk is reused only if
    it was trained with the same ``fingerprint`` (default: the fold file's path, size and modification time, the
    ensemble size, batch size, epochs, seed and ``train_kwargs``; pass one that also names your callbacks' settings),
    otherwise it is retrained. ``train_kwargs`` go to ``train_models`` (e.g. ``patience``,
    ``train_on_weights=False``). Several ensembles in one fan-out: :func:`member_tasks` and
    :func:`train_member_tasks`.

    Raises :class:`FanOutError` naming the member and its error when a task still fails after its retries (the
    finished members stay on disk)."""
    tasks = member_tasks(foldfile, builder, n_models, bs, n_epochs, savepath, cb_partials, metric_partials, seed,
                         torch_threads, foldfile_kwargs, fingerprint, **train_kwargs)
    done = train_member_tasks(tasks, client, retries, progress)
    return [d[0] for d in done], [d[1] for d in done]


def _describe(task: MemberTask) -> str:
    return f"ensemble member {task.model_id} ({task.directory})"
