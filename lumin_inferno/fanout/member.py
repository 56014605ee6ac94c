"""The processes ensemble members train in.

* ``python -m lumin_inferno.fanout.member TASK.pkl``: train one pickled :class:`~lumin_inferno.fanout.MemberTask`
  in this (fresh) process; exit status 0 once the member is on disk.
* ``python -m lumin_inferno.fanout.member --serve``: a fork server. It imports torch, LUMIN and this package once,
  then for each task path read from stdin forks a child that trains that member and exits, and answers the child's
  exit status on stdout. Every member still starts from the same clean state (the server itself never trains), but
  without paying the ~10–20 s of imports per member; a child's stdout and stderr go to ``TASK.pkl.log``.

Both die with their parent (Linux ``PR_SET_PDEATHSIG``), so a killed Dask worker leaves no training behind.
"""

import os
import pickle
import sys
from typing import Callable, NoReturn, Optional


def _resolve_prctl() -> Optional[Callable[..., int]]:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


#: resolved once at import, in the parent: the function that ``Popen``'s ``preexec_fn`` runs between fork and exec
#: (in a possibly multi-threaded parent) must not import or load libraries
_PRCTL = _resolve_prctl()


def die_with_parent() -> None:  # pragma: no cover - runs in a child process
    """Linux: this process gets SIGKILL when the thread that started it exits (a killed Dask worker, a server whose
    client died)."""
    if _PRCTL is not None:
        _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _train(path: str) -> None:
    from .training import train_member

    with open(path, "rb") as f:
        task = pickle.load(f)
    train_member(task)


def _preload() -> None:
    from .._compat import import_lumin

    import_lumin()
    import h5py  # noqa: F401
    import lumin.nn.training.train  # noqa: F401

    import lumin_inferno  # noqa: F401  # callbacks, statistics, evaluation: what a member's pickle refers to
    from . import training  # noqa: F401


def _child(path: str, server: int) -> NoReturn:  # pragma: no cover - runs in a forked child, left by os._exit
    code = 1
    try:
        die_with_parent()
        if os.getppid() != server:  # the server died before the line above: nobody would collect this member
            os._exit(1)
        fd = os.open(path + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdin = open(os.devnull)
        _train(path)
        code = 0
    except BaseException:  # noqa: BLE001 - reported through the log and the exit status
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    """The fork server's loop: one task path per stdin line, one exit status per line of the answer channel (the
    original stdout; anything printed by the imports or by Python itself goes to stderr instead)."""
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _preload()
    me = os.getpid()
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            answer.close()
            _child(path, me)
        _, status = os.waitpid(pid, 0)
        answer.write(f"{os.waitstatus_to_exitcode(status)}\n")
        answer.flush()
    return 0


def main() -> int:
    if sys.argv[1:] == ["--serve"]:
        return serve()
    from .._compat import import_lumin

    import_lumin()
    _train(sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
