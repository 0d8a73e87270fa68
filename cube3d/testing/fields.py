"""Kinematic maps with known structure: Gaussian-process draws and a rotating disk.

Maps are ``(ny, nx)`` float64 arrays on the spaxel grid (axis 0 the sky y, axis 1 the
sky x; see :mod:`cube3d.testing` for the mock's sky orientation).  Positions and length
scales are in spaxels; velocities in km/s.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._checks import as_map, positive, shape2, standard_normal

__all__ = ["gp_field", "rotating_disk_field"]

_MAX_GP_POINTS = 12000  # dense Cholesky: 12000^2 float64 is 1.2 GB


# ----------------------------------------------------------------------------- GP draw


def gp_field(shape, scale, amp, kind="matern52", key=0, mean=0.0):
    """A smooth random map: one draw of an isotropic Gaussian process on the spaxel grid.

    The covariance between spaxels ``p`` and ``q`` (integer positions, in spaxels) is
    ``cube3d.spatial.kernels.covariance(KernelSpec(terms, False), amp, scale, p, q)``,
    i.e. ``sum_t amp_t**2 rho_t(|p - q| / scale_t)`` with ``rho`` a Matern-3/2,
    Matern-5/2 or squared-exponential correlation (Rasmussen & Williams 2006, eqs. 4.14,
    4.17, 4.9).  The draw is ``mean + L z`` with ``L`` the Cholesky factor of the dense
    covariance plus a jitter of ``sqrt(eps) * sum(amp**2)`` on the diagonal, and ``z``
    standard normal (Rasmussen & Williams 2006, Appendix A.2).

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` spaxels.
    scale : float or sequence of float
        Length scale of each kernel term, spaxels (> 0).
    amp : float or sequence of float
        Amplitude (standard deviation) of each term, in the units of the field (e.g.
        km/s; >= 0); the field's marginal variance is ``sum(amp**2)``.
    kind : str
        Kernel: ``"matern52"`` (default), ``"matern32"``, ``"expsquared"``, or a sum
        such as ``"matern32+expsquared"`` (then ``scale`` and ``amp`` have one entry
        per term).
    key : int, numpy.random.Generator or JAX PRNG key
        Source of randomness: a non-negative integer seed, a Generator (advanced by
        ``ny * nx`` normal draws) or a JAX key.  The same integer seed (or key) gives
        the same field.
    mean : float or ndarray, shape (ny, nx)
        Added to the zero-mean draw, in the units of the field.

    Returns
    -------
    ndarray, shape (ny, nx), float64

    Raises
    ------
    InputError
        Bad ``shape``, ``scale``, ``amp``, ``kind``, ``mean`` or ``key``; more than
        12000 spaxels (the dense covariance would not fit comfortably in memory).

    Notes
    -----
    The cost is that of a dense Cholesky factorisation, O((ny nx)^3): about 0.3 s for
    60 x 60 spaxels on two cores.  The covariance is built from a table over the
    ``(2 ny - 1) x (2 nx - 1)`` spaxel lags, evaluated by
    :func:`cube3d.spatial.kernels.covariance` in float64.

    Examples
    --------
    >>> v = gp_field((30, 30), scale=6.0, amp=50.0, key=1)  # km/s
    >>> v.shape
    (30, 30)
    """
    from ..spatial.kernels import parse_kernel

    ny, nx = shape2(shape)
    spec = parse_kernel(kind, separable=False)
    scale, amp = _kernel_params(scale, amp, spec.n_terms)
    mean = as_map(mean, (ny, nx), "mean")
    n = ny * nx
    if n > _MAX_GP_POINTS:
        raise InputError(f"shape: {ny} x {nx} = {n} spaxels is too many for a dense GP draw (max {_MAX_GP_POINTS})")
    z = standard_normal(key, n)  # drawn even for amp = 0, so a Generator advances alike
    var = float(np.sum(amp**2))
    if var == 0.0:
        return mean
    cov = _grid_covariance(spec, amp, scale, ny, nx)
    cov[np.diag_indices(n)] += np.sqrt(np.finfo(np.float64).eps) * var
    return mean + _correlate(cov, z).reshape(ny, nx)


def _kernel_params(scale, amp, n_terms):
    """``scale`` (spaxels) and ``amp`` as float64 arrays of one entry per kernel term, checked."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    amp = np.atleast_1d(np.asarray(amp, dtype=np.float64))
    for name, arr in (("scale", scale), ("amp", amp)):
        if arr.ndim != 1 or arr.size not in (1, n_terms):
            raise InputError(f"{name}: need one value per kernel term ({n_terms}), got {arr.size}")
    scale = np.broadcast_to(scale, (n_terms,))
    amp = np.broadcast_to(amp, (n_terms,))
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise InputError(f"scale: length scales must be finite and positive (spaxels), got {scale.tolist()}")
    if not np.all(np.isfinite(amp) & (amp >= 0)):
        raise InputError(f"amp: amplitudes must be finite and non-negative, got {amp.tolist()}")
    return scale, amp


def _grid_covariance(spec, amp, scale, ny, nx):
    """Dense (ny nx, ny nx) covariance of the spaxel grid, row-major spaxel order.

    The kernel is evaluated once on the table of lags ``(dy, dx)``, in float64, then
    gathered for every pair of spaxels.
    """
    import jax

    from ..spatial.kernels import covariance

    dy, dx = np.meshgrid(np.arange(-(ny - 1), ny), np.arange(-(nx - 1), nx), indexing="ij")
    lags = np.column_stack([dy.ravel(), dx.ravel()]).astype(np.float64)
    with jax.enable_x64(True):
        table = np.asarray(covariance(spec, amp, scale, lags, np.zeros((1, 2))), dtype=np.float64)
    table = table.reshape(2 * ny - 1, 2 * nx - 1)
    iy, ix = np.divmod(np.arange(ny * nx), nx)
    return table[iy[:, None] - iy[None, :] + ny - 1, ix[:, None] - ix[None, :] + nx - 1]


def _correlate(cov, z):
    """``L z`` with ``L L^T = cov``: Cholesky, or a symmetric root if ``cov`` is numerically singular."""
    try:
        return np.linalg.cholesky(cov) @ z
    except np.linalg.LinAlgError:  # very long scales
        w, u = np.linalg.eigh(cov)
        return u @ (np.sqrt(np.clip(w, 0.0, None)) * (u.T @ z))


# ----------------------------------------------------------------------------- rotating disk


def rotating_disk_field(shape, v_max, r_turn, pa_deg, inc_deg, center=None):
    """Line-of-sight velocity of a thin rotating disk with an arctan rotation curve.

    ``V = v_max (2 / pi) arctan(R / r_turn) sin(i) cos(theta)`` (Courteau 1997, AJ 114,
    2402, eq. 2 without the systemic term; the projection of a circular velocity,
    e.g. Begeman 1989, A&A 223, 47), with ``R`` the radius in the disk plane and
    ``theta`` the azimuth in the disk plane measured from the receding half of the
    major axis.

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` spaxels.
    v_max : float
        Asymptotic circular velocity, km/s (any sign; negative flips the sense).
    r_turn : float
        Turn-over radius, spaxels (> 0).
    pa_deg : float
        Position angle of the *receding* half of the major axis, degrees, measured from
        +y (North in the mock WCS) toward -x (East): the astronomical convention
        (North through East).  ``pa_deg = 0``: V > 0 at +y; ``pa_deg = 90``: V > 0 at -x.
    inc_deg : float
        Inclination, degrees, in [0, 90) (0 = face on: V = 0 everywhere).
    center : (float, float), optional
        ``(x0, y0)`` of the kinematic centre in spaxels (x = column, y = row);
        default the middle of the map, ``((nx - 1) / 2, (ny - 1) / 2)``.

    Returns
    -------
    ndarray, shape (ny, nx), float64
        Velocity in km/s, zero at the centre and along the minor axis, point-antisymmetric
        about the centre, tending to ``v_max sin(i)`` along the major axis far out.

    Raises
    ------
    InputError
        Bad ``shape``, a non-finite ``v_max`` or ``pa_deg``, ``r_turn <= 0``,
        ``inc_deg`` outside [0, 90), or a bad ``center``.

    Notes
    -----
    With ``phi = pa_deg`` and offsets ``(dx, dy)`` from the centre, the sky coordinates
    along the major and minor axes are ``x_maj = -dx sin(phi) + dy cos(phi)``,
    ``y_min = dx cos(phi) + dy sin(phi)``; in the disk plane ``X = x_maj``,
    ``Y = y_min / cos(i)``, ``R = sqrt(X^2 + Y^2)`` and ``cos(theta) = X / R``.

    Examples
    --------
    >>> v = rotating_disk_field((21, 21), v_max=200.0, r_turn=3.0, pa_deg=30.0, inc_deg=60.0)
    >>> bool(abs(v[10, 10]) < 1e-12)
    True
    """
    ny, nx = shape2(shape)
    v_max = float(v_max)
    if not np.isfinite(v_max):
        raise InputError(f"v_max: must be a finite number of km/s, got {v_max}")
    r_turn = positive(r_turn, "r_turn")
    pa = float(pa_deg)
    if not np.isfinite(pa):
        raise InputError(f"pa_deg: must be a finite angle in degrees, got {pa_deg}")
    inc = float(inc_deg)
    if not (np.isfinite(inc) and 0.0 <= inc < 90.0):
        raise InputError(f"inc_deg: must lie in [0, 90) degrees, got {inc_deg}")
    x0, y0 = _center(center, ny, nx)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    dx, dy = x - x0, y - y0
    phi, i = np.radians(pa), np.radians(inc)
    x_maj = -dx * np.sin(phi) + dy * np.cos(phi)
    y_disk = (dx * np.cos(phi) + dy * np.sin(phi)) / np.cos(i)
    r = np.hypot(x_maj, y_disk)
    # arctan(R / r_t) cos(theta) = x_maj * [arctan(R / r_t) / R], finite (-> 1 / r_t) at R = 0
    safe_r = np.where(r > 0, r, 1.0)
    ratio = np.where(r > 0, np.arctan(safe_r / r_turn) / safe_r, 1.0 / r_turn)
    return v_max * (2.0 / np.pi) * np.sin(i) * x_maj * ratio


def _center(center, ny, nx):
    """``(x0, y0)`` in spaxels: ``center`` checked, or the middle of the map."""
    if center is None:
        return (nx - 1) / 2.0, (ny - 1) / 2.0
    try:
        x0, y0 = (float(c) for c in center)
    except (TypeError, ValueError):
        raise InputError(f"center: need (x0, y0) in spaxels, got {center!r}") from None
    if not (np.isfinite(x0) and np.isfinite(y0)):
        raise InputError(f"center: need finite (x0, y0), got {center!r}")
    return x0, y0
