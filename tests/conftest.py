import os

os.environ.setdefault("MPLBACKEND", "Agg")
from lumin_inferno._compat import import_lumin  # noqa: E402

import_lumin()  # LUMIN once, before any test module imports it, with pdpbox's global warning filter removed


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def paper_foldfiles(tmp_path_factory) -> tuple:
    """Tiny paper-problem fold files on disk: (train.hdf5 with 3 folds, test.hdf5 with one fold)."""
    from lumin_inferno.data import write_paper_foldfiles

    out = tmp_path_factory.mktemp("paper_data")
    return write_paper_foldfiles(out, n_train_per_class=3000, n_test_per_class=4000, n_folds=3, seed=5)


@pytest.fixture()
def inferno_builder():
    """Factory of LUMIN ModelBuilders with a softmax-temperature tail (small network)."""
    import contextlib
    import io

    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    from lumin_inferno import SoftmaxTemperatureTail

    def make(cont_feats, n_bins=6, lr=3e-3, width=32, **body):
        with contextlib.redirect_stdout(io.StringIO()):
            return ModelBuilder(
                objective="classification",
                n_out=n_bins,
                cont_feats=cont_feats,
                cat_embedder=CatEmbedder([], []),
                model_args={"body": {"width": width, "depth": 2, **body}, "tail": {"temperature": 0.1}},
                tail=SoftmaxTemperatureTail,
                opt_args={"opt": "adam", "lr": lr},
            )

    return make
