"""LUMIN fold files on disk: written quietly with a reproducible fold split, opened read-only for training and
evaluation."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Optional, Union

import h5py
import numpy as np

__all__ = ["open_foldfile", "quiet_df2foldfile"]


def open_foldfile(path: Union[str, Path], **kwargs):
    """LUMIN's ``FoldYielder`` on the fold file at ``path``, opened read-only and without HDF5's file lock
    (``kwargs`` go to ``FoldYielder``: ``input_pipe``, ``ignore_feats``, ...).

    ``FoldYielder(path)`` opens the file read-write (LUMIN may write predictions into it), which takes HDF5's lock:
    a second process opening the same file then fails with ``BlockingIOError: unable to lock file``. Training and
    evaluation only read, so every member, worker, study and benchmark can read one file at once this way."""
    from lumin.nn.data.fold_yielder import FoldYielder

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no fold file at {path}")
    return FoldYielder(h5py.File(path, "r", locking=False), **kwargs)


def quiet_df2foldfile(fn, fold_seed: Optional[int] = None, **kwargs) -> None:
    """Call LUMIN's ``df2foldfile`` (``fn``) silently: it shells out to ``rm`` (printing errors when nothing is there)
    and prints progress. Its (stratified) fold split draws from numpy's global generator; with ``fold_seed`` that
    generator is seeded with it first (and left in its state after the split), so the same seed writes the same
    folds whatever ran before. A single fold is written without a split, and leaves the generator alone."""
    if fold_seed is not None and kwargs["n_folds"] > 1:
        np.random.seed(fold_seed)

    target = Path(kwargs["savename"] + ".hdf5")
    if target.exists():
        target.unlink()
    if kwargs["n_folds"] == 1:
        # StratifiedKFold/KFold need >= 2 splits; write a single fold with the lower-level writer.
        from lumin.data_processing.file_proc import add_meta_data, fold2foldfile

        df = kwargs["df"]
        with h5py.File(target, "w") as out_file:
            fold2foldfile(
                df,
                out_file,
                0,
                cont_feats=kwargs["cont_feats"],
                cat_feats=kwargs["cat_feats"],
                targ_feats=kwargs["targ_feats"],
                targ_type=kwargs["targ_type"],
                wgt_feat=kwargs["wgt_feat"],
            )
            add_meta_data(
                out_file=out_file,
                feats=list(df.columns),
                cont_feats=kwargs["cont_feats"],
                cat_feats=kwargs["cat_feats"],
                cat_maps=None,
                targ_feats=kwargs["targ_feats"],
                wgt_feat=kwargs["wgt_feat"],
            )
        return
    devnull = open(os.devnull, "w")
    with contextlib.redirect_stdout(io.StringIO()), devnull:
        old = os.dup(2)
        os.dup2(devnull.fileno(), 2)
        try:
            fn(**kwargs)
        finally:
            os.dup2(old, 2)
            os.close(old)
