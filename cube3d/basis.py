"""Choosing a small template basis from a stacked spectrum.

A cube's spectra share one stellar population to first order, so fitting the summed
spectrum once with the whole library and keeping the templates with the largest
non-negative weights shrinks every per-spaxel fit (``--n-basis``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_stack", "select_basis"]

_DEFAULT_BASIS_SIGMA = 200.0  # km/s, guessed LOSVD width for the basis selection
_BASIS_POLY_DEGREE = 8



def _legendre_design(n_pix: int, degree: int) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n_pix)
    return np.polynomial.legendre.legvander(x, degree)  # (n_pix, degree + 1)


def fit_stack(
    stack: np.ndarray, good: np.ndarray, design: np.ndarray, poly_degree: int = _BASIS_POLY_DEGREE, n_iter: int = 10
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit ``stack ~ P(x) * (design @ w)`` with ``w >= 0`` and a Legendre polynomial ``P``.

    Alternates the two linear problems: the polynomial by least squares given the
    model (starting from the mean template), the weights by non-negative least
    squares (``scipy.optimize.nnls``; Lawson & Hanson 1974) given the polynomial.

    Parameters
    ----------
    stack : ndarray, shape (n_pix,)
    good : ndarray of bool, shape (n_pix,)
        Pixels used.
    design : ndarray, shape (n_pix, n_tpl)
        Templates (already broadened and cut to the galaxy range) as columns.
    poly_degree : int
        Degree of the multiplicative Legendre polynomial (0: a constant scale).

    Returns
    -------
    weights : ndarray, shape (n_tpl,)
    poly : ndarray, shape (n_pix,)
    rms : float
        Root-mean-square residual over the good pixels.
    """
    from scipy.optimize import nnls

    n_pix = stack.size
    a = design[good]
    y = stack[good]
    legendre = _legendre_design(n_pix, poly_degree)
    model = a.mean(1)
    for _ in range(n_iter):
        coef, *_ = np.linalg.lstsq(legendre[good] * model[:, None], y, rcond=None)
        poly = legendre[good] @ coef
        weights, _ = nnls(a * poly[:, None], y)
        model = a @ weights
    rms = float(np.sqrt(np.mean((y - poly * model) ** 2)))
    return weights, legendre @ coef, rms


def select_basis(
    stack: np.ndarray,
    good: np.ndarray,
    templates: np.ndarray,
    n_basis: int,
    *,
    template_offset: int,
    velscale: float,
    sigma_kms: float = _DEFAULT_BASIS_SIGMA,
    poly_degree: int = _BASIS_POLY_DEGREE,
) -> np.ndarray:
    """Indices of the ``n_basis`` templates that best fit a stacked spectrum.

    The templates are broadened by a Gaussian of ``sigma_kms`` (a guess of the
    galaxy's dispersion, 200 km/s by default), cut to the galaxy range, and the
    stack is fitted with :func:`fit_stack`: non-negative weights times a
    multiplicative Legendre polynomial of ``poly_degree`` (absorbing flux
    calibration and extinction, so that templates are chosen for their lines, not
    their continuum slope).  The ``n_basis`` templates with the largest weights are
    kept (ties among zero weights in library order).

    Returns
    -------
    ndarray of int, shape (n_basis,)
        Sorted template indices.
    """
    from scipy.ndimage import gaussian_filter1d

    n_pix = stack.size
    broad = gaussian_filter1d(templates, sigma_kms / velscale, axis=1, mode="nearest")
    design = broad[:, template_offset : template_offset + n_pix].T  # (n_pix, n_tpl)
    weights, _, _ = fit_stack(stack, good, design, poly_degree)
    order = np.argsort(-weights, kind="stable")
    return np.sort(order[:n_basis])
