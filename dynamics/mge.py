"""Multi-Gaussian Expansions (MGE): projection, deprojection, potential, spherical fits.

An MGE (Emsellem, Monnet & Bacon 1994; Cappellari 2002) is a sum of Gaussians on the
sky, Gaussian ``k`` having peak surface density ``surf_k``, projected major-axis
dispersion ``sigma_k`` and observed axis ratio ``q_k``::

    Sigma(x', y') = sum_k surf_k exp(-(x'^2 + y'^2 / q_k^2) / (2 sigma_k^2)),

of total ``L_k = 2 pi surf_k sigma_k^2 q_k``.  Seen at inclination ``i`` (90 deg =
edge-on) each Gaussian deprojects to an oblate spheroidal Gaussian of intrinsic axis
ratio ``q_int^2 = (q_k^2 - cos^2 i) / sin^2 i`` (Cappellari 2002 eq. 7) and central
density ``nu0_k = surf_k q_k / (sqrt(2 pi) sigma_k q_int)`` (eq. 8)::

    nu(R, z) = sum_k nu0_k exp(-(R^2 + z^2 / q_int^2) / (2 sigma_k^2)).

Its potential is one integral over ``T`` in [0, 1] (Emsellem et al. 1994; Cappellari
2002 eq. 17)::

    Phi(R, z) = -sqrt(2/pi) G sum_k L_k / sigma_k int_0^1
                exp(-T^2 / (2 sigma_k^2) (R^2 + z^2 / (1 - e_k^2 T^2))) / sqrt(1 - e_k^2 T^2) dT,

``e_k^2 = 1 - q_int^2``.  We integrate it in ``v = T / sqrt(1 - e^2 T^2)`` (the
variable of :mod:`dynamics.jam_cyl`), which removes the near-singularity of very
flat Gaussians at ``T = 1``, on geometric panels that follow the scales of the
integrand (see :func:`dynamics.jam_cyl.v_nodes`).

An MGE whose Gaussians are all round (``q = 1``) is a spherical :class:`Profile`
(closed-form mass, potential and projection), so it works in ``sigma_los``,
``sigma_r``, ``j_factor``...  Units: ``surf`` in Lsun/kpc^2 (tracer) or Msun/kpc^2
(mass), ``sigma`` in kpc, inclination in degrees.
"""

import math

import jax
import jax.numpy as jnp
import numpy
from jax.scipy.special import erf

from .constants import DEG, G
from ._quadrature import gauss_legendre
from .profiles._fields import param
from .profiles.base import Profile, is_concrete, check_radius

__all__ = ["MGE", "fit_mge", "fit_mge_weights", "intrinsic_q", "ARCSEC_PC_PER_MPC"]

#: One arcsec at 1 Mpc in pc (pi / 0.648).
ARCSEC_PC_PER_MPC = numpy.pi / 0.648


def intrinsic_q(q_obs, inclination):
    """Intrinsic axis ratio of an oblate Gaussian of observed ``q_obs`` at ``inclination`` (deg).

    Cappellari (2002) eq. 7: ``q_int^2 = (q_obs^2 - cos^2 i) / sin^2 i``.  Not checked
    here (see :meth:`MGE.deproject`): values with ``q_obs^2 < cos^2 i`` give NaN.
    """
    inc = jnp.asarray(inclination) * DEG
    cos2 = jnp.cos(inc) ** 2
    return jnp.sqrt((q_obs**2 - cos2) / (1.0 - cos2))


def check_inclination(q, inclination):
    """Raise ValueError unless ``inclination`` (degrees) lies in (0, 90] and every Gaussian of
    observed axis ratio ``q`` can be deprojected there (q^2 > cos^2 i); no check under jit."""
    if not is_concrete(inclination):
        return
    inc = numpy.asarray(inclination, dtype=float)
    if not (numpy.all(numpy.isfinite(inc)) and inc.ndim == 0 and 0.0 < inc <= 90.0):
        raise ValueError(f"inclination must be a finite scalar in (0, 90] degrees, got {inc!r}")
    if is_concrete(q):
        qv = numpy.asarray(q)
        cos2 = numpy.cos(numpy.radians(inc)) ** 2
        bad = qv**2 <= cos2
        if numpy.any(bad):
            raise ValueError(
                f"inclination {float(inc)!r} deg cannot deproject Gaussians {numpy.flatnonzero(bad).tolist()} "
                f"(q_obs^2 must exceed cos^2 i = {float(cos2):.6g}; smallest q_obs = {float(qv.min()):.6g}, minimum "
                f"inclination {numpy.degrees(numpy.arccos(qv.min())):.6g} deg)")


