"""Projected fourth moments and the virial shape parameters.

For a spherical system with constant anisotropy (distribution function
``f(E, L) = L^(-2 beta) f_0(E)``) the fourth-order Jeans equation closes and gives
(Lokas 2002, eq. 12; Lokas, Mamon & Prada 2005, eqs. 4-6)::

    nu <v_r^4> (r) = 3 r^(-2 beta) int_r^inf s^(2 beta) nu sigma_r^2 G M / s^2 ds,
    Sigma <v_los^4> (R) = 2 int_R^inf nu <v_r^4> g(beta, R/r) r dr / sqrt(r^2 - R^2),
    g = 1 - 2 beta R^2/r^2 + beta (1 + beta) / 2 R^4/r^4.

The virial shape parameters are the first two radial moments of the projected fourth
moment, which the virial theorem turns into single integrals over the model
(Merrifield & Kent 1990; Richardson & Fairbairn 2014, eqs. 8-9; Read & Steger 2017,
eqs. 8-9)::

    v_s1 = int_0^inf Sigma <v_los^4> R dR   = 2/5  int_0^inf G M nu (5 - 2 beta) sigma_r^2 r dr,
    v_s2 = int_0^inf Sigma <v_los^4> R^3 dR = 4/35 int_0^inf G M nu (7 - 6 beta) sigma_r^2 r^3 dr.

Both scale linearly with the tracer normalisation (divide by, e.g., the projected
``int Sigma R dR`` of the tracer to compare with data).  The radial integrals run on a
composite Legendre grid in ``ln r`` (96 panels x 12 nodes over ``e^-20 .. e^25``
tracer scale radii) with ``nu sigma_r^2`` from a spectral running integral on the same
grid, so one call costs a few hundred density evaluations.
"""

import jax.numpy as jnp

from .anisotropy import ConstantBeta, Isotropic
from .constants import G
from .jeans import check_models, mass_function
from .profiles.base import check_radius
from ._quadrature import cumulative, integrate, interpolate, panel_nodes

__all__ = ["virial_shape_parameters", "sigma_los4", "kurtosis_los"]

_LO, _HI = -20.0, 25.0
_PANELS, _ORDER = 96, 12
_PROJ_PANELS, _PROJ_ORDER = 12, 16


def _grid(tracer, mass, anisotropy):
    """ln-r grid, radii, panel half-width, nu, M, beta and nu sigma_r^2 on it."""
    ls = jnp.log(tracer.scale_radius())
    lo, hi = ls + _LO, ls + _HI
    x, half = panel_nodes(lo, hi, _PANELS, _ORDER)
    r = jnp.exp(x)
    m = mass_function(mass, jnp.exp(lo) * (1 - 1e-12), jnp.exp(hi) * (1 + 1e-12))(r)
    nu = tracer.density(r)
    lnf = anisotropy.log_integrating_factor(r)
    lnf = lnf - jnp.max(lnf)
    # nu sigma_r^2 = f^-1 int_r^inf f nu G M / s d ln s  (Mamon & Lokas 2005, eq. A3)
    p = cumulative(jnp.exp(lnf) * nu * G * m / r, half, reverse=True) * jnp.exp(-lnf)
    return (lo, hi), r, half, nu, m, anisotropy.beta(r), p, lnf


