"""J-factors (annihilation) and D-factors (decay) of spherical halos.

``J(theta) = int_cone dOmega int dl rho^2`` and ``D(theta) = int_cone dOmega int dl rho``
over a cone of half-angle ``theta`` around the direction of the halo centre at
distance ``D``.  For a spherical density the solid-angle and line-of-sight integrals
collapse onto one integral over shells of radius ``r`` (the "shell kernel"): with
``sin psi dpsi = r dr / (l D)`` (from ``r^2 = l^2 + D^2 - 2 l D cos psi``)::

    J = (2 pi / D) int_0^inf r rho(r)^2 L(r) dr,    D-factor likewise with rho,
    L(r) = int dl / l  over the part of the shell inside the cone
         = ln((D + r)/(D - r))             r < r_t = D sin(theta)  (whole shell inside)
         = 2 ln((D + r)/l_+)               r_t < r < D
         = ln((D + r)/l_+)                 r > D  (observer inside the shell)
    l_+ = D cos(theta) + sqrt(r^2 - r_t^2).

This is exact (no small-angle or distant-observer approximation); in the distant
limit it reduces to the cylinder integrals of Evans, Sanders & Geringer-Sameth (2016,
eqs. 4-5).  The three ranges are integrated separately (in ``ln r`` below ``r_t`` and
above ``D``, in ``w = arccosh(r / r_t)`` between them, which removes the square root
at ``r_t``), each on 12 panels of 16 Gauss-Legendre nodes.

Units: ``distance`` in kpc, ``theta`` in degrees; J in GeV^2 cm^-5, D in GeV cm^-2.
"""

import jax.numpy as jnp
import numpy

from .constants import D_UNIT, DEG, J_UNIT
from .profiles.base import Profile, check_positive, is_concrete
from ._quadrature import integrate, panel_nodes

__all__ = ["j_factor", "d_factor", "shell_kernel"]

_SPAN = 30.0
_PANELS, _ORDER = 12, 16


def shell_kernel(r, distance, theta):
    """``L(r) = int dl / l`` over the part of the shell of radius ``r`` inside the cone.

    Parameters
    ----------
    r : array_like
        Shell radii in kpc.
    distance : array_like
        Distance to the halo centre in kpc.
    theta : array_like
        Cone half-angle in radians (``0 < theta <= pi/2``).
    """
    r_t = distance * jnp.sin(theta)
    inside = r < r_t
    outside = r > distance
    q = jnp.where(inside, 0.0, jnp.sqrt(jnp.where(inside, 1.0, r**2 - r_t**2)))   # gradient-safe
    l_plus = distance * jnp.cos(theta) + q
    r_in = jnp.where(inside, r, 0.0)
    whole = 2.0 * jnp.arctanh(r_in / distance)               # ln((D + r)/(D - r))
    partial = jnp.log((distance + r) / l_plus)
    return jnp.where(inside, whole, jnp.where(outside, 1.0, 2.0) * partial)


def _los_integral(fun, distance, theta):
    """(2 pi / D) int_0^inf r fun(r) L(r) dr for an elementwise ``fun`` (the density power)."""
    distance, theta = jnp.broadcast_arrays(distance, theta)
    r_t = distance * jnp.sin(theta)
    kernel = lambda r: shell_kernel(r, distance[..., None, None], theta[..., None, None])
    lt, ld = jnp.log(r_t), jnp.log(distance)
    # inner: ln r in [ln r_t - 30, ln r_t]
    x1, h1 = panel_nodes(lt - _SPAN, lt, _PANELS, _ORDER)
    r1 = jnp.exp(x1)
    part1 = integrate(r1**2 * fun(r1) * kernel(r1), h1)
    # middle: r = r_t cosh w, w in [0, arccosh(D / r_t)]
    x2, h2 = panel_nodes(0.0, jnp.arccosh(distance / r_t), _PANELS, _ORDER)
    r2 = r_t[..., None, None] * jnp.cosh(x2)
    part2 = integrate(r2 * fun(r2) * kernel(r2) * r_t[..., None, None] * jnp.sinh(x2), h2)
    # outer: ln r in [ln D, ln D + 30]
    x3, h3 = panel_nodes(ld, ld + _SPAN, _PANELS, _ORDER)
    r3 = jnp.exp(x3)
    part3 = integrate(r3**2 * fun(r3) * kernel(r3), h3)
    return 2.0 * jnp.pi / distance * (part1 + part2 + part3)


def _check(profile, distance, theta):
    if not isinstance(profile, Profile):
        raise ValueError(f"profile must be a dynamics Profile, got {type(profile).__name__}")
    check_positive("j_factor/d_factor", distance=distance, theta=theta)
    if is_concrete(theta) and numpy.any(numpy.asarray(theta) > 90.0):
        raise ValueError(f"theta must be <= 90 degrees, got {numpy.asarray(theta)!r}")
    return jnp.asarray(distance, dtype=float), jnp.asarray(theta, dtype=float) * DEG


def j_factor(profile, distance, theta):
    """Annihilation J-factor within a cone of half-angle ``theta``, in GeV^2 cm^-5.

    Parameters
    ----------
    profile : Profile
        Dark-matter density profile (Msun/kpc^3).
    distance : array_like
        Distance to the halo centre in kpc.
    theta : array_like
        Cone half-angle in degrees (``0 < theta <= 90``); broadcasts with ``distance``.

    Returns
    -------
    jax.Array
        ``J`` in GeV^2 cm^-5.

    References
    ----------
    Evans, Sanders & Geringer-Sameth (2016), PRD 93, 103512.

    Examples
    --------
    >>> from dynamics import NFW, j_factor
    >>> j = j_factor(NFW(rho_s=1e8, r_s=0.5), distance=76.0, theta=0.5)
    """
    distance, theta = _check(profile, distance, theta)
    return J_UNIT * _los_integral(lambda r: profile.density(r) ** 2, distance, theta)


def d_factor(profile, distance, theta):
    """Decay D-factor within a cone of half-angle ``theta``, in GeV cm^-2.

    Parameters as :func:`j_factor`.

    Examples
    --------
    >>> from dynamics import NFW, d_factor
    >>> d = d_factor(NFW(rho_s=1e8, r_s=0.5), distance=76.0, theta=0.5)
    """
    distance, theta = _check(profile, distance, theta)
    return D_UNIT * _los_integral(profile.density, distance, theta)
