"""TemplateModel input validation: bad templates, data and parameter vectors get named errors, not numbers."""

import numpy as np
import pytest
import torch

from lumin_inferno.exceptions import InvalidModelSpecError
from lumin_inferno.statistics import Parameter, ShapeSystematic, TemplateModel, fit, nll_hessian, profile_interval

D = torch.float64
GOOD = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], dtype=D)


def _model(t, shapes=()):
    params = [Parameter("s", 50.0)] + [Parameter(s.parameter, 0.0, constraint=1.0) for s in shapes]
    return TemplateModel(["sig", "bkg"], t, {"sig": "s", "bkg": 1000.0}, params, poi="s", shape_systematics=list(shapes))


@pytest.mark.parametrize("templates, match", [
    (torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.5, -0.1]], dtype=D), "process 'bkg' has negative bins \\[2\\]"),
    (torch.tensor([[0.1, float("nan"), 0.7], [0.5, 0.3, 0.2]], dtype=D), "process 'sig' has non-finite bins \\[1\\]"),
    (torch.tensor([[0.1, 0.2, 0.7], [0.5, float("inf"), 0.2]], dtype=D), "process 'bkg' has non-finite"),
    (torch.tensor([[1, 2, 7], [5, 3, 2]]), "floating point"),
    (np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]), "torch tensor"),
    (GOOD[:, :, None], "n_processes"),
])
def test_bad_templates_are_named(templates, match):
    with pytest.raises(InvalidModelSpecError, match=match):
        _model(templates)


def test_non_finite_shift_is_named_but_negative_shift_allowed():
    up = torch.tensor([0.5, float("nan"), 0.2], dtype=D)
    with pytest.raises(InvalidModelSpecError, match="shift_up template of systematic 'r' on 'bkg' has non-finite"):
        _model(GOOD, [ShapeSystematic("r", "bkg", up, GOOD[1])])
    # a shifted template may dip below 0 (negative up/down event weights); only the nominal expectation may not
    _model(GOOD, [ShapeSystematic("r", "bkg", torch.tensor([0.55, -0.01, 0.2], dtype=D), GOOD[1])])


def test_bad_data_and_parameter_vectors_are_named():
    m = _model(GOOD)
    with pytest.raises(InvalidModelSpecError, match="one value per bin, shape \\(3,\\); got shape \\(1,\\)"):
        profile_interval(m, torch.tensor([300.0], dtype=D))  # was: "300 in every bin"
    with pytest.raises(InvalidModelSpecError, match="one value per parameter"):
        nll_hessian(m, theta=torch.tensor([1.0, 2.0, 3.0], dtype=D))  # was: a zero-padded 3×3
    with pytest.raises(InvalidModelSpecError, match="finite and >= 0"):
        fit(m, torch.tensor([10.0, -5.0, 3.0], dtype=D))
    with pytest.raises(InvalidModelSpecError, match="finite and >= 0"):
        fit(m, torch.tensor([10.0, float("nan"), 3.0], dtype=D))
