"""Smaller template bases: a subset chosen on a stacked spectrum, or a truncated SVD.

A cube's spectra share one stellar population to first order, so fitting the summed
spectrum once with the whole library and keeping the templates with the largest
non-negative weights shrinks every per-spaxel fit (``--n-basis``; this drops templates).

:func:`svd_basis` keeps every template but represents the library by a few orthogonal
spectra: ``templates ~ mix @ basis`` from a truncated singular value decomposition
(Eckart & Young 1936: the best rank-r approximation in the least-squares sense).  The
LOSVD convolution is linear, so a fit convolves the ``r`` basis spectra instead of the
``n_tpl`` templates and keeps non-negative weights on the templates themselves
(:mod:`cube3d.spectral_model`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_stack", "select_basis", "svd_basis"]

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


def svd_basis(templates: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Truncated SVD of a template library at a stated accuracy.

    Every template is scaled to unit root-mean-square, the scaled library is decomposed
    (``U S V^T``, Eckart & Young 1936) and truncated at the smallest rank ``r`` for which
    every template's residual, rms over its pixels, is at most ``rtol`` times its own rms.
    The scales are put back into ``mix``, so that ``mix @ basis`` approximates the
    templates themselves.

    Parameters
    ----------
    templates : ndarray, shape (n_tpl, n_tpl_pix)
    rtol : float
        Largest relative rms residual of any template.

    Returns
    -------
    mix : ndarray, shape (n_tpl, r)
    basis : ndarray, shape (r, n_tpl_pix)
        Orthonormal rows (right singular vectors).
    error : float
        The largest relative rms residual at rank ``r`` (<= ``rtol``; 0 at full rank).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lib = rng.random((3, 50)) @ rng.random((50, 200))  # rank 3
    >>> mix, basis, err = svd_basis(np.vstack([lib, lib[:1] + lib[1:2]]), 1e-8)
    >>> mix.shape, basis.shape, err < 1e-8
    ((4, 3), (3, 200), True)
    """
    templates = np.asarray(templates, dtype=np.float64)
    scale = np.sqrt(np.mean(templates**2, axis=1))
    scale = np.where(scale > 0, scale, 1.0)
    scaled = templates / scale[:, None]
    # SVD from the eigen-decomposition of the small n_tpl x n_tpl Gram matrix (scaled =
    # U S V^T, scaled scaled^T = U S^2 U^T): far cheaper than an SVD of the long rows, and
    # accurate for the singular values that matter here (s / s_max >> sqrt(eps)).
    evals, u = np.linalg.eigh(scaled @ scaled.T)
    evals, u = np.clip(evals[::-1], 0.0, None), u[:, ::-1]
    s = np.sqrt(evals)
    # residual of template k at rank r: sum over the dropped singular triplets (orthogonal)
    n_pix = templates.shape[1]
    tail = np.cumsum(((u * s[None, :]) ** 2)[:, ::-1], axis=1)[:, ::-1]  # tail[k, r] = sum_{j >= r}
    rms = np.sqrt(np.concatenate([tail, np.zeros((len(s), 1))], axis=1) / n_pix)  # (n_tpl, n_sv + 1)
    worst = rms.max(axis=0)  # worst[r]: largest residual keeping r singular vectors
    rank = int(np.argmax(worst <= rtol)) if np.any(worst <= rtol) else len(s)
    rank = max(rank, 1)
    vt = (u[:, :rank] / s[None, :rank]).T @ scaled  # right singular vectors of the kept rank
    mix = scale[:, None] * u[:, :rank] * s[None, :rank]
    return mix, vt, float(worst[rank])
