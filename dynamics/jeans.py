"""Spherical Jeans models: radial and line-of-sight velocity dispersions.

Radial dispersion by the integrating factor (Binney & Mamon 1982; Mamon & Lokas 2005,
eq. A3)::

    nu sigma_r^2 (r) = f(r)^-1 int_r^inf f(s) nu(s) G M(s) / s^2 ds,   d ln f / d ln r = 2 beta

Line-of-sight dispersion by the single-integral kernel form (Mamon & Lokas 2005,
eqs. A11-A16)::

    Sigma(R) sigma_los^2 (R) = 2 G int_R^inf K(r, R) nu(r) M(r) dr / r,
    K(r, R) = f(r)/r int_R^r (1 - beta(s) R^2/s^2) s / (f(s) sqrt(s^2 - R^2)) ds,

which follows from swapping the order of the projection and the Jeans integral.  Both
the outer and the inner integral are written in ``t = arccosh(r/R)``, which removes
the inverse square root at ``r = R`` and makes every integrand smooth.  Isotropic and
Osipkov-Merritt models use closed-form kernels; any other anisotropy gets ``K`` from
a spectral running integral (:func:`dynamics._quadrature.cumulative`) on the same
nodes as the outer quadrature, so it is still one pass over fixed nodes.
``Sigma(R)`` is computed on the same nodes (the tracer normalisation cancels).

Numerics (all fixed-order, so jit/vmap/grad work in every parameter):

* outer integrals run from ``R`` to ``r_far = max(R_max, r_tracer) e^20`` on 12 panels
  of 16 Gauss-Legendre nodes (32 panels of 12 for quadrature kernels);
* a mass profile without a closed-form mass (``closed_mass = False``, e.g.
  :class:`~dynamics.Zhao`) is tabulated once per call on 64 x 12 nodes in ``ln r``
  by a spectral running integral of ``4 pi r^3 rho`` and interpolated panel-wise;
* many radii (``grid=True``, or ``grid=None`` with more than 96 radii): ``sigma_los``
  is computed on 8 panels x 12 Legendre nodes in ``ln R`` spanning the data and
  interpolated (``ln sigma_los^2`` vs ``ln R``, per panel polynomial).  Measured
  against closed forms and scipy brute force (``tests/benchmarks/bench_jeans.py``,
  ``tests/dynamics/test_jeans.py``) the relative error is ~1e-12 for radii spanning two
  decades and ~1e-9 for 4.5 decades; it grows with the dynamic range
  ``ln(R_max / R_min)`` (panels are ``ln(R_max/R_min) / 8`` wide).

Absolute accuracy of the direct path is ~1e-10 relative for Zhao halos with
``alpha <= 4`` and anisotropy transitions with ``eta <= 4``.
"""

import jax.numpy as jnp

from .anisotropy import Anisotropy, Isotropic
from .constants import G
from .profiles.base import Profile, check_radius
from ._quadrature import cumulative, integrate, interpolate, panel_nodes

__all__ = ["sigma_r", "sigma_los", "sigma_r2_profile", "sigma_los2_profile"]

_FAR = 20.0                       # ln(r_far / max(R_max, tracer scale))
_PANELS, _ORDER = 12, 16          # outer quadrature, closed-form kernels and sigma_r
_GEN_PANELS, _GEN_ORDER = 32, 12  # outer quadrature with a numerical kernel
_FAST_PANELS, _FAST_ORDER = 12, 16  # outer quadrature on the ln R grid (closed-form kernels)
_MASS_PANELS, _MASS_ORDER = 64, 12
_GRID_PANELS, _GRID_ORDER = 8, 12
_AUTO_GRID = _GRID_PANELS * _GRID_ORDER


def check_models(tracer, mass, anisotropy):
    """Raise ValueError unless ``tracer`` and ``mass`` are Profiles and ``anisotropy`` an Anisotropy."""
    if not isinstance(tracer, Profile):
        raise ValueError(f"tracer must be a dynamics Profile, got {type(tracer).__name__}")
    if not isinstance(mass, Profile):
        raise ValueError(f"mass must be a dynamics Profile, got {type(mass).__name__}")
    if not isinstance(anisotropy, Anisotropy):
        raise ValueError(f"anisotropy must be a dynamics Anisotropy, got {type(anisotropy).__name__}")