class MGE(Profile):
    """Multi-Gaussian Expansion of a surface density (tracer or mass).

    Parameters
    ----------
    surf : array_like, shape (n,)
        Peak surface density of each Gaussian, Lsun/kpc^2 (tracer) or Msun/kpc^2 (mass), >= 0.
    sigma : array_like, shape (n,)
        Projected major-axis dispersion, kpc, > 0.
    q : array_like, shape (n,)
        Observed (projected) axis ratio in (0, 1].

    References
    ----------
    Emsellem, Monnet & Bacon (1994), A&A 285, 723; Cappellari (2002), MNRAS 333, 400.

    Examples
    --------
    >>> from dynamics import MGE
    >>> mge = MGE.from_observed([1e4, 2e3], [0.5, 3.0], [0.8, 0.7], distance_mpc=16.5)
    >>> stars = mge.scaled(3.2)                     # Msun / kpc^2
    >>> nu0, q_int = mge.deproject(60.0)           # Lsun / kpc^3, intrinsic axis ratios
    """

    surf: jax.Array = param()
    sigma: jax.Array = param()
    q: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_mge(self.surf, self.sigma, self.q, "MGE")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_observed(cls, surf_pc2, sigma_arcsec, q, distance_mpc):
        """MGE from observer units: Lsun/pc^2, arcsec, Mpc (jampy's interchange format).

        ``1 arcsec = distance_mpc * pi / 0.648 pc``; ``surf`` becomes Lsun/kpc^2 (x 1e6),
        ``sigma`` kpc.
        """
        if is_concrete(distance_mpc):
            d = numpy.asarray(distance_mpc, dtype=float)
            if not (numpy.all(numpy.isfinite(d)) and numpy.all(d > 0)):
                raise ValueError(f"MGE.from_observed: distance_mpc must be finite and > 0, got {d!r}")
        kpc_per_arcsec = jnp.asarray(distance_mpc) * ARCSEC_PC_PER_MPC * 1e-3
        return cls(jnp.asarray(surf_pc2, dtype=float) * 1e6,
                   jnp.asarray(sigma_arcsec, dtype=float) * kpc_per_arcsec,
                   jnp.asarray(q, dtype=float))

    def scaled(self, ml):
        """The MGE times a mass-to-light ratio ``ml`` (scalar or one per Gaussian)."""
        return MGE(self.surf * jnp.asarray(ml), self.sigma, self.q)

    # ------------------------------------------------------------------ basic quantities
    @property
    def n(self):
        return self.surf.shape[0]

    def total(self):
        """Total luminosity (or mass) of each Gaussian, ``L_k = 2 pi surf_k sigma_k^2 q_k``."""
        return 2.0 * jnp.pi * self.surf * self.sigma**2 * self.q

    def projected(self, x, y):
        """Surface density at sky position ``(x, y)`` (kpc; x along the projected major axis)."""
        x = jnp.asarray(x)[..., None]
        y = jnp.asarray(y)[..., None]
        return jnp.sum(self.surf * jnp.exp(-(x**2 + (y / self.q) ** 2) / (2.0 * self.sigma**2)), axis=-1)

    def deproject(self, inclination):
        """Central densities ``nu0`` (per kpc^3) and intrinsic axis ratios at ``inclination`` (deg).

        Cappellari (2002) eqs. 7-8.  Raises ``ValueError`` (concrete values) when some
        Gaussian cannot be deprojected (``q_obs^2 <= cos^2 i``, or ``q_obs = 1`` only at
        any inclination with ``q_int = 1``).
        """
        check_inclination(self.q, inclination)
        q_int = intrinsic_q(self.q, inclination)
        nu0 = self.surf * self.q / (jnp.sqrt(2.0 * jnp.pi) * self.sigma * q_int)
        return nu0, q_int

    def density_rz(self, R, z, inclination):
        """Intrinsic density at cylindrical ``(R, z)`` (kpc) after deprojection at ``inclination``."""
        nu0, q_int = self.deproject(inclination)
        R = jnp.asarray(R)[..., None]
        z = jnp.asarray(z)[..., None]
        return jnp.sum(nu0 * jnp.exp(-(R**2 + (z / q_int) ** 2) / (2.0 * self.sigma**2)), axis=-1)

    def potential_rz(self, R, z, inclination):
        """Potential (km/s)^2 at ``(R, z)`` of the deprojected MGE (Cappellari 2002 eq. 17)."""
        from .jam_cyl import potential_rz

        _, q_int = self.deproject(inclination)
        return potential_rz(R, z, self.total(), self.sigma, q_int)

    def circular_velocity(self, R, inclination):
        """Circular velocity (km/s) in the equatorial plane, ``v_c^2 = R dPhi/dR`` at z = 0."""
        from .jam_cyl import circular_velocity2

        _, q_int = self.deproject(inclination)
        return jnp.sqrt(circular_velocity2(R, self.total(), self.sigma, q_int))

    def mass_in_sphere(self, r, inclination):
        """Luminosity (or mass) within a sphere of radius ``r`` (kpc) of the deprojected MGE.

        For an oblate Gaussian of intrinsic axis ratio ``q``, the mean over a shell of radius
        ``s`` is ``nu0 exp(-s^2 / 2 sigma^2) sqrt(pi) erf(a) / (2 a)``, ``a = s sqrt(1/q^2 - 1)
        / (sqrt(2) sigma)`` (the integral over ``mu = cos(theta)`` of
        ``exp(-s^2 mu^2 (1/q^2 - 1) / 2 sigma^2)``); the radial integral ``4 pi int s^2 ... ds``
        runs on 64 Gauss-Legendre nodes over ``[0, min(r, 9 sigma)]`` per Gaussian.  Scalar ``r``.
        """
        nu0, q_int = self.deproject(inclination)
        t, w = gauss_legendre(64)
        top = jnp.minimum(jnp.asarray(r, dtype=float), 9.0 * self.sigma)            # (K,)
        s = 0.5 * top[:, None] * (jnp.asarray(t)[None, :] + 1.0)                      # (K, 64)
        eps = jnp.maximum(1.0 / q_int**2 - 1.0, 0.0)[:, None]
        a = s * jnp.sqrt(eps / 2.0) / self.sigma[:, None]
        small = a < 1e-4
        a_safe = jnp.where(small, 1.0, a)
        shell = jnp.where(small, 1.0 - a**2 / 3.0, 0.5 * jnp.sqrt(jnp.pi) * erf(a_safe) / a_safe)
        f = 4.0 * jnp.pi * s**2 * jnp.exp(-0.5 * (s / self.sigma[:, None]) ** 2) * shell
        return jnp.sum(nu0 * 0.5 * top * (f @ jnp.asarray(w)))

    # ------------------------------------------------------------------ spherical Profile API
    def _require_round(self):
        if is_concrete(self.q) and not numpy.all(numpy.asarray(self.q) == 1.0):
            raise ValueError("MGE: the spherical Profile methods need round Gaussians (all q = 1); "
                             "use deproject / density_rz / potential_rz for a flattened MGE")

    def density(self, r):
        self._require_round()
        r = check_radius(r)[..., None]
        nu0 = self.surf / (jnp.sqrt(2.0 * jnp.pi) * self.sigma)
        return jnp.sum(nu0 * jnp.exp(-0.5 * (r / self.sigma) ** 2), axis=-1)

    def enclosed_mass(self, r):
        self._require_round()
        r = check_radius(r)[..., None]
        return jnp.sum(self.total() * unit_gauss_mass(r / self.sigma), axis=-1)

    def potential(self, r):
        self._require_round()
        r = check_radius(r)[..., None]
        x = r / (jnp.sqrt(2.0) * self.sigma)
        # erf(x)/r -> sqrt(2/pi)/sigma at r = 0 (series below x = 1e-4)
        small = x < 1e-4
        xs = jnp.where(small, 1.0, x)
        f = jnp.where(small, (2.0 / jnp.sqrt(jnp.pi)) * (1.0 - x**2 / 3.0), erf(xs) / xs)
        return -G * jnp.sum(self.total() * f / (jnp.sqrt(2.0) * self.sigma), axis=-1)

    def surface_density(self, R):
        self._require_round()
        R = check_radius(R, "R")[..., None]
        return jnp.sum(self.surf * jnp.exp(-0.5 * (R / self.sigma) ** 2), axis=-1)

    def scale_radius(self):
        w = self.total()
        return jnp.exp(jnp.sum(w * jnp.log(self.sigma)) / jnp.sum(w))