def virial_shape_parameters(tracer, mass, anisotropy=None):
    """Virial shape parameters ``(v_s1, v_s2)`` of a spherical Jeans model.

    Parameters
    ----------
    tracer : Profile
        Tracer density (the result is linear in its normalisation).
    mass : Profile
        Total mass profile.
    anisotropy : Anisotropy, optional
        Default isotropic.  The identities with the projected fourth moment hold for
        constant ``beta`` (Richardson & Fairbairn 2014); for ``beta(r)`` the
        expressions with the local ``beta(r)`` are returned (as in Read & Steger 2017).

    Returns
    -------
    v_s1, v_s2 : jax.Array
        In (tracer units) kpc^2 (km/s)^4 and (tracer units) kpc^4 (km/s)^4; tracer units
        are those of ``tracer.density`` times kpc^3.

    References
    ----------
    Merrifield & Kent (1990), AJ 99, 1548; Richardson & Fairbairn (2014), MNRAS 441,
    1584, eqs. 8-9; Read & Steger (2017), MNRAS 471, 4541, eqs. 8-9.

    Examples
    --------
    >>> from dynamics import Plummer, virial_shape_parameters
    >>> p = Plummer(1e6, 0.3)
    >>> vs1, vs2 = virial_shape_parameters(p, p)
    """
    anisotropy = Isotropic() if anisotropy is None else anisotropy
    check_models(tracer, mass, anisotropy)
    _, r, half, nu, m, beta, p, _ = _grid(tracer, mass, anisotropy)
    vs1 = 0.4 * integrate(G * m * p * (5.0 - 2.0 * beta) * r**2, half)
    vs2 = 4.0 / 35.0 * integrate(G * m * p * (7.0 - 6.0 * beta) * r**4, half)
    return vs1, vs2


def _constant_beta(anisotropy):
    if isinstance(anisotropy, Isotropic):
        return jnp.asarray(0.0)
    if isinstance(anisotropy, ConstantBeta):
        return anisotropy.beta_0
    raise ValueError("anisotropy must be Isotropic or ConstantBeta for fourth moments, got "
                     f"{type(anisotropy).__name__}")


def sigma_los4(R, tracer, mass, anisotropy=None):
    """Projected fourth velocity moment ``<v_los^4>(R)`` in (km/s)^4 (constant beta).

    Lokas (2002) eq. 12 for ``nu <v_r^4>`` and Lokas, Mamon & Prada (2005) eq. 6 for the
    projection, evaluated with ``r = R cosh t`` (12 panels x 16 nodes) and
    ``nu <v_r^4>`` interpolated from the ``ln r`` grid.

    Parameters
    ----------
    R : array_like
        Projected radii in kpc (between ``e^-20`` and ``e^18`` tracer scale radii).
    tracer, mass : Profile
    anisotropy : Isotropic or ConstantBeta, optional

    Returns
    -------
    jax.Array
        ``<v_los^4>`` in (km/s)^4, shape of ``R``.
    """
    anisotropy = Isotropic() if anisotropy is None else anisotropy
    check_models(tracer, mass, anisotropy)
    b = _constant_beta(anisotropy)
    R = check_radius(R, "R")
    (lo, hi), r, half, nu, m, _, p, lnf = _grid(tracer, mass, anisotropy)
    q = 3.0 * cumulative(jnp.exp(lnf) * p * G * m / r, half, reverse=True) * jnp.exp(-lnf)
    Rb = R[..., None, None]
    # stay 5 e-folds inside the grid, where the truncated running integrals are exact
    t, h = panel_nodes(0.0, jnp.arccosh(jnp.exp(hi - 5.0) / R), _PROJ_PANELS, _PROJ_ORDER)
    s = Rb * jnp.cosh(t)
    q_s = jnp.exp(interpolate(jnp.log(s), lo, hi, jnp.log(q)))
    w = 1.0 / jnp.cosh(t) ** 2
    g = 1.0 - 2.0 * b * w + 0.5 * b * (1.0 + b) * w**2
    num = integrate(q_s * g * jnp.cosh(t), h)
    den = integrate(tracer.density(s) * jnp.cosh(t), h)
    return num / den


def kurtosis_los(R, tracer, mass, anisotropy=None):
    """Line-of-sight kurtosis ``<v_los^4> / <v_los^2>^2`` (3 for a Gaussian); constant beta."""
    from .jeans import sigma_los2_profile

    return sigma_los4(R, tracer, mass, anisotropy) / sigma_los2_profile(
        R, tracer, mass, anisotropy, grid=False) ** 2
