"""Axisymmetric Jeans Anisotropic Models (JAM) of MGEs: V_rms and first-moment maps.

Public entry points :func:`jam_vrms` and :func:`jam_velocity`.  The physics of the
cylindrically aligned model is in :mod:`dynamics.jam_cyl` (Cappellari 2008, MNRAS 390,
71), including the analytic PSF and spaxel convolution of V_rms; V_rms maps are summed on
quadrature nodes shared by every point, as products of one function of ``x`` and one of
``y`` (:mod:`dynamics.jam_cyl_separable`); the grid convolution of first moments is in
:mod:`dynamics.jam_psf` (C08 Appendix A).

Coordinates (see ``CONVENTIONS.md``): sky positions ``x`` along the projected major
axis (towards the receding side), ``y`` along the projected minor axis, both in kpc
from the galaxy centre; inclination in degrees (90 = edge-on); velocities in km/s.
Every function is jit/vmap/grad-able in every float argument; shapes, the PSF being
present and the quadrature settings are static.  Checks of concrete arguments raise
``ValueError`` naming the argument; under ``jit`` nothing is checked.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy

from .mge import MGE, fit_mge_weights, check_inclination
from .constants import DEG
from ._quadrature import sinh_rule
from .profiles.base import Profile, is_concrete
from .profiles.composite import Composite
from . import jam_cyl, jam_sph
from . import jam_cyl_separable as jam_separable
from .jam_cyl_separable import product_grid
from .jam_cyl_rotation import rotation_table, interpolate
from .jam_psf import grid_convolve, grid_size, pixel_average_nodes

__all__ = ["jam_vrms", "jam_velocity", "JamSettings", "rotate_sky", "bin_average"]

_BATCH = 32                 # points per lax.map batch (bounds memory)
_CUT = 9.0                  # Gaussian tails beyond 9 sigma are dropped (exp(-40.5))


class JamSettings(NamedTuple):
    """Static numerical settings of JAM (hashable; pass as ``settings=``).

    quad : (panels, order) of the ``v`` quadrature.  V_rms uses nodes shared by all points
        (:mod:`dynamics.jam_cyl_separable`): (12, 8) gives ~1e-12 relative on the issue-9
        benchmark (halo, black hole, PSF and spaxels), (10, 6) ~3e-9, (8, 5) ~2e-7.  The
        first moment tabulates its rotation field on nodes shared by the whole table
        (:mod:`dynamics.jam_cyl_rotation`), which span the table's range (out to 12
        tracer widths): (12, 8) ~1e-8 of V at the default line-of-sight rule apart from
        the clipping kinks, (8, 6) ~2e-4; (4, 6) is off by per cents.
    psf_step : first moments only (V_rms convolves analytically): PSF grid step in units
        of the smallest PSF dispersion (0.5: ~1e-10 for models smooth on that scale; a
        black hole or MGE widths well below the PSF make it ~1e-4, refine it then).
    psf_grid : grid steps per half axis, overriding ``psf_step``; required when the PSF,
        the spaxel size or the positions are traced (static shapes), and then also
        wanted for concrete calls that must match (finite differences).
    los : (panels, order) of the line-of-sight rule of the first moment.
    halo_gaussians : Gaussians per spherical mass component (:func:`fit_mge_weights`).
    halo_range : (r_min, r_max) kpc of that fit; None: from the tracer MGE and the data.
    extent : the largest distance (kpc) of a sky point from the centre, which sets the
        range of the shared quadrature nodes and tables; required when the positions are
        traced (None: from the concrete positions).
    table : first moments: grid points per axis of the meridional table of the rotation
        field (:mod:`dynamics.jam_cyl_rotation`).
    """

    quad: tuple = jam_cyl.QUAD
    psf_step: float = 0.5
    psf_grid: int = None
    los: tuple = (8, 12)
    halo_gaussians: int = 32
    halo_range: tuple = None
    extent: float = None
    table: int = 128


# ----------------------------------------------------------------------------- helpers
def rotate_sky(dx, dy, pa):
    """Rotate sky offsets into the galaxy frame.

    ``dx`` = offset along RA cos(Dec) (east positive), ``dy`` along Dec (north), any
    units; ``pa`` the position angle of the projected major axis in degrees east of
    north (towards the receding side).  Returns ``(x, y)`` with ``x`` along the major
    axis (positive at ``pa``) and ``y`` along the minor axis (90 deg counter-clockwise
    from x on the sky).
    """
    a = jnp.asarray(pa) * DEG
    x = dx * jnp.sin(a) + dy * jnp.cos(a)
    y = -dx * jnp.cos(a) + dy * jnp.sin(a)
    return x, y


def bin_average(values, weights, binid, n_bins):
    """Weighted average of a model over bins (Voronoi BINID; ``binid < 0`` ignored).

    ``values``, ``weights`` (e.g. the surface brightness) and ``binid`` have one entry
    per spaxel; ``n_bins`` static.  For V_rms average the second moments
    (``bin_average(vrms**2, sb, ...)``, then sqrt), as jampy does.
    """
    binid = jnp.asarray(binid)
    keep = binid >= 0
    idx = jnp.where(keep, binid, 0)
    w = jnp.where(keep, weights, 0.0)
    num = jax.ops.segment_sum(w * values, idx, num_segments=n_bins)
    den = jax.ops.segment_sum(w, idx, num_segments=n_bins)
    return num / den


def _concrete(*xs):
    return all(is_concrete(x) for x in xs)


def _check_points(x, y):
    x = _as_array(x)                  # numpy when concrete: stays concrete (static grid sizes) under jit
    y = _as_array(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape, got {x.shape} and {y.shape}")
    for name, v in (("x", x), ("y", y)):
        if is_concrete(v) and not numpy.all(numpy.isfinite(numpy.asarray(v))):
            raise ValueError(f"{name} must be finite")
    return x, y


def _per_gaussian(value, n, name, ok, what):
    value = jnp.asarray(value, dtype=float)
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != n):
        raise ValueError(f"{name} must be a scalar or one value per tracer Gaussian ({n}), got shape {value.shape}")
    if is_concrete(value):
        v = numpy.asarray(value)
        if not numpy.all(numpy.isfinite(v) & ok(v)):
            raise ValueError(f"{name} must be finite and {what}, got {v!r}")
    return jnp.broadcast_to(value, (n,))


def _as_array(value):
    """numpy float array for concrete input (stays concrete under jit), jnp otherwise."""
    return jnp.asarray(value, dtype=float) if not is_concrete(value) else numpy.asarray(value, dtype=float)


def _check_psf(psf_sigma, psf_weight, pixel_size):
    """(sigmas, normalised weights, pixel size, has_psf, has_pixel); the flags are static:
    concrete zeros mean no PSF / no spaxel averaging, traced values mean present."""
    s = _as_array(psf_sigma)
    s = s.reshape(1) if s.ndim == 0 else s
    if s.ndim != 1:
        raise ValueError(f"psf_sigma must be a scalar or a 1-D array, got shape {s.shape}")
    w = numpy.ones(s.shape) if psf_weight is None else _as_array(psf_weight)
    w = w.reshape(1) if w.ndim == 0 else w
    if w.shape != s.shape:
        raise ValueError(f"psf_weight must match psf_sigma's length {s.shape[0]}, got shape {w.shape}")
    if is_concrete(s) and not numpy.all(numpy.isfinite(s) & (s >= 0)):
        raise ValueError(f"psf_sigma must be finite and >= 0, got {s!r}")
    if is_concrete(w) and not (numpy.all(numpy.isfinite(w) & (w >= 0)) and numpy.sum(w) > 0):
        raise ValueError(f"psf_weight must be finite, >= 0 and not all zero, got {w!r}")
    p = _as_array(pixel_size)
    if p.ndim != 0:
        raise ValueError(f"pixel_size must be a scalar, got shape {p.shape}")
    if is_concrete(p) and not (numpy.isfinite(p) and p >= 0):
        raise ValueError(f"pixel_size must be finite and >= 0, got {float(p)!r}")
    has_psf = not (is_concrete(s) and numpy.all(s == 0))
    has_pix = not (is_concrete(p) and float(p) == 0)
    if has_psf and is_concrete(s) and numpy.any(s == 0):
        raise ValueError(f"psf_sigma: every PSF Gaussian needs a dispersion > 0, got {s!r}")
    return s, w / w.sum(), p, has_psf, has_pix


def _halo_range(tracer, x, y, settings):
    if settings.halo_range is not None:
        return settings.halo_range
    if not _concrete(tracer.sigma, x, y):
        raise ValueError("spherical mass components need JamSettings(halo_range=(r_min, r_max)) "
                         "when the tracer widths or the sky positions are traced")
    s = numpy.asarray(tracer.sigma)
    r_out = max(float(numpy.max(numpy.hypot(numpy.asarray(x), numpy.asarray(y)))), float(s.max()))
    return (float(s.min()) / 10.0, 10.0 * r_out)


def _mass_split(mass, tracer, x, y, inclination, m_bh, settings):
    """Mass model as ``(flat, round, m_bh)``: ``flat = (M_j, s_j, e2_j)`` of the MGE
    components deprojected, ``round = (M_j, s_j)`` of the spherical profiles expanded
    in round Gaussians (None when there are none), ``m_bh`` the checked point mass."""
    comps = mass.components if isinstance(mass, Composite) else (mass,)
    if not all(isinstance(c, Profile) for c in comps):
        raise ValueError(f"mass must be an MGE or a sum of an MGE and Profiles, got {type(mass).__name__}")
    tot, sig, e2, r_tot, r_sig = [], [], [], [], []
    for c in comps:
        if isinstance(c, MGE):
            _, q_int = c.deproject(inclination)
            tot.append(c.total())
            sig.append(c.sigma)
            e2.append(1.0 - q_int**2)
        else:
            lo, hi = _halo_range(tracer, x, y, settings)
            m, s = fit_mge_weights(c, lo, hi, settings.halo_gaussians)
            r_tot.append(m)
            r_sig.append(s)
    m_bh = jnp.asarray(m_bh, dtype=float)
    if m_bh.ndim != 0:
        raise ValueError(f"m_bh must be a scalar, got shape {m_bh.shape}")
    if is_concrete(m_bh) and not (numpy.isfinite(float(m_bh)) and float(m_bh) >= 0):
        raise ValueError(f"m_bh must be finite and >= 0, got {float(m_bh)!r}")
    flat = tuple(jnp.concatenate(v) for v in (tot, sig, e2)) if tot else None
    round_ = (jnp.concatenate(r_tot), jnp.concatenate(r_sig)) if r_tot else None
    return flat, round_, m_bh


def _mass_gaussians(mass, tracer, x, y, inclination, m_bh, settings):
    """``(M_j, s_j, e2_j, point_j)`` of the mass model in one list, for the per-point rules:
    the flattened (MGE) Gaussians, then the round ones (``e2 = 0``), then the point mass."""
    flat, round_, m_bh = _mass_split(mass, tracer, x, y, inclination, m_bh, settings)
    parts = [] if flat is None else [flat]
    if round_ is not None:
        parts.append((*round_, jnp.zeros_like(round_[1])))
    parts.append((m_bh[None], jnp.ones(1), jnp.zeros(1)))
    n = sum(part[0].shape[0] for part in parts)
    point = numpy.zeros(n, dtype=bool)
    point[-1] = True
    return (*(jnp.concatenate(v) for v in zip(*parts)), jnp.asarray(point))


def _has_bh(m_bh):
    """Static: a black hole term is needed unless ``m_bh`` is a concrete zero."""
    return not (is_concrete(m_bh) and float(m_bh) == 0.0)


def _extent(x, y, settings):
    """(smallest, largest) distance of the points from the centre, kpc (static floats)."""
    if is_concrete(x) and is_concrete(y):
        d = numpy.hypot(numpy.asarray(x, dtype=float), numpy.asarray(y, dtype=float))
        return float(d.min()), float(d.max())
    if settings.extent is None:
        raise ValueError("settings: pass JamSettings(extent=r_max) (kpc) when the sky positions are traced")
    return 0.0, float(settings.extent)


def _tracer_setup(x, y, tracer, inclination, beta):
    """Checked points, inclination and the deprojected tracer tuple ``(nu0, s_k, p_k, b_k)``."""
    x, y = _check_points(x, y)
    if not isinstance(tracer, MGE):
        raise ValueError(f"tracer must be an MGE, got {type(tracer).__name__}")
    inclination = jnp.asarray(inclination, dtype=float)
    if inclination.ndim != 0:
        raise ValueError(f"inclination must be a scalar, got shape {inclination.shape}")
    check_inclination(tracer.q, inclination)
    nu0, p_k = tracer.deproject(inclination)
    beta = _per_gaussian(beta, tracer.n, "beta", lambda v: v < 1, "< 1")
    return x, y, inclination, (nu0, tracer.sigma, p_k, 1.0 / (1.0 - beta))


def _setup(x, y, tracer, mass, inclination, beta, m_bh, psf_sigma, psf_weight, pixel_size, settings):
    x, y, inclination, tr = _tracer_setup(x, y, tracer, inclination, beta)
    ms = _mass_gaussians(mass, tracer, x, y, inclination, m_bh, settings)
    psf = _check_psf(psf_sigma, psf_weight, pixel_size)
    return x, y, tr, ms, psf


def _map_points(fn, x, y, batch=_BATCH, odd_x=None):
    """Apply ``fn(x, y) -> tuple of scalars`` to every point (lax.map in batches).

    The maps are even in ``y`` and even (or, per output, ``odd_x``) in ``x``: concrete points
    are folded onto ``(|x|, |y|)`` and each distinct pair is computed once (a 4x saving on a
    grid centred on the galaxy).
    """
    if _concrete(x, y) and x.size > 1:
        pts = numpy.stack([numpy.abs(numpy.asarray(x, dtype=float).reshape(-1)),
                           numpy.abs(numpy.asarray(y, dtype=float).reshape(-1))], axis=1)
        uniq, inverse = numpy.unique(pts, axis=0, return_inverse=True)
        if len(uniq) < len(pts):
            vals = _map_points(fn, uniq[:, 0], uniq[:, 1], batch)
            sign = numpy.where(numpy.asarray(x).reshape(-1) < 0, -1.0, 1.0)
            odd_x = (False,) * len(vals) if odd_x is None else odd_x
            return tuple((v[inverse.reshape(-1)] * (sign if odd else 1.0)).reshape(x.shape)
                         for v, odd in zip(vals, odd_x))
    shape = x.shape
    xf, yf = x.reshape(-1), y.reshape(-1)
    # checkpoint: reverse mode recomputes each point's (pairs x nodes) arrays instead of storing them
    one = jax.checkpoint(lambda p: fn(p[0], p[1]))
    out = jax.lax.map(one, (xf, yf), batch_size=min(batch, max(xf.size, 1)))
    return tuple(o.reshape(shape) for o in out)


def _observe(fields, x, y, psf, settings, odd_x=None, batch=_BATCH):
    """Fields at the points, PSF/spaxel-convolved when a PSF or spaxels are given.

    ``fields(x, y) -> tuple`` works point by point.  Returns a tuple of arrays of x's shape.
    """
    s, w, p, has_psf, has_pix = psf
    if not has_psf and not has_pix:
        return _map_points(fields, x, y, batch, odd_x)
    shape = x.shape
    xf, yf = x.reshape(-1), y.reshape(-1)
    if not has_psf:                                   # spaxel average only (Gauss-Legendre)
        xn, yn, ww = pixel_average_nodes(xf, yf, p)
        vals = _map_points(fields, xn, yn, batch, odd_x)
        return tuple(jnp.sum(v * ww, axis=-1).reshape(shape) for v in vals)
    if settings.psf_grid is not None:
        n_half = int(settings.psf_grid)
    elif _concrete(x, y, s, p):
        n_half = grid_size(numpy.asarray(x), numpy.asarray(y), s, p, settings.psf_step * float(numpy.min(s)))
    else:
        raise ValueError("settings: pass JamSettings(psf_grid=n) (grid steps per half axis) when the PSF, "
                         "the spaxel size or the positions are traced")

    def on_grid(xg, yg):
        return _map_points(fields, xg, yg, batch)

    out = grid_convolve(on_grid, xf, yf, jnp.asarray(s), jnp.asarray(w), jnp.asarray(p), has_pix, n_half, odd_x)
    return tuple(o.reshape(shape) for o in out)


# ----------------------------------------------------------------------------- V_rms
def jam_vrms(x, y, tracer, mass, *, inclination, beta=0.0, m_bh=0.0, align="cyl", psf_sigma=0.0,
             psf_weight=None, pixel_size=0.0, settings=JamSettings()):
    """Root-mean-square line-of-sight velocity ``V_rms = sqrt(<v_los^2>)`` of a JAM model, km/s.

    Parameters
    ----------
    x, y : array_like
        Sky positions (kpc) along the projected major and minor axes (same shape).
    tracer : MGE
        Tracer surface brightness (any units per kpc^2).
    mass : MGE or Profile sum
        Mass model: an MGE (Msun/kpc^2, e.g. ``stars.scaled(ml)``), or a sum of MGEs and
        spherical profiles (``stars.scaled(ml) + NFW(...)``); spherical profiles are
        expanded with :func:`dynamics.fit_mge_weights` (differentiable).
    inclination : float
        Degrees, 90 = edge-on; every Gaussian needs ``q_obs^2 > cos^2 i``.
    beta : float or array (n_tracer,)
        ``beta_z = 1 - sigma_z^2 / sigma_R^2`` (``align="cyl"``) or
        ``beta_r = 1 - sigma_theta^2 / sigma_r^2`` (``align="sph"``), < 1.
    m_bh : float
        Black-hole mass (Msun), a point mass.
    align : {"cyl", "sph"}
        Velocity-ellipsoid alignment: cylindrical (Cappellari 2008) or spherical
        (Cappellari 2020, :mod:`dynamics.jam_sph`).  "sph" has no analytic line-of-sight
        integral: it is evaluated point by point (about 0.17 s per point for 12 tracer and
        45 mass Gaussians on two CPU cores) and, with a PSF or spaxels, on the grid of
        :mod:`dynamics.jam_psf` (``settings.psf_step``): thousands of points, minutes.
    psf_sigma, psf_weight : float or array (n_psf,)
        PSF as a sum of circular Gaussians (kpc); weights normalised to 1.
    pixel_size : float
        Side of square spaxels (kpc) over which the model is averaged.
    settings : JamSettings
        Static numerical settings.

    Returns
    -------
    jax.Array
        V_rms in km/s, shape of ``x``.

    Notes
    -----
    The spaxel is a square aligned with ``x`` and ``y`` (rotate the positions, not the
    spaxels: a grid at another position angle is averaged over squares aligned with the
    galaxy's axes).  On a grid of spaxels (positions whose ``|x|`` and ``|y|`` take few
    distinct values) the map costs one matrix product per PSF Gaussian; scattered points
    cost one sum over the nodes each (:mod:`dynamics.jam_cyl_separable`).

    References
    ----------
    Cappellari (2008), MNRAS 390, 71, eqs. 8, 9, 28 and Appendix A.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from dynamics import MGE, jam_vrms
    >>> mge = MGE.from_observed([2e4, 3e3, 4e2], [0.3, 2.0, 8.0], [0.8, 0.7, 0.6], 16.5)
    >>> x, y = jnp.meshgrid(jnp.linspace(-1, 1, 5), jnp.linspace(-1, 1, 5))
    >>> v = jam_vrms(x, y, mge, mge.scaled(4.0), inclination=70.0, beta=0.2, m_bh=1e8)
    """
    if align not in ("cyl", "sph"):
        raise ValueError(f"align must be 'cyl' or 'sph', got {align!r}")
    if align == "sph":
        return _vrms_sph(x, y, tracer, mass, inclination, beta, m_bh, psf_sigma, psf_weight, pixel_size, settings)
    x, y, inclination, tr = _tracer_setup(x, y, tracer, inclination, beta)
    flat, round_, m_bh = _mass_split(mass, tracer, x, y, inclination, m_bh, settings)
    s, w, p, has_psf, has_pix = _check_psf(psf_sigma, psf_weight, pixel_size)
    sin2 = jnp.sin(inclination * DEG) ** 2
    s, w = jnp.asarray(s), jnp.asarray(w)
    p = jnp.asarray(p) if has_pix else jnp.asarray(0.0)
    shape = x.shape
    grid = product_grid(x, y)
    d_lo, d_hi = _extent(x, y, settings)
    s_kmin = jnp.min(tracer.sigma)
    num = 0.0
    den = 0.0
    for c in range(s.shape[0]):                       # static loop over PSF Gaussians
        s_c = s[c] if has_psf else jnp.asarray(0.0)
        reach = (0.7071067811865476 * p if has_pix else 0.0) + _CUT * s_c
        if has_psf or has_pix:
            floor = 1e-4 * (jnp.minimum(s_kmin, s_c) if has_psf else s_kmin)
        else:
            floor = 1e-8 * s_kmin
        d_min = jnp.maximum(d_lo - reach, floor)
        d_max = d_hi + reach
        nodes = [] if flat is None else [jam_separable.gaussian_nodes(tr, *flat, sin2, d_max, s_c, settings.quad)]
        if round_ is not None or _has_bh(m_bh):
            m_r, s_r = round_ if round_ is not None else (jnp.zeros(1), jnp.ones(1))
            nodes.append(jam_separable.spherical_nodes(tr, m_r, s_r, m_bh, sin2, d_max, d_min, s_c,
                                                       settings.quad))
        nodes = jam_separable.Nodes(*(jnp.concatenate(parts) for parts in zip(*nodes)))
        box = bool(has_pix)
        if grid is not None:
            ux, uy, ix, iy = grid
            val = jam_separable.nodes_grid(nodes, ux, uy, s_c**2, p, box)[ix, iy]
        else:
            val = jam_separable.nodes_sum(nodes, jnp.ravel(x), jnp.ravel(y), s_c**2, p, box)
        sb = jam_cyl.smooth_1d(0.5 / tracer.sigma[:, None] ** 2, jnp.ravel(x)[None, :], s_c**2, p, box,
                               second=False)[0]
        sb = sb * jam_cyl.smooth_1d(0.5 / (tracer.sigma * tracer.q)[:, None] ** 2, jnp.ravel(y)[None, :],
                                    s_c**2, p, box, second=False)[0]
        num = num + w[c] * val
        den = den + w[c] * jnp.sum(tracer.surf[:, None] * sb, axis=0)
    return jnp.sqrt(num / den).reshape(shape)


def _vrms_sph(x, y, tracer, mass, inclination, beta, m_bh, psf_sigma, psf_weight, pixel_size, settings):
    """V_rms of the spherically aligned model (:mod:`dynamics.jam_sph`), point by point;
    the PSF and spaxels by the grid convolution of :mod:`dynamics.jam_psf`."""
    x, y, tr, ms, psf = _setup(x, y, tracer, mass, inclination, beta, m_bh, psf_sigma, psf_weight,
                               pixel_size, settings)
    inc = jnp.asarray(inclination) * DEG
    sph = jam_sph.SphSettings(round_mass=tuple(bool(v) for v in _round_mass(mass, settings)))

    def fields(xp, yp):
        return (jam_sph.projected_second_moment_sph(xp, yp, tr, ms, inc, sph),
                jam_cyl.surface_brightness(xp, yp, tracer.surf, tracer.sigma, tracer.q))

    num, den = _observe(fields, x, y, psf, settings, batch=1)
    return jnp.sqrt(num / den)


def _round_mass(mass, settings):
    """Static flags of the mass Gaussians of :func:`_mass_gaussians` (same order) that are
    round (MGE Gaussians with concrete q = 1, expanded spherical profiles) or the point mass."""
    comps = mass.components if isinstance(mass, Composite) else (mass,)
    flags = []
    for c in comps:
        if isinstance(c, MGE):
            flags.extend((numpy.asarray(c.q) if is_concrete(c.q) else numpy.zeros(c.n)) == 1.0)
    n_round = sum(settings.halo_gaussians for c in comps if not isinstance(c, MGE))
    return flags + [True] * n_round + [True]


# ----------------------------------------------------------------------------- first moment
def safe_sqrt(x):
    """``sqrt(max(x, 0))`` with a zero (finite) gradient where ``x <= 0``."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _los_nodes(d, s_min, s_max, q_min, los):
    """Line-of-sight nodes ``z' = zeta sinh t`` (dense near the centre), out to 12 widths."""
    return sinh_rule(0.5 * jnp.maximum(d, s_min), 12.0 * s_max / q_min, los)