def check_mge(surf, sigma, q, owner="MGE"):
    """Raise ``ValueError`` for concrete bad MGE arrays (shapes, signs, axis ratios)."""
    shapes = {name: numpy.shape(v) for name, v in (("surf", surf), ("sigma", sigma), ("q", q))}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"{owner}: surf, sigma and q must be 1-D arrays of one length, got shapes {shapes}")
    if shapes["surf"][0] == 0:
        raise ValueError(f"{owner}: surf, sigma and q must hold at least one Gaussian")
    if is_concrete(surf):
        v = numpy.asarray(surf)
        if not numpy.all(numpy.isfinite(v) & (v >= 0)):
            raise ValueError(f"{owner}: surf must be finite and >= 0, got {v!r}")
    if is_concrete(sigma):
        v = numpy.asarray(sigma)
        if not numpy.all(numpy.isfinite(v) & (v > 0)):
            raise ValueError(f"{owner}: sigma must be finite and > 0, got {v!r}")
    if is_concrete(q):
        v = numpy.asarray(q)
        if not numpy.all(numpy.isfinite(v) & (v > 0) & (v <= 1)):
            raise ValueError(f"{owner}: q must be in (0, 1], got {v!r}")


# ---------------------------------------------------------------------- spherical fits
def _fit_design(r_min, r_max, n, oversample=6, pad_in=10.0, pad_out=3.0):
    """Fit radii (``oversample n`` log-spaced on ``[r_min, r_max]``) and widths (``n``
    log-spaced on ``[r_min / pad_in, r_max pad_out]``)."""
    sig = numpy.geomspace(r_min / pad_in, r_max * pad_out, n)
    r = numpy.geomspace(r_min, r_max, oversample * n)
    return r, sig


