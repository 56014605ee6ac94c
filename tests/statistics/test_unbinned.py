"""Extended unbinned Fisher information against closed forms."""

import math

import pytest
import torch

from lumin_inferno.exceptions import InvalidModelSpecError, SingularHessianError
from lumin_inferno.statistics.likelihood import Parameter
from lumin_inferno.statistics.unbinned import extended_fisher_information, unbinned_poi_uncertainty


def _normal_pdf(x, mean, sigma):
    return torch.exp(-0.5 * ((x - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def test_identical_shapes_reduce_to_counting_experiment():
    # s f(x) + b f(x): the shape carries no information, σ(s) = √(s + b) with b known.
    s, b = 40.0, 900.0
    params = [Parameter("s", s)]

    def nu(x, th):
        return (th[0] + b) * _normal_pdf(x[:, 0], 0.0, 1.0)

    gen = torch.Generator().manual_seed(0)
    samples = {"signal": torch.randn(5000, 1, generator=gen), "background": torch.randn(5000, 1, generator=gen)}
    sigma = unbinned_poi_uncertainty(nu, params, samples, {"signal": s, "background": b})
    assert sigma == pytest.approx(math.sqrt(s + b), rel=1e-9)


def test_gaussian_mean_and_constraint():
    # s events of N(μ, w): I_μμ = s / w², plus 1/σ_c² from a Gaussian constraint; I_sμ = 0 by symmetry.
    s, w, sc = 200.0, 2.0, 0.1
    params = [Parameter("s", s), Parameter("mu", 0.0, constraint=sc)]

    def nu(x, th):
        return th[0] * _normal_pdf(x[:, 0], th[1], w)

    x = torch.randn(400_000, 1, generator=torch.Generator().manual_seed(1)) * w
    info = extended_fisher_information(nu, params, {"sig": x}, {"sig": s})
    assert info[0, 0] == pytest.approx(1.0 / s, rel=1e-9)  # ∫ f²/ν = 1/s exactly, whatever the sample
    assert info[1, 1] == pytest.approx(s / w**2 + 1 / sc**2, rel=0.01)
    assert abs(info[0, 1]) < 0.01 * math.sqrt(info[0, 0] * info[1, 1])


def test_errors_name_the_problem():
    params = [Parameter("s", 10.0), Parameter("free", 0.0)]

    def nu(x, th):  # does not depend on "free": singular information
        return th[0] * _normal_pdf(x[:, 0], 0.0, 1.0)

    x = torch.randn(100, 1)
    with pytest.raises(SingularHessianError):
        unbinned_poi_uncertainty(nu, params, {"sig": x}, {"sig": 10.0})
    with pytest.raises(InvalidModelSpecError, match="different processes"):
        extended_fisher_information(nu, params, {"sig": x}, {"bkg": 10.0})
