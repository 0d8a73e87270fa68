"""Base class of spherical density profiles and the generic derived quantities.

A profile is an immutable :class:`equinox.Module` whose array parameters are fields.
A subclass must write :meth:`Profile.density`; the base class derives what the
subclass does not override:

* enclosed mass ``M(r) = 4 pi int_0^r s^2 rho(s) ds`` by a composite Gauss-Legendre
  quadrature in ``ln s`` (fixed nodes, so it stays differentiable in every parameter),
* the potential ``Phi(r) = -G [M(r) / r + 4 pi int_r^inf s rho(s) ds]`` (Binney &
  Tremaine 2008, eq. 2.28),
* the surface density ``Sigma(R) = 2 int_R^inf rho(r) r dr / sqrt(r^2 - R^2)`` (Abel
  projection), written with ``r = R cosh u`` so that the integrand is smooth.

The quadratures truncate at ``exp(+-30)`` times the radius and add the power-law tail
``f(x_0) / |k|`` where ``k`` is the local logarithmic slope of the integrand at the
truncation point (taken by forward-mode autodiff).  With 12 panels of 16 nodes the
relative error is below 1e-12 for profiles whose logarithmic slope varies on scales
of order unity in ``ln r`` (Zhao profiles with ``alpha <= 4``).
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy

from ..constants import G
from .._quadrature import integrate, panel_nodes

__all__ = [
    "Profile",
    "mass_from_density",
    "potential_from_density",
    "surface_density_from_density",
    "check_radius",
    "check_positive",
    "check_condition",
]

_SPAN = 30.0        # ln-range of the truncated integrals
_PANELS = 12
_ORDER = 16


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def check_radius(r, name="r"):
    """Return ``r`` as a float array; raise ``ValueError`` for non-finite or negative
    concrete radii (traced values pass unchecked)."""
    r = jnp.asarray(r, dtype=jnp.result_type(float))
    if _is_concrete(r):
        v = numpy.asarray(r)
        if not numpy.all(numpy.isfinite(v)):
            raise ValueError(f"{name} must be finite, got non-finite values")
        if numpy.any(v < 0):
            raise ValueError(f"{name} must be non-negative, got min {v.min()!r}")
    return r


def check_positive(owner, **params):
    """Raise ``ValueError`` when a concrete parameter is not finite and > 0."""
    for name, value in params.items():
        if _is_concrete(value):
            v = numpy.asarray(value)
            if not numpy.all(numpy.isfinite(v) & (v > 0)):
                raise ValueError(f"{owner}: {name} must be finite and > 0, got {v!r}")


def check_condition(owner, name, value, ok, what):
    """Raise ``ValueError`` unless the concrete ``value`` is finite and ``ok(value)`` holds."""
    if _is_concrete(value):
        v = numpy.asarray(value)
        if not numpy.all(numpy.isfinite(v) & ok(v)):
            raise ValueError(f"{owner}: {name} must be finite and {what}, got {v!r}")


def _power_tail(fun, s, sign):
    """Integral in ``ln s`` of a power-law continuation of ``fun`` beyond ``s``.

    ``sign = +1`` continues outward (needs ``fun`` falling), ``-1`` inward (needs it
    rising).  The local logarithmic slope is taken by forward-mode autodiff; a zero
    (underflowed) integrand gives a zero tail.
    """
    value, deriv = jax.jvp(fun, (s,), (jnp.ones_like(s),))
    pos = value > 0
    safe = jnp.where(pos, value, 1.0)
    k = -sign * s * deriv / safe                 # > 0 for a convergent tail
    return jnp.where(pos, value / jnp.maximum(k, 1e-3), 0.0)


def mass_from_density(density, r):
    """Enclosed mass ``4 pi int_0^r s^2 rho(s) ds`` by quadrature in ``ln s``.

    Parameters
    ----------
    density : callable
        Elementwise ``rho(s)`` in Msun / kpc^3.
    r : array_like
        Radii in kpc (any shape, > 0 for a non-zero result).

    Returns
    -------
    jax.Array
        ``M(<r)`` in Msun, same shape as ``r``.
    """
    r = jnp.asarray(r, dtype=jnp.result_type(float))
    r_pos = jnp.where(r > 0, r, 1.0)
    x, half = panel_nodes(-_SPAN, 0.0, _PANELS, _ORDER)
    s = r_pos[..., None, None] * jnp.exp(x)
    f = 4.0 * jnp.pi * s**3 * density(s)
    body = integrate(f, half)
    integrand0 = lambda t: 4.0 * jnp.pi * t**3 * density(t)
    tail = _power_tail(integrand0, r_pos * jnp.exp(-_SPAN), -1.0)
    return jnp.where(r > 0, body + tail, 0.0)


def _ln_quad(integrand, lo, hi):
    """``int integrand(s) dln s`` over ``ln s`` in [lo, hi] (composite Gauss-Legendre)."""
    x, half = panel_nodes(lo, hi, _PANELS, _ORDER)
    s = jnp.exp(x)
    return integrate(integrand(s), half)


def _outer_integral(density, r_pos, scale):
    """``4 pi int_r^inf s rho(s) ds`` (``r > 0``) in ``ln s``, split at ``max(r, scale)``.

    The piece ``[r, a]`` (``a = max(r, scale)``) is truncated below at ``a e^-30``, the
    piece ``[a, inf)`` above at ``a e^30`` plus a power-law tail.
    """
    integrand = lambda t: 4.0 * jnp.pi * t**2 * density(t)
    a = jnp.maximum(r_pos, scale)
    la = jnp.log(a)
    lr = jnp.maximum(jnp.log(r_pos), la - _SPAN)
    inner = _ln_quad(integrand, lr, la)
    outer = _ln_quad(integrand, la, la + _SPAN)
    tail = _power_tail(integrand, a * jnp.exp(_SPAN), 1.0)
    return inner + outer + tail


def potential_from_density(density, enclosed_mass, r, scale=1.0):
    """Gravitational potential ``-G [M(r)/r + 4 pi int_r^inf s rho ds]`` in (km/s)^2.

    Binney & Tremaine (2008) eq. 2.28.  ``scale`` (kpc) is a characteristic radius of
    the profile that places the quadrature; at ``r = 0`` the first term is zero.
    """
    r = jnp.asarray(r, dtype=jnp.result_type(float))
    scale = jnp.asarray(scale, dtype=r.dtype)
    r_pos = jnp.where(r > 0, r, scale * jnp.exp(-2.0 * _SPAN))
    inner = jnp.where(r > 0, enclosed_mass(r_pos) / r_pos, 0.0)
    return -G * (inner + _outer_integral(density, r_pos, scale))


def surface_density_from_density(density, R, scale=1.0):
    """Abel projection ``Sigma(R) = 2 R int_0^inf rho(R cosh u) cosh u du`` in Msun/kpc^2.

    The substitution ``r = R cosh u`` removes the inverse square-root singularity of
    ``2 int_R^inf rho r dr / sqrt(r^2 - R^2)`` (Binney & Tremaine 2008, eq. B.72).
    Radii below ``1e-10 * scale`` are raised to it (``Sigma(0)`` of a cored profile).
    """
    R = jnp.asarray(R, dtype=jnp.result_type(float))
    R_pos = jnp.maximum(R, 1e-10 * jnp.asarray(scale, dtype=R.dtype))
    u, half = panel_nodes(0.0, _SPAN, _PANELS, _ORDER)
    r = R_pos[..., None, None] * jnp.cosh(u)
    body = integrate(density(r) * r, half)
    tail = _power_tail(lambda t: density(t) * t, R_pos * jnp.cosh(_SPAN), 1.0)
    return 2.0 * (body + tail)


class Profile(eqx.Module):
    """Spherical density profile (abstract): write :meth:`density`, get the rest.

    Subclasses hold their parameters as array fields, override :meth:`density` and
    may override :meth:`enclosed_mass`, :meth:`potential`, :meth:`surface_density`
    with closed forms (set ``closed_mass = True`` when :meth:`enclosed_mass` is a
    cheap closed form) and :meth:`scale_radius` (a characteristic radius used to
    place integration ranges; default 1 kpc).

    Profiles add: ``stars + halo`` is a :class:`~dynamics.profiles.Composite` whose
    structure (the tuple of component types) is fixed, so new parameter values do
    not retrace jitted code.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from dynamics import Profile
    >>> class Isochrone(Profile):
    ...     rho_0: jnp.ndarray
    ...     b: jnp.ndarray
    ...     def density(self, r):
    ...         a = jnp.sqrt(self.b**2 + r**2)
    ...         return self.rho_0 * self.b**3 * (3 * (self.b + a) * a**2 - r**2 * (self.b + 3 * a)) \
    ...             / ((self.b + a)**3 * a**3) / 2
    >>> iso = Isochrone(jnp.asarray(1e8), jnp.asarray(1.0))
    >>> m = iso.enclosed_mass(2.0)          # by quadrature
    """

    closed_mass: ClassVar[bool] = False

    def density(self, r):
        """Density in Msun / kpc^3 at radius ``r`` (kpc)."""
        raise NotImplementedError(f"{type(self).__name__} must implement density(r)")

    def enclosed_mass(self, r):
        """Mass within radius ``r`` (kpc) in Msun (quadrature unless overridden)."""
        return mass_from_density(self.density, check_radius(r))

    def potential(self, r):
        """Gravitational potential at ``r`` (kpc) in (km/s)^2, zero at infinity."""
        return potential_from_density(
            self.density, self.enclosed_mass, check_radius(r), self.scale_radius()
        )

    def surface_density(self, R):
        """Projected (surface) density at projected radius ``R`` (kpc) in Msun / kpc^2."""
        return surface_density_from_density(
            self.density, check_radius(R, "R"), self.scale_radius()
        )

    def scale_radius(self):
        """A characteristic radius in kpc (places integration ranges)."""
        return jnp.asarray(1.0)

    def __add__(self, other):
        from .composite import Composite

        if not isinstance(other, Profile):
            return NotImplemented
        left = self.components if isinstance(self, Composite) else (self,)
        right = other.components if isinstance(other, Composite) else (other,)
        return Composite(tuple(left) + tuple(right))