def unit_gauss_mass(x):
    """Mass within ``x`` widths of a round Gaussian of unit mass.

    ``erf(x / sqrt 2) - sqrt(2/pi) x exp(-x^2/2) = sqrt(2/pi) int_0^x t^2 exp(-t^2/2) dt``;
    below ``x = 0.1`` the series ``sqrt(2/pi) sum_n (-1/2)^n x^(2n+3) / (n! (2n+3))``
    avoids the cancellation.
    """
    small = x < 0.1
    xs = jnp.where(small, 0.1, x)
    direct = erf(xs / jnp.sqrt(2.0)) - jnp.sqrt(2.0 / jnp.pi) * xs * jnp.exp(-0.5 * xs**2)
    xt = jnp.where(small, x, 0.0)
    series = sum((-0.5) ** n / float(math.factorial(n)) * xt ** (2 * n + 3) / (2 * n + 3) for n in range(7))
    return jnp.where(small, jnp.sqrt(2.0 / jnp.pi) * series, direct)


def _gauss_mass(r, sig):
    """Mass within ``r`` of round Gaussians of unit mass (rows: radii, columns: widths)."""
    return unit_gauss_mass(r[:, None] / sig)


def _check_range(r_min, r_max, n, owner):
    r_min, r_max = float(r_min), float(r_max)
    if not (0 < r_min < r_max and numpy.isfinite(r_max)):
        raise ValueError(f"{owner}: need 0 < r_min < r_max, got r_min={r_min!r}, r_max={r_max!r}")
    if int(n) < 2:
        raise ValueError(f"{owner}: n must be >= 2, got {n!r}")
    return r_min, r_max, int(n)


