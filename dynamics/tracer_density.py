"""Density of a discrete tracer from its positions: a projected Plummer law, as a round MGE.

The projected Plummer surface density ``Sigma(R) ~ a^2 / (R^2 + a^2)^2`` (Plummer 1911) gives
the radii of ``n`` tracers observed within ``R_max`` the likelihood
``prod_i 2 R_i a^2 / (R_i^2 + a^2)^2 / f(R_max)``, ``f = R_max^2 / (R_max^2 + a^2)`` (the
fraction of the projected mass inside ``R_max``); its maximum in ``a`` is found in
``ln a`` by a bounded scalar search.  The fitted law is expanded in round Gaussians
(:func:`dynamics.fit_mge`) for JAM.  Units: kpc.
"""

import numpy
import scipy.optimize

from .mge import fit_mge
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


def plummer_mge(a, n=16):
    """Round MGE of a unit-mass Plummer sphere of scale ``a`` (kpc), good from a/30 to 10 a."""
    return fit_mge(Plummer(1.0, a), a / 30.0, 10.0 * a, n)
