"""One way to write a file atomically: into a temporary file in the target's directory, renamed over the target
only when the writer finished without error (``os.replace`` is atomic on POSIX), so an error or an interrupt never
leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .exceptions import ConfigurationError

__all__ = ["atomic_write", "atomic_write_text", "atomic_directory"]


@contextlib.contextmanager
def atomic_write(path: Union[str, Path], suffix: str = ".tmp") -> Iterator[Path]:
    """Context manager yielding a temporary path (an empty file, named ``.<name>.<random><suffix>`` next to
    ``path``; give a ``suffix`` when the writer infers the format from it, e.g. ``".tmp.png"``) to write; on success
    it replaces ``path``, on error it is removed and ``path`` is untouched. The directory of ``path`` must exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigurationError(f"output directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: Union[str, Path], overwrite: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary directory next to ``path`` to fill; on success it takes the place of
    ``path`` (an existing one is replaced when ``overwrite``, else :class:`ConfigurationError`), on error it is
    removed and ``path`` is untouched."""
    import shutil

    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigurationError(f"output directory {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise ConfigurationError(f"{path} exists; refusing to overwrite it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