def fit_mge(profile, r_min, r_max, n=32):
    """Round MGE (``q = 1``) of a spherical profile by non-negative least squares.

    The Gaussians have ``n`` log-spaced widths on ``[r_min / 10, 3 r_max]``; their masses
    (``>= 0``, ``scipy.optimize.nnls``) minimise ``sum_i (M_MGE(r_i) / M(r_i) - 1)^2``
    over ``6 n`` log-spaced radii in ``[r_min, r_max]``: the enclosed mass, hence the
    force ``G M(r) / r^2`` that the Jeans equations use, is what is fitted.  Concrete
    parameters only (not differentiable); :func:`fit_mge_weights` is the jit/grad-able
    variant.

    Accuracy of the enclosed mass on ``[r_min, r_max]`` (max relative error, NFW,
    Hernquist, Plummer and a ``gamma = 1.5`` Zhao profile; asserted in
    ``tests/dynamics/test_mge.py``): ``n = 32``: < 2e-5 over three decades, < 5e-7 over
    two; ``n = 48``: < 1e-6 over four decades.  Roughly ``n >= 10`` Gaussians per decade
    are needed.  Outside the range the MGE is only an extrapolation (cored below
    ``r_min / 10``).

    Parameters
    ----------
    profile : Profile
        Spherical profile with concrete parameters.
    r_min, r_max : float
        Radial range (kpc) where the fit holds.
    n : int
        Number of Gaussians.

    Returns
    -------
    MGE
        Round MGE (``surf`` in the profile's mass units per kpc^2).
    """
    from scipy.optimize import nnls

    r_min, r_max, n = _check_range(r_min, r_max, n, "fit_mge")
    r, sig = _fit_design(r_min, r_max, n)
    target = numpy.asarray(profile.enclosed_mass(jnp.asarray(r)))
    a = numpy.asarray(_gauss_mass(jnp.asarray(r), jnp.asarray(sig))) / target[:, None]
    scale = numpy.linalg.norm(a, axis=0)
    m, _ = nnls(a / scale, numpy.ones_like(r), maxiter=50 * n)
    m = m / scale
    return MGE(m / (2.0 * numpy.pi * sig**2), sig, numpy.ones_like(sig))


def fit_mge_weights(profile, r_min, r_max, n=32, ridge=1e-12):
    """Jit/grad-able round-Gaussian expansion of ``profile``: ``(masses, sigmas)``.

    Same widths and fit radii as :func:`fit_mge` (``r_min``, ``r_max``, ``n`` static
    Python numbers), but the masses come from a (ridge-regularised) linear least-squares
    solve, so they are differentiable in the profile's parameters; some may be slightly
    negative (fine for the potential and the Jeans integrals, which are linear in them).
    Used by JAM for spherical mass components.  Accuracy as :func:`fit_mge` down to a
    floor of ~1e-8 relative (the ridge).
    """
    r_min, r_max, n = _check_range(r_min, r_max, n, "fit_mge_weights")
    r, sig = _fit_design(r_min, r_max, n)
    r = jnp.asarray(r)
    sig = jnp.asarray(sig)
    target = profile.enclosed_mass(r)
    a = _gauss_mass(r, sig) / target[:, None]
    scale = jnp.sqrt(jnp.sum(a**2, axis=0))
    a = a / scale
    # ridge least squares by QR of [A; sqrt(ridge) I] (no squared condition number)
    aug = jnp.concatenate([a, jnp.sqrt(ridge) * jnp.eye(n)], axis=0)
    rhs = jnp.concatenate([jnp.ones_like(r), jnp.zeros(n)])
    qm, rm = jnp.linalg.qr(aug)
    m = jax.scipy.linalg.solve_triangular(rm, qm.T @ rhs, lower=False) / scale
    return m, sig
