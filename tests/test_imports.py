"""The statistics core and the Analysis import without the host; the public API loads LUMIN only when used."""

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_statistics_and_analysis_import_without_lumin():
    out = _run(
        "import sys, lumin_inferno, lumin_inferno.statistics, lumin_inferno.analysis\n"
        "a = lumin_inferno.Analysis\n"  # a public name from the core: still no host
        "from lumin_inferno.statistics import TemplateModel, fisher_information, profile_interval\n"
        "print(sorted(m for m in ('lumin', 'pdpbox', 'lumin_inferno.callbacks') if m in sys.modules))"
    )
    assert out == "[]"


def test_public_callback_loads_lumin_without_pdpbox_silencing_warnings():
    out = _run(
        "import sys, warnings, lumin_inferno\n"
        "cb = lumin_inferno.InfernoCallback\n"
        "print('lumin' in sys.modules, ('ignore', None, Warning, None, 0) in warnings.filters)"
    )
    assert out == "True False"


def test_every_public_name_resolves():
    import lumin_inferno

    for name in lumin_inferno.__all__:
        assert getattr(lumin_inferno, name) is not None, name
    assert set(lumin_inferno.__all__) <= set(dir(lumin_inferno))


def test_top_level_api_is_the_library_not_the_studies():
    import lumin_inferno

    names = lumin_inferno.__all__
    assert len(names) == len(set(names))
    studies_only = {"paper_benchmark", "sample_paper", "write_paper_foldfiles", "analytic_limit", "sample_pivot_toy",
                    "write_pivot_toy_foldfile", "PaperBenchmark", "PaperTransform", "mdn_nll"}
    assert not studies_only & set(names)
    # one name for σ(POI): no second spelling of the same function at the top level
    assert {"expected_poi_uncertainty", "expected_poi_uncertainties"} <= set(names)
    assert not {n for n in names if n.endswith("_uncertainty") and "poi" not in n}


def test_layers_import_downwards_only():
    # evaluation and export read trained models; they never load the training hooks
    out = _run(
        "import sys, lumin_inferno.evaluation, lumin_inferno.export, lumin_inferno.data\n"
        "print(sorted(m for m in sys.modules if m.startswith(('lumin_inferno.callbacks', 'lumin_inferno.studies'))))"
    )
    assert out == "[]"
