"""The pivot toy study and its example script, in their tiny configurations."""

import importlib.util
import json
from pathlib import Path

import torch

from lumin_inferno.studies.pivot import PivotStudySettings, main, run_pivot_study

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pivot_toy.py"


def test_study_tiny(tmp_path, capsys):
    threads = torch.get_num_threads()
    rows = run_pivot_study(PivotStudySettings.tiny(outdir=str(tmp_path / "study")))
    assert torch.get_num_threads() == threads  # restored
    assert [r["lam"] for r in rows] == [0.0, 10.0]
    plain, pivot = rows
    assert pivot["dcor"] < plain["dcor"] and pivot["js_+1"] < plain["js_+1"] and pivot["js_-1"] < plain["js_-1"]
    assert 0.6 < pivot["auc"] < plain["auc"] < 0.95
    out = capsys.readouterr().out
    assert "| λ | ROC AUC |" in out and "| 10 |" in out
    assert (tmp_path / "study" / "pivot_outputs.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["settings"]["lambdas"] == [0.0, 10.0] and len(saved["rows"]) == 2
    assert (tmp_path / "study" / "results.md").read_text().startswith("| λ |")


def test_cli_and_example(tmp_path, capsys):
    assert main(["--tiny", "--quiet", "--outdir", str(tmp_path / "cli"), "--lambdas", "0", "--n-epochs", "1"]) == 0
    assert len(json.loads((tmp_path / "cli" / "results.json").read_text())["rows"]) == 1
    spec = importlib.util.spec_from_file_location("pivot_toy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        res = module.main(str(tmp_path / "example"), tiny=True)
    finally:
        torch.set_num_threads(threads)
    assert set(res) == {0.0, 10.0} and res[10.0]["dcor"] < res[0.0]["dcor"]
    assert "plot:" in capsys.readouterr().out


def test_interrupted_rerun_does_not_look_complete(tmp_path, monkeypatch):
    import lumin_inferno.studies.pivot as study

    out = tmp_path / "study"
    out.mkdir()
    (out / "results.json").write_text("{}")  # a finished earlier run
    (out / "results.md").write_text("old")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "evaluate_pivot", interrupted)
    settings = PivotStudySettings.tiny(outdir=str(out))
    settings.lambdas, settings.n_epochs = [0.0], 1
    try:
        run_pivot_study(settings, verbose=False)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interruption did not propagate")
    assert not (out / "results.json").exists() and not (out / "results.md").exists()
