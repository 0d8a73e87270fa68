"""Density of a discrete tracer from its positions: a projected Plummer law, as a round MGE.

The projected Plummer surface density ``Sigma(R) ~ a^2 / (R^2 + a^2)^2`` (Plummer 1911) gives
the radii of ``n`` tracers observed within ``R_max`` the likelihood
``prod_i 2 R_i a^2 / (R_i^2 + a^2)^2 / f(R_max)``, ``f = R_max^2 / (R_max^2 + a^2)`` (the
fraction of the projected mass inside ``R_max``); its maximum in ``a`` is found in
``ln a`` by a bounded scalar search.  The fitted law is expanded in round Gaussians
(fitted to the surface density, as photometry is) for JAM.  Units: kpc.
"""

import numpy
import scipy.optimize

from .mge import MGE
from .profiles import Plummer

__all__ = ["fit_plummer_scale", "plummer_mge"]


def fit_plummer_scale(R, r_max=None):
    """Maximum-likelihood Plummer scale (kpc) of projected radii ``R`` (kpc) seen within ``r_max``.

    ``r_max`` defaults to the largest radius.  Raises ValueError for fewer than 3 radii or
    radii that are not finite and positive.
    """
    R = numpy.asarray(R, dtype=float).reshape(-1)
    if R.size < 3 or not numpy.all(numpy.isfinite(R)) or numpy.any(R <= 0):
        raise ValueError("fit_plummer_scale: need >= 3 finite, positive radii")
    r_max = float(R.max()) if r_max is None else float(r_max)

    def nll(log_a):
        a2 = numpy.exp(2.0 * log_a)
        return -numpy.sum(numpy.log(2.0 * R * a2 / (R**2 + a2) ** 2)) + R.size * numpy.log(r_max**2 / (r_max**2 + a2))

    lo, hi = numpy.log(R.min() / 100.0), numpy.log(100.0 * r_max)
    res = scipy.optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-8})
    return float(numpy.exp(res.x))


def plummer_mge(a, n=24):
    """Round MGE of a unit-mass Plummer sphere of scale ``a`` (kpc), fitted to its surface density.

    As for photometry (Cappellari 2002): ``n`` Gaussians of log-spaced widths on
    ``[a / 30, 30 a]`` whose non-negative totals (``scipy.optimize.nnls``) minimise the
    relative error of ``Sigma(R) = a^2 / (pi (R^2 + a^2)^2)`` on ``8 n`` log-spaced radii
    in ``[a / 20, 20 a]``: ~1e-5 there (``tests/dynamics/test_tracer_density.py``).
    """
    sigma = a * numpy.geomspace(1.0 / 30.0, 30.0, n)
    R = a * numpy.geomspace(1.0 / 20.0, 20.0, 8 * n)
    exact = numpy.asarray(Plummer(1.0, a).surface_density(R))
    design = numpy.exp(-0.5 * (R[:, None] / sigma) ** 2) / (2.0 * numpy.pi * sigma**2) / exact[:, None]
    total, _ = scipy.optimize.nnls(design, numpy.ones_like(R))
    keep = total > 0
    return MGE(total[keep] / (2.0 * numpy.pi * sigma[keep] ** 2), sigma[keep], numpy.ones(int(keep.sum())))
