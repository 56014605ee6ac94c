"""Template interpolation in a nuisance parameter, following pyhf's interpolation codes.

A nuisance ``alpha`` is measured in units of its ±1σ template shift: ``alpha = 0`` gives the nominal template,
``alpha = +1`` the *shift_up* template and ``alpha = -1`` the *shift_down* one. We use the same codes as pyhf
(``code4p`` for shapes, additive; ``code4`` for normalisations, multiplicative) so that a workspace exported to pyhf
describes the very same likelihood (see ``docs/statistics.md``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["code4p", "code4", "code1", "code4p_slope", "code4_slope", "code1_slope", "NORM_INTERPOLATIONS"]

#: normalisation interpolation codes (pyhf ``normsys`` interpcode): ``code4`` (polynomial inside ±1, exponential
#: outside; pyhf's choice for smooth fits) and ``code1`` (κ^α, exponential everywhere: HistFactory's default and
#: combine's symmetric ``lnN``).
NORM_INTERPOLATIONS = ("code4", "code1")


def code4p(alpha: Tensor, nominal: Tensor, shift_up: Tensor, shift_down: Tensor) -> Tensor:
    r"""Additive shape interpolation (pyhf ``code4p``); returns the *change* of the template, not the template.

    With :math:`\delta_\pm` the up/down differences to nominal, :math:`S = (\delta_+ + \delta_-)/2` and
    :math:`A = (\delta_+ - \delta_-)/16`:

    * :math:`|\alpha| \le 1`: :math:`\Delta = \alpha\,(S + \alpha A (15 - 10\alpha^2 + 3\alpha^4))`, which
      reproduces the up/down templates at ±1 with continuous first and second derivatives there;
    * :math:`|\alpha| > 1`: linear extrapolation, :math:`\Delta = \alpha\,\delta_+` (up) or
      :math:`\alpha\,\delta_-` (down).

    ``alpha`` broadcasts against the templates (e.g. shape ``[S, 1]`` against ``[S, B]``). At ``alpha = 0`` the
    slope is exactly :math:`S`, the central difference :math:`(\text{up} - \text{down})/2`.
    """
    delta_up = shift_up - nominal
    delta_down = nominal - shift_down
    s = 0.5 * (delta_up + delta_down)
    a = 0.0625 * (delta_up - delta_down)
    a2 = alpha * alpha
    inner = alpha * (s + alpha * a * (15.0 + a2 * (-10.0 + a2 * 3.0)))
    outer = torch.where(alpha > 0, alpha * delta_up, alpha * delta_down)
    return torch.where(alpha.abs() <= 1.0, inner, outer)


def code4(alpha: Tensor, factor_up: Tensor, factor_down: Tensor) -> Tensor:
    r"""Multiplicative normalisation interpolation (pyhf ``code4``); returns the factor :math:`f(\alpha) > 0`.

    Outside ±1 it is exponential, :math:`f = \kappa_+^{\alpha}` or :math:`\kappa_-^{-\alpha}` (log-normal style,
    never negative); inside, a sixth-order polynomial in :math:`\alpha` matched to value, first and second
    derivative at ±1, with :math:`f(0) = 1`. ``factor_up``/``factor_down`` are :math:`\kappa_\pm`, e.g. 1.1 / 0.9
    for a ±10 % normalisation uncertainty.
    """
    factor_up = torch.as_tensor(factor_up, dtype=alpha.dtype, device=alpha.device)
    factor_down = torch.as_tensor(factor_down, dtype=alpha.dtype, device=alpha.device)
    # pyhf code4 (Alpha0 = 1): solve for the six polynomial coefficients from the exponential's value, slope and
    # curvature at +1 and -1.
    log_up, log_down = torch.log(factor_up), torch.log(factor_down)
    pow_up, pow_down = factor_up, factor_down
    b = torch.stack(
        [
            pow_up - 1.0,
            pow_down - 1.0,
            log_up * pow_up,
            -log_down * pow_down,
            log_up * log_up * pow_up,
            log_down * log_down * pow_down,
        ],
        dim=-1,
    )
    coefficients = b @ _code4_inverse(alpha.dtype, alpha.device).T  # [..., 6]
    safe = alpha.clamp(-1.0, 1.0)
    powers = torch.stack([safe ** (i + 1) for i in range(6)], dim=-1)
    inner = 1.0 + (powers * coefficients).sum(-1)
    outer = torch.where(alpha > 0, factor_up**alpha, factor_down ** (-alpha))
    return torch.where(alpha.abs() <= 1.0, inner, outer)


def code4p_slope(alpha: Tensor, nominal: Tensor, shift_up: Tensor, shift_down: Tensor) -> Tensor:
    """d(:func:`code4p`)/dα, analytically (used for the Jacobian of the expected counts without autograd)."""
    delta_up = shift_up - nominal
    delta_down = nominal - shift_down
    s = 0.5 * (delta_up + delta_down)
    a = 0.0625 * (delta_up - delta_down)
    a2 = alpha * alpha
    inner = s + a * alpha * (30.0 + a2 * (-40.0 + a2 * 18.0))
    outer = torch.where(alpha > 0, delta_up, delta_down)
    return torch.where(alpha.abs() <= 1.0, inner, outer)


def code4_slope(alpha: Tensor, factor_up: Tensor, factor_down: Tensor) -> Tensor:
    """d(:func:`code4`)/dα, analytically."""
    factor_up = torch.as_tensor(factor_up, dtype=alpha.dtype, device=alpha.device)
    factor_down = torch.as_tensor(factor_down, dtype=alpha.dtype, device=alpha.device)
    log_up, log_down = torch.log(factor_up), torch.log(factor_down)
    b = torch.stack(
        [
            factor_up - 1.0,
            factor_down - 1.0,
            log_up * factor_up,
            -log_down * factor_down,
            log_up * log_up * factor_up,
            log_down * log_down * factor_down,
        ],
        dim=-1,
    )
    coefficients = b @ _code4_inverse(alpha.dtype, alpha.device).T
    safe = alpha.clamp(-1.0, 1.0)
    powers = torch.stack([(i + 1) * safe**i for i in range(6)], dim=-1)
    inner = (powers * coefficients).sum(-1)
    outer = torch.where(alpha > 0, log_up * factor_up**alpha, -log_down * factor_down ** (-alpha))
    return torch.where(alpha.abs() <= 1.0, inner, outer)


def code1(alpha: Tensor, factor_up: Tensor, factor_down: Tensor) -> Tensor:
    r"""Multiplicative normalisation interpolation (pyhf ``code1``): :math:`f = \kappa_+^{\alpha}` for α ≥ 0 and
    :math:`\kappa_-^{-\alpha}` for α < 0 (a log-normal factor; kink in the slope at 0 when κ₊κ₋ ≠ 1)."""
    factor_up = torch.as_tensor(factor_up, dtype=alpha.dtype, device=alpha.device)
    factor_down = torch.as_tensor(factor_down, dtype=alpha.dtype, device=alpha.device)
    return torch.where(alpha >= 0, factor_up**alpha, factor_down ** (-alpha))


def code1_slope(alpha: Tensor, factor_up: Tensor, factor_down: Tensor) -> Tensor:
    """d(:func:`code1`)/dα; at α = 0 the right derivative log κ₊ (pyhf evaluates the α ≥ 0 branch there too)."""
    factor_up = torch.as_tensor(factor_up, dtype=alpha.dtype, device=alpha.device)
    factor_down = torch.as_tensor(factor_down, dtype=alpha.dtype, device=alpha.device)
    return torch.where(
        alpha >= 0, torch.log(factor_up) * factor_up**alpha, -torch.log(factor_down) * factor_down ** (-alpha)
    )


_CODE4_CACHE: dict = {}


def _code4_inverse(dtype: torch.dtype, device: torch.device) -> Tensor:
    """Inverse of the 6×6 system that fixes the code4 polynomial (value, slope, curvature at α = ±1)."""
    key = (dtype, device)
    if key not in _CODE4_CACHE:
        a = torch.tensor(
            [
                [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # f(+1) - 1
                [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0],  # f(-1) - 1
                [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # f'(+1)
                [1.0, -2.0, 3.0, -4.0, 5.0, -6.0],  # f'(-1)
                [0.0, 2.0, 6.0, 12.0, 20.0, 30.0],  # f''(+1)
                [0.0, 2.0, -6.0, 12.0, -20.0, 30.0],  # f''(-1)
            ],
            dtype=torch.float64,
        )
        _CODE4_CACHE[key] = torch.linalg.inv(a).to(dtype=dtype, device=device)
    return _CODE4_CACHE[key]