def jam_velocity(x, y, tracer, mass, *, inclination, beta=0.0, kappa=1.0, m_bh=0.0, psf_sigma=0.0,
                 psf_weight=None, pixel_size=0.0, rotation="gaussian", settings=JamSettings()):
    """First moment ``<v_los>`` (km/s) of the cylindrically aligned JAM model.

    Each tracer Gaussian rotates with ``nu_k <v_phi>_k = kappa_k sqrt(nu_k max([nu v_phi^2]_k
    - [nu sigma_phi^2]_k, 0))``, ``sigma_phi = sigma_R`` (Cappellari 2008 sec. 3.2, eqs.
    34-35), ``[nu v_phi^2]_k - b_k [nu sigma_z^2]_k = R^2 sum_j C int (H - 2 b_k P F)
    exp(-P R^2 - Q z^2) dv`` (see :mod:`dynamics.jam_cyl`).  ``<v_los> = sin i (x / R)
    <v_phi>`` is integrated along the line of sight with ``z' = zeta sinh t`` on
    ``settings.los`` Gauss-Legendre panels (the square-root kinks where the clipping
    starts limit the convergence to about 1e-4..1e-6 relative at the default).  Positive
    on the ``x > 0`` side for ``kappa > 0``.  Other parameters as :func:`jam_vrms`; the
    gradient of the clipped square root is zero where it clips.

    ``rotation="total"`` instead clips the moments of the whole tracer,
    ``nu <v_phi> = kappa sqrt(nu max([nu v_phi^2] - [nu sigma_phi^2], 0))`` (Cappellari 2020
    eq. 21; jampy 8's convention, with a scalar ``kappa``).  By Cauchy-Schwarz it is >= the
    per-Gaussian form for equal ``kappa``: a few per cent higher for typical MGEs.
    """
    if rotation not in ("gaussian", "total"):
        raise ValueError(f"rotation must be 'gaussian' or 'total', got {rotation!r}")
    if rotation == "total" and numpy.ndim(kappa) != 0:
        raise ValueError("kappa must be a scalar with rotation='total'")
    x, y, inclination, tr = _tracer_setup(x, y, tracer, inclination, beta)
    flat, round_, m_bh = _mass_split(mass, tracer, x, y, inclination, m_bh, settings)
    psf = _check_psf(psf_sigma, psf_weight, pixel_size)
    kappa = _per_gaussian(kappa, tracer.n, "kappa", lambda v: numpy.ones_like(v, bool), "real")
    inc = jnp.asarray(inclination) * DEG
    si, ci = jnp.sin(inc), jnp.cos(inc)
    nu0, s_k, p_k, b_k = tr
    s_min, s_max, q_min = jnp.min(s_k), jnp.max(s_k), jnp.min(p_k)
    # the table reaches every line-of-sight node of every point (and of the PSF grid)
    _, d_hi = _extent(x, y, settings)
    s_psf, _, p_pix, _, _ = psf
    reach = 1.4142135623730951 * (d_hi + jnp.asarray(p_pix) + 9.0 * jnp.max(jnp.asarray(s_psf)))
    table = rotation_table(tr, flat, round_, m_bh if _has_bh(m_bh) else None,
                           reach + 12.0 * s_max / q_min, settings.table, settings.quad)

    def fields(xp, yp):
        d = jnp.sqrt(xp**2 + yp**2)
        zp, wz = _los_nodes(d, s_min, s_max, q_min, settings.los)
        yy = -yp * ci + zp * si
        zz = yp * si + zp * ci
        R = jnp.sqrt(xp**2 + yy**2)
        u = jax.vmap(lambda r, z: interpolate(table, r, z))(R, zz)                     # (nodes, K)
        nu = nu0 * jnp.exp(-(R[:, None] ** 2 + (zz[:, None] / p_k) ** 2) / (2.0 * s_k**2))
        if rotation == "total":                                                       # C20 eq. 21
            rot = kappa[0] * safe_sqrt(jnp.sum(nu, axis=1) * jnp.sum(nu * u, axis=1))
        else:                                                                         # C08 eq. 35
            rot = jnp.sum(kappa * nu * safe_sqrt(u), axis=1)
        vals = rot * xp / jnp.maximum(R, 1e-300)
        return (si * jnp.sum(wz * vals),
                jam_cyl.surface_brightness(xp, yp, tracer.surf, tracer.sigma, tracer.q))

    num, den = _observe(fields, x, y, psf, settings, odd_x=(True, False), batch=128)
    return num / den