def mass_function(mass, r_lo, r_hi):
    """Return a callable ``M(r)`` accurate on ``[r_lo, r_hi]`` (kpc).

    Closed-form masses are returned as they are; otherwise the mass is tabulated on
    a composite Legendre grid in ``ln r`` as ``M(r_lo) + int 4 pi s^3 rho(s) d ln s``
    (spectral running integral) and interpolated panel-wise (relative error ~1e-12).
    """
    if mass.closed_mass:
        return mass.enclosed_mass
    lo = jnp.log(r_lo)
    hi = jnp.log(r_hi)
    x, half = panel_nodes(lo, hi, _MASS_PANELS, _MASS_ORDER)
    s = jnp.exp(x)
    table = mass.enclosed_mass(r_lo) + cumulative(4.0 * jnp.pi * s**3 * mass.density(s), half)
    return lambda r: interpolate(jnp.log(r), lo, hi, table)


def _far_radius(r_max, tracer):
    return jnp.maximum(r_max, tracer.scale_radius()) * jnp.exp(_FAR)


def _numeric_kernel(t, half, R, anisotropy):
    """Mamon & Lokas kernel by a running integral on the outer nodes ``t`` (shape N, P, K)."""
    Rb = R[:, None, None]
    r = Rb * jnp.cosh(t)
    lnf_R = anisotropy.log_integrating_factor(R)[:, None, None]
    dlnf = anisotropy.log_integrating_factor(r) - lnf_R
    g = (1.0 - anisotropy.beta(r) / jnp.cosh(t) ** 2) * jnp.cosh(t) * jnp.exp(-dlnf)
    inner = cumulative(g, half)
    return jnp.exp(dlnf) * inner / jnp.cosh(t)


def _sigma_los2_direct(R, tracer, mass_fn, anisotropy, r_far, rule=(_PANELS, _ORDER)):
    """sigma_los^2 at a flat array of radii ``R`` (N,), every radius integrated."""
    T = jnp.arccosh(r_far / R)
    if anisotropy.has_kernel:
        t, half = panel_nodes(0.0, T, *rule)
        kern = anisotropy.kernel(t, R[:, None, None])
    else:
        t, half = panel_nodes(0.0, T, _GEN_PANELS, _GEN_ORDER)
        kern = _numeric_kernel(t, half, R, anisotropy)
    s = R[:, None, None] * jnp.cosh(t)
    nu = tracer.density(s)
    pressure = 2.0 * G * integrate(kern * nu * mass_fn(s) * jnp.tanh(t), half)   # ML05 eq. A16
    sigma = 2.0 * R * integrate(nu * jnp.cosh(t), half)                          # Abel, r = R cosh t
    return pressure / sigma


def sigma_los2_profile(R, tracer, mass, anisotropy=None, *, grid=None):
    """Line-of-sight velocity dispersion squared, (km/s)^2; see :func:`sigma_los`."""
    anisotropy = Isotropic() if anisotropy is None else anisotropy
    check_models(tracer, mass, anisotropy)
    R = check_radius(R, "R")
    shape = R.shape
    floor = 1e-8 * tracer.scale_radius()
    Rf = jnp.maximum(R.reshape(-1), floor)
    use_grid = Rf.size > _AUTO_GRID if grid is None else bool(grid)
    r_lo = jnp.min(Rf)
    r_hi = jnp.max(Rf)
    r_far = _far_radius(r_hi, tracer)
    mass_fn = mass_function(mass, r_lo * (1.0 - 1e-12), r_far * (1.0 + 1e-12))
    if not use_grid:
        return _sigma_los2_direct(Rf, tracer, mass_fn, anisotropy, r_far).reshape(shape)
    lo = jnp.log(r_lo)
    hi = jnp.maximum(jnp.log(r_hi), lo + 1e-6)
    x, _ = panel_nodes(lo, hi, _GRID_PANELS, _GRID_ORDER)
    s2 = _sigma_los2_direct(jnp.exp(x).reshape(-1), tracer, mass_fn, anisotropy, r_far,
                            (_FAST_PANELS, _FAST_ORDER))
    table = jnp.log(s2).reshape(_GRID_PANELS, _GRID_ORDER)
    return jnp.exp(interpolate(jnp.log(Rf), lo, hi, table)).reshape(shape)


