"""Fold files opened read-only: several processes read one file at once."""

import subprocess
import sys

import numpy as np
import pytest
from lumin.nn.data.fold_yielder import FoldYielder

from lumin_inferno.data import open_foldfile

HOLD = """
import sys
import h5py
# as open_foldfile does, or as LUMIN's FoldYielder(path) does (read-write, HDF5's lock)
f = h5py.File(sys.argv[1], "r", locking=False) if sys.argv[2] == "read-only" else h5py.File(sys.argv[1], "r+")
print("open", flush=True)
sys.stdin.read()  # hold the file open until the parent closes our stdin
"""


@pytest.mark.parametrize("holder", ["read-only", "LUMIN read-write"])
def test_a_fold_file_held_open_by_another_process_can_be_read(paper_foldfiles, holder):
    """While another process holds the file open (read-only here, or read-write with HDF5's lock as LUMIN's
    ``FoldYielder(path)`` does), open_foldfile reads it and gives what LUMIN reads."""
    train = str(paper_foldfiles[0])
    expected = FoldYielder(train).get_fold(1)["inputs"]  # before the other process takes the lock
    proc = subprocess.Popen([sys.executable, "-c", HOLD, train, holder.split()[-1]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        if holder != "read-only":  # the failure open_foldfile avoids
            with pytest.raises(BlockingIOError):
                FoldYielder(train)
        fy = open_foldfile(train)
        assert fy.n_folds == 3
        np.testing.assert_array_equal(fy.get_fold(1)["inputs"], expected)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_missing_fold_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no fold file at .*nothing.hdf5"):
        open_foldfile(tmp_path / "nothing.hdf5")
