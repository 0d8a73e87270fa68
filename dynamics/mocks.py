"""Mock data sets of discrete stars with known truth.

* :func:`sample_plummer`: the exact self-consistent isotropic Plummer sampler
  (Aarseth, Henon & Wielen 1974), positions and velocities in 3-D.
* :func:`mock_stars`: projected radii and line-of-sight velocities of a tracer in any
  mass profile, with per-star errors and an optional foreground, sampled

  - exactly from the Eddington / Osipkov-Merritt distribution function
    (:mod:`dynamics.df`) when the anisotropy is isotropic or Osipkov-Merritt
    (``method="df"``), or
  - approximately, with Gaussian velocities whose radial and tangential dispersions
    solve the Jeans equation (``method="jeans"``), for any anisotropy. Real velocity
    distributions are not Gaussian, so only the second moments of these mocks are right.

Every random function takes an explicit ``jax.random`` key. Units kpc, km/s, Msun.

References
----------
Aarseth S. J., Henon M. & Wielen R. 1974, A&A 37, 183 (AHW74).
Binney J. & Tremaine S. 2008, Galactic Dynamics, 2nd ed. (BT08).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.anisotropy import Isotropic, OsipkovMerritt
from dynamics.constants import G
from dynamics.df import eddington_df, osipkov_merritt_df
from dynamics.jeans import sigma_r as jeans_sigma_r

__all__ = [
    "PhaseSpace",
    "MockStars",
    "sample_plummer",
    "sample_radii",
    "sample_speeds_df",
    "sample_velocities_df",
    "sample_velocities_jeans",
    "project",
    "mock_stars",
]


class PhaseSpace(NamedTuple):
    """3-D positions (kpc) and velocities (km/s), each of shape (n, 3)."""

    x: jax.Array
    v: jax.Array


class MockStars(NamedTuple):
    """A mock catalogue of discrete stars (members and foreground shuffled together).

    Attributes
    ----------
    R : Array, (n,)
        Projected radius in kpc.
    v : Array, (n,)
        Observed line-of-sight velocity in km/s (systemic velocity and errors included).
    v_err : Array, (n,)
        Per-star velocity uncertainty in km/s (1 sigma).
    member : Array of bool, (n,)
        True for tracer members, False for foreground contaminants.
    r : Array, (n,)
        True 3-D radius in kpc (NaN for foreground stars).
    v_los : Array, (n,)
        True line-of-sight velocity relative to the systemic velocity, error-free
        (for foreground stars: their true velocity minus ``v_sys``).
    """

    R: jax.Array
    v: jax.Array
    v_err: jax.Array
    member: jax.Array
    r: jax.Array
    v_los: jax.Array


def _check_positive(name, value):
    val = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(val)) or np.any(val <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def _check_n(n):
    if int(n) != n or int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n}")


def _isotropic_directions(key, n):
    """Unit vectors uniform on the sphere, shape (n, 3)."""
    k1, k2 = jax.random.split(key)
    mu = jax.random.uniform(k1, (n,), minval=-1.0, maxval=1.0)
    phi = jax.random.uniform(k2, (n,), minval=0.0, maxval=2.0 * jnp.pi)
    s = jnp.sqrt(1.0 - mu * mu)
    return jnp.stack([s * jnp.cos(phi), s * jnp.sin(phi), mu], axis=-1)


def sample_plummer(key, n, m_tot, r_s):
    """Exact sample of the isotropic self-consistent Plummer sphere (AHW74).

    Radii by inverting the mass profile, ``r = a (X^{-2/3} - 1)^{-1/2}`` (AHW74 eq. A2);
    speeds ``v = q v_esc(r)``, ``v_esc^2 = 2 G M / sqrt(r^2 + a^2)``, with ``q``
    distributed as ``g(q) ~ q^2 (1 - q^2)^{7/2}`` (AHW74 eq. A4). AHW74 draw ``q`` by
    rejection; here ``q^2 ~ Beta(3/2, 9/2)``, the same law drawn directly. Directions
    are isotropic.

    Parameters
    ----------
    key : jax.random key
    n : int
        Number of particles.
    m_tot : float
        Total mass in Msun.
    r_s : float
        Plummer scale radius ``a`` in kpc.

    Returns
    -------
    PhaseSpace
        Positions (kpc) and velocities (km/s), each (n, 3), centred on the origin in
        expectation (not recentred).
    """
    _check_n(n)
    _check_positive("m_tot", m_tot)
    _check_positive("r_s", r_s)
    k_r, k_q, k_dx, k_dv = jax.random.split(key, 4)
    x1 = jax.random.uniform(k_r, (n,), minval=jnp.finfo(float).tiny, maxval=1.0)
    r = r_s / jnp.sqrt(x1 ** (-2.0 / 3.0) - 1.0)
    q = jnp.sqrt(jax.random.beta(k_q, 1.5, 4.5, (n,)))
    v_esc = jnp.sqrt(2.0 * G * m_tot / jnp.sqrt(r * r + r_s * r_s))
    pos = r[:, None] * _isotropic_directions(k_dx, n)
    vel = (q * v_esc)[:, None] * _isotropic_directions(k_dv, n)
    return PhaseSpace(pos, vel)


def sample_radii(key, n, tracer, *, r_min=1e-6, r_max=1e3, n_grid=2048):
    """3-D radii distributed as the tracer's mass, by inverse transform on a table.

    ``P(<r) = M(<r) / M(<r_max)`` (the tracer truncated at ``r_max``), tabulated at
    log-spaced radii and inverted by linear interpolation of ``ln r`` against
    ``logit P`` (exact for power laws at both ends).

    Parameters
    ----------
    key : jax.random key
    n : int
    tracer : profile
        With ``.enclosed_mass(r)`` (any normalisation).
    r_min, r_max : float
        Table range in kpc.
    n_grid : int
        Table size.

    Returns
    -------
    Array, (n,)
        Radii in kpc.
    """
    _check_n(n)
    if not (0.0 < r_min < r_max and np.isfinite(r_max)):
        raise ValueError(f"need 0 < r_min < r_max < inf, got r_min={r_min}, r_max={r_max}")
    lr = jnp.linspace(math.log(r_min), math.log(r_max), int(n_grid))
    m = tracer.enclosed_mass(jnp.exp(lr))
    p = m / m[-1]
    # logit P = ln M - ln(M_tot - M); the last node maps to +inf, drop it
    logit = jnp.log(p[:-1]) - jnp.log1p(-p[:-1])
    u = jax.random.uniform(key, (n,), minval=p[0], maxval=p[-2])
    return jnp.exp(jnp.interp(jnp.log(u) - jnp.log1p(-u), logit, lr[:-1]))


@partial(jax.jit, static_argnames="n_grid")
def sample_speeds_df(key, psi, df, *, n_grid=256):
    """Draw ``w`` from ``p(w) ~ w^2 f(Psi - w^2/2)`` on ``[0, sqrt(2 Psi)]``, one per ``psi``.

    Inverse transform on a per-star grid in ``x = w / sqrt(2 Psi)`` (trapezoidal
    cumulative, linear inversion).

    Parameters
    ----------
    key : jax.random key
    psi : Array, (n,)
        Relative potential at each star, (km/s)^2.
    df : SphericalDF
    n_grid : int

    Returns
    -------
    Array, (n,)
        ``w`` in km/s.
    """
    x = jnp.linspace(0.0, 1.0, int(n_grid))
    u = jax.random.uniform(key, psi.shape)

    def one(psi1, u1):
        pdf = x * x * df.of_q(psi1 * (1.0 - x * x))
        cdf = jnp.concatenate([jnp.zeros(1), jnp.cumsum(0.5 * (pdf[1:] + pdf[:-1]))])
        return jnp.sqrt(2.0 * psi1) * jnp.interp(u1 * cdf[-1], cdf, x)

    return jax.vmap(one)(psi, u)


def sample_velocities_df(key, r, df, mass, *, n_grid=256):
    """Radial and tangential velocities of stars at radii ``r`` drawn from an OM/isotropic DF.

    For ``f(Q)``, ``Q = Psi - (v_r^2 + k^2 v_t^2)/2`` with ``k^2 = 1 + r^2/r_a^2``
    (BT08 eq. 4.67), the velocity distribution is isotropic in ``(v_r, k v_t)``: draw
    ``w`` from ``w^2 f(Psi - w^2/2)``, an isotropic direction, and divide the tangential
    part by ``k``.

    Returns
    -------
    v_r : Array, (n,)
        Radial velocity in km/s.
    v_t : Array, (n, 2)
        The two tangential components (along ``e_theta``, ``e_phi``) in km/s.
    """
    k_w, k_dir = jax.random.split(key)
    psi = -mass.potential(r)
    w = sample_speeds_df(k_w, psi, df, n_grid=n_grid)
    d = _isotropic_directions(k_dir, r.shape[0])
    k = jnp.sqrt(1.0 + (r / df.r_a) ** 2)
    v_r = w * d[:, 2]
    v_t = (w / k)[:, None] * d[:, :2]
    return v_r, v_t


def sample_velocities_jeans(key, r, sigma_r, beta):
    """Gaussian velocities with Jeans dispersions (an approximation; see module notes).

    Parameters
    ----------
    key : jax.random key
    r : Array, (n,)
        Radii in kpc (only the shape is used).
    sigma_r : Array, (n,)
        Radial dispersion in km/s at each star (e.g. from ``dynamics.jeans.sigma_r``).
    beta : Array, (n,)
        Anisotropy ``1 - sigma_t^2 / sigma_r^2`` at each star.

    Returns
    -------
    v_r : Array, (n,)
    v_t : Array, (n, 2)
    """
    z = jax.random.normal(key, (r.shape[0], 3))
    sigma_t = sigma_r * jnp.sqrt(1.0 - beta)
    return sigma_r * z[:, 0], sigma_t[:, None] * z[:, 1:]


def project(key, r, v_r, v_t):
    """Project stars at random orientations onto the sky; the line of sight is ``z``.

    With ``cos(theta)`` uniform, ``R = r sin(theta)`` and
    ``v_los = v_r cos(theta) - v_theta sin(theta)``; ``v_phi`` does not project.

    Returns
    -------
    R : Array, (n,)
        Projected radius in kpc.
    v_los : Array, (n,)
        Line-of-sight velocity in km/s.
    """
    mu = jax.random.uniform(key, r.shape, minval=-1.0, maxval=1.0)
    sin_t = jnp.sqrt(1.0 - mu * mu)
    return r * sin_t, v_r * mu - v_t[:, 0] * sin_t


def _anisotropy_kind(anisotropy):
    """('iso', inf) / ('om', r_a) / ('other', None) for an anisotropy object."""
    if anisotropy is None or isinstance(anisotropy, Isotropic):
        return "iso", math.inf
    if isinstance(anisotropy, OsipkovMerritt):
        return "om", anisotropy.r_a
    return "other", None


def _per_star_errors(key, n, v_err):
    if isinstance(v_err, tuple):
        if len(v_err) != 2 or not (0 < v_err[0] <= v_err[1]):
            raise ValueError(f"v_err as a tuple must be (lo, hi) with 0 < lo <= hi, got {v_err}")
        return jax.random.uniform(key, (n,), minval=v_err[0], maxval=v_err[1])
    err = jnp.asarray(v_err, dtype=float)
    if not np.all(np.isfinite(np.asarray(err))) or np.any(np.asarray(err) < 0):
        raise ValueError("v_err must be finite and >= 0")
    if err.ndim == 0:
        return jnp.full((n,), err)
    if err.shape != (n,):
        raise ValueError(f"v_err must be a scalar, a (lo, hi) tuple or shape ({n},), got {err.shape}")
    return err


def mock_stars(key, n, tracer, mass, anisotropy=None, *, v_sys=0.0, v_err=2.0,
               foreground_fraction=0.0, foreground_mean=0.0, foreground_sigma=50.0,
               foreground_r_max=None, method="auto", df=None, r_max=1e3):
    """Mock catalogue of stars: projected radii and line-of-sight velocities with errors.

    Members: 3-D radii from the tracer's mass profile (:func:`sample_radii`), velocities
    from the distribution function (``method="df"``, exact, isotropic or
    Osipkov-Merritt only) or Gaussian with Jeans dispersions (``method="jeans"``, an
    approximation, any anisotropy; :func:`dynamics.jeans.sigma_r`),
    random orientation (:func:`project`). Foreground: ``round(foreground_fraction * n)``
    stars uniform on the disc ``R < foreground_r_max`` with velocities
    ``N(foreground_mean, foreground_sigma^2)``. All stars get Gaussian errors ``v_err``.

    Parameters
    ----------
    key : jax.random key
    n : int
        Total number of stars (members plus foreground).
    tracer : profile
        Tracer density profile (``.density``, ``.enclosed_mass``).
    mass : profile
        Total mass profile (``.potential`` vanishing at infinity).
    anisotropy : anisotropy object or None
        ``None``/``Isotropic()``/``OsipkovMerritt(r_a)`` work with ``method="df"``.
    v_sys : float
        Systemic velocity in km/s.
    v_err : float, (lo, hi) tuple or Array (n,)
        Per-star 1-sigma errors in km/s; a tuple draws them uniformly in ``[lo, hi]``.
    foreground_fraction : float
        Fraction of contaminants in ``[0, 1)``.
    foreground_mean, foreground_sigma : float
        Foreground velocity distribution in km/s (mean in the heliocentric frame).
    foreground_r_max : float or None
        Radius (kpc) of the disc the foreground fills; default: largest member ``R``.
    method : {"auto", "df", "jeans"}
        ``"auto"`` is ``"df"`` when possible, else ``"jeans"``.
    df : SphericalDF or None
        A prebuilt DF for ``method="df"`` (else built here; it must match the models).
    r_max : float
        Tracer truncation radius (kpc) for the radius sampler.

    Returns
    -------
    MockStars
    """
    _check_n(n)
    if not (0.0 <= foreground_fraction < 1.0):
        raise ValueError(f"foreground_fraction must be in [0, 1), got {foreground_fraction}")
    _check_positive("foreground_sigma", foreground_sigma)
    if method not in ("auto", "df", "jeans"):
        raise ValueError(f"method must be 'auto', 'df' or 'jeans', got {method!r}")
    kind, r_a = _anisotropy_kind(anisotropy)
    if method == "auto":
        method = "df" if kind in ("iso", "om") else "jeans"
    if method == "df" and kind == "other":
        raise ValueError(
            f"method='df' needs an isotropic or Osipkov-Merritt anisotropy, got {type(anisotropy).__name__}"
        )
    n_fg = int(round(foreground_fraction * n))
    n_mem = n - n_fg
    if n_mem < 1:
        raise ValueError("no member stars left: lower foreground_fraction")
    k_r, k_v, k_p, k_e, k_n, k_fr, k_fv, k_perm = jax.random.split(key, 8)

    r = sample_radii(k_r, n_mem, tracer, r_max=r_max)
    if method == "df":
        if df is None:
            df = eddington_df(tracer, mass) if kind == "iso" else osipkov_merritt_df(tracer, mass, r_a)
        v_r, v_t = sample_velocities_df(k_v, r, df, mass)
    else:
        # sigma_r on a log grid spanning the sample, interpolated in (ln r, ln sigma_r)
        lr = jnp.log(r)
        lr_grid = jnp.linspace(jnp.min(lr), jnp.max(lr), 256)
        s_grid = jeans_sigma_r(jnp.exp(lr_grid), tracer, mass, anisotropy)
        s_r = jnp.exp(jnp.interp(lr, lr_grid, jnp.log(s_grid)))
        v_r, v_t = sample_velocities_jeans(k_v, r, s_r, anisotropy.beta(r))
    R, v_los = project(k_p, r, v_r, v_t)

    if n_fg > 0:
        r_fg_max = float(jnp.max(R)) if foreground_r_max is None else foreground_r_max
        _check_positive("foreground_r_max", r_fg_max)
        R_fg = r_fg_max * jnp.sqrt(jax.random.uniform(k_fr, (n_fg,)))
        v_fg = foreground_mean - v_sys + foreground_sigma * jax.random.normal(k_fv, (n_fg,))
        R = jnp.concatenate([R, R_fg])
        v_los = jnp.concatenate([v_los, v_fg])
        r = jnp.concatenate([r, jnp.full((n_fg,), jnp.nan)])
    member = jnp.arange(n) < n_mem

    err = _per_star_errors(k_e, n, v_err)
    v_obs = v_sys + v_los + err * jax.random.normal(k_n, (n,))
    perm = jax.random.permutation(k_perm, n)
    return MockStars(R=R[perm], v=v_obs[perm], v_err=err[perm], member=member[perm],
                     r=r[perm], v_los=v_los[perm])