def sigma_los(R, tracer, mass, anisotropy=None, *, grid=None):
    """Line-of-sight velocity dispersion of a spherical Jeans model, in km/s.

    Parameters
    ----------
    R : array_like
        Projected radii in kpc (any shape; values below ``1e-8`` tracer scale radii are
        raised to it).
    tracer : Profile
        Tracer density profile (any normalisation).
    mass : Profile
        Total mass profile (e.g. ``stars + halo``).
    anisotropy : Anisotropy, optional
        Velocity anisotropy model (default :class:`~dynamics.Isotropic`).
    grid : bool or None, optional
        ``True``: evaluate on an 8 x 12 Legendre grid in ``ln R`` spanning the radii and
        interpolate (relative error <~1e-9 up to 4.5 decades of radii); ``False``:
        integrate at every radius (~1e-12); ``None`` (default): the grid when there are
        more than 96 radii.  Static (Python) argument.

    Returns
    -------
    jax.Array
        ``sigma_los(R)`` in km/s, shape of ``R``.

    References
    ----------
    Mamon & Lokas (2005), MNRAS 363, 705, eqs. A11-A16.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from dynamics import Plummer, Zhao, OsipkovMerritt, sigma_los
    >>> stars = Plummer(1e6, 0.25)
    >>> halo = Zhao(rho_s=5e7, r_s=1.0, alpha=1.0, beta=3.0, gamma=1.0)
    >>> s = sigma_los(jnp.geomspace(0.01, 1.0, 1000), stars, stars + halo, OsipkovMerritt(0.5))
    """
    return jnp.sqrt(sigma_los2_profile(R, tracer, mass, anisotropy, grid=grid))


def sigma_r2_profile(r, tracer, mass, anisotropy=None):
    """Radial velocity dispersion squared, (km/s)^2; see :func:`sigma_r`."""
    anisotropy = Isotropic() if anisotropy is None else anisotropy
    check_models(tracer, mass, anisotropy)
    r = check_radius(r)
    shape = r.shape
    rf = jnp.maximum(r.reshape(-1), 1e-8 * tracer.scale_radius())
    r_far = _far_radius(jnp.max(rf), tracer)
    mass_fn = mass_function(mass, jnp.min(rf) * (1.0 - 1e-12), r_far * (1.0 + 1e-12))
    x, half = panel_nodes(0.0, jnp.log(r_far / rf), _PANELS, _ORDER)
    rb = rf[:, None, None]
    s = rb * jnp.exp(x)
    dlnf = anisotropy.log_integrating_factor(s) - anisotropy.log_integrating_factor(rf)[:, None, None]
    integrand = jnp.exp(dlnf) * tracer.density(s) * G * mass_fn(s) / s      # d ln s; ML05 eq. A3
    return (integrate(integrand, half) / tracer.density(rf)).reshape(shape)


def sigma_r(r, tracer, mass, anisotropy=None):
    """Radial velocity dispersion of a spherical Jeans model, in km/s.

    Parameters
    ----------
    r : array_like
        Radii in kpc (any shape, > 0; values below ``1e-8`` tracer scale radii are raised to it).
    tracer : Profile
        Tracer density profile (any normalisation).
    mass : Profile
        Total mass profile.
    anisotropy : Anisotropy, optional
        Default :class:`~dynamics.Isotropic`.

    Returns
    -------
    jax.Array
        ``sigma_r(r)`` in km/s.

    References
    ----------
    Mamon & Lokas (2005), MNRAS 363, 705, eq. A3; Binney & Tremaine (2008), eq. 4.216.

    Examples
    --------
    >>> from dynamics import Plummer, sigma_r
    >>> p = Plummer(1e6, 0.25)
    >>> s = sigma_r(0.25, p, p)
    """
    return jnp.sqrt(sigma_r2_profile(r, tracer, mass, anisotropy))
