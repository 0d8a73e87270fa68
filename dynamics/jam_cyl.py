"""Cylindrically aligned axisymmetric Jeans models of MGEs (Cappellari 2008), per point.

Notation: tracer Gaussian ``k`` (central density ``nu0_k``, width ``s_k``, intrinsic
axis ratio ``p_k``, anisotropy ``b_k = 1 / (1 - beta_z,k) = sigma_R^2 / sigma_z^2``),
mass Gaussian ``j`` (total ``M_j``, width ``s_j``, intrinsic ellipticity
``e_j^2 = 1 - q_j^2``).  The potential of Gaussian ``j`` is one integral over
``T`` in [0, 1] (Cappellari 2002 eq. 17).  Integrating the vertical Jeans equation
``d(nu sigma_z^2)/dz = -nu dPhi/dz`` from ``z`` to infinity under the ``T`` integral
gives Cappellari (2008) eq. 8, and the radial equation
``nu v_phi^2 = b [nu sigma_z^2 + R d(nu sigma_z^2)/dR] + R nu dPhi/dR`` eq. 9.  We
write both in the variable ``v = T / sqrt(1 - e_j^2 T^2)`` (``v`` in [0, 1/q_j]),
where every factor is rational in ``v^2``::

    den = 1 + e_j^2 v^2,
    P = 1/(2 s_k^2) + v^2 / (2 s_j^2 den),   Q = 1/(2 s_k^2 p_k^2) + v^2 / (2 s_j^2),
    F = v^2 / (2 Q den),                      H = v^2 / den^2,
    C = sqrt(2/pi) G M_j nu0_k / s_j^3,

    nu_k sigma_z^2 = sum_j C int F exp(-P R^2 - Q z^2) dv                         (C08 eq. 8)
    nu_k v_phi^2   = sum_j C int [b_k F (1 - 2 P R^2) + R^2 H] exp(-P R^2 - Q z^2) dv   (C08 eq. 9)

For the line of sight, with ``x`` along the projected major axis, galaxy coordinates
``y = -y' cos i + z' sin i``, ``z = y' sin i + z' cos i`` (i = 90 deg edge-on), the
second moment ``v_los^2 = sin^2 i (sigma_R^2 y^2 + v_phi^2 x^2) / R^2 + cos^2 i sigma_z^2``
is a Gaussian in ``z'`` times a polynomial for each ``v``, so the line-of-sight
integral is analytic (``a = P sin^2 i + Q cos^2 i``; C08 eq. 28)::

    Sigma <v_los^2> (x, y) = sum_kj C int sqrt(pi/a) exp(-P x^2 - P Q y^2 / a)
                             [(b_k sin^2 i + cos^2 i) F + x^2 sin^2 i (H - 2 P b_k F)] dv.

A black hole is a point mass: the limit ``s_j -> 0`` of a round Gaussian, in
``w = v / s_j`` in [0, inf) (so ``s_j = 1``, ``e_j = 0`` and no upper bound 1/q_j).

Quadrature: the integrand in ``v`` has structure on the scales ``s_j / s_k`` (tracer
width), ``s_j / d`` (``d`` the distance of the point from the centre; beyond
``T = 9 s_j / d`` it is below ``exp(-40)``) and ``1 / e_j``.  We integrate over
``[0, v_lo]`` and ``M`` geometric panels on ``[v_lo, v_hi]`` with ``K`` Legendre nodes
each (``v_hi`` from ``T_hi = min(1, 9 s_j / d)``, ``v_lo = min(s_j / s_k, v_hi / 81)``),
so the nodes follow every scale for any ratio of widths.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc

from .constants import G
from ._quadrature import gauss_legendre

__all__ = ["graded_nodes", "potential_rz", "circular_velocity2", "intrinsic_moments",
           "projected_second_moment", "surface_brightness", "projected_second_moment_smoothed",
           "surface_brightness_smoothed", "smooth_1d", "box_integrals", "QUAD"]

#: default (geometric panels, Legendre order) of the v quadrature
QUAD = (12, 8)
_CUT = 9.0        # T_hi = min(1, _CUT s_j / d): exp(-_CUT^2 / 2) = 2.6e-18


def graded_nodes(v_lo, v_hi, quad=QUAD):
    """Nodes and weights on ``[0, v_lo] + M geometric panels on [v_lo, v_hi]``.

    ``v_lo``, ``v_hi`` broadcast (leading shape ``B``); returns ``(nodes, weights)`` of
    shape ``B + ((M + 1) K,)``.
    """
    m, k = quad
    x, w = gauss_legendre(k)
    x = jnp.asarray(0.5 * (x + 1.0))
    w = jnp.asarray(0.5 * w)
    ratio = jnp.log(v_hi / v_lo)[..., None]
    edges = v_lo[..., None] * jnp.exp(ratio * jnp.arange(m + 1) / m)          # B + (m+1,)
    lo = jnp.concatenate([jnp.zeros_like(edges[..., :1]), edges[..., :-1]], axis=-1)
    width = jnp.concatenate([edges[..., :1], jnp.diff(edges, axis=-1)], axis=-1)
    nodes = lo[..., None] + width[..., None] * x
    weights = width[..., None] * w
    shape = nodes.shape[:-2] + ((m + 1) * k,)
    return nodes.reshape(shape), weights.reshape(shape)


def _v_range(d, s_j, e2_j, s_k, point, s_c=None):
    """Integration range ``(v_lo, v_hi)`` for the pair; ``point`` marks point masses;
    ``s_c`` a PSF dispersion (a further scale ``s_j / s_c`` of the smoothed integrand)."""
    t_hi = jnp.minimum(1.0, _CUT * s_j / jnp.maximum(d, 1e-300))
    v_gauss = t_hi / jnp.sqrt(jnp.maximum(1.0 - e2_j * t_hi**2, 1e-300))
    # a point mass diverges at d = 0: evaluate it no closer than 1e-8 tracer widths
    v_hi = jnp.where(point, _CUT / jnp.maximum(d, 1e-8 * s_k), v_gauss)
    v_lo = jnp.minimum(s_j / s_k, v_hi / 81.0)
    if s_c is not None:
        v_lo = jnp.minimum(v_lo, s_j / s_c)
    return v_lo, v_hi


# ----------------------------------------------------------------------------- potential
def _potential_nodes(d, s_j, e2_j, quad):
    t_hi = jnp.minimum(1.0, _CUT * s_j / jnp.maximum(d, 1e-300))
    v_hi = t_hi / jnp.sqrt(1.0 - e2_j * t_hi**2)
    return graded_nodes(v_hi / 81.0, v_hi, quad)


def potential_rz(R, z, m, s, q_int, quad=QUAD):
    """Potential (km/s)^2 of deprojected Gaussians (totals ``m``, widths ``s``, ``q_int``).

    Cappellari (2002) eq. 17 in ``v = T / sqrt(1 - e^2 T^2)``:
    ``Phi = -sqrt(2/pi) G sum_j M_j / s_j int_0^{1/q_j} exp(-v^2 (R^2/den + z^2) / (2 s_j^2)) / den dv``.
    """
    R = jnp.asarray(R, dtype=float)
    z = jnp.asarray(z, dtype=float)
    Rb, zb = R[..., None], z[..., None]
    e2 = 1.0 - q_int**2
    d = jnp.sqrt(Rb**2 + zb**2)
    v, w = _potential_nodes(d, s, e2, quad)                    # shape S + (J, N)
    den = 1.0 + e2[..., None] * v**2
    arg = v**2 * (Rb[..., None] ** 2 / den + zb[..., None] ** 2) / (2.0 * s[..., None] ** 2)
    val = jnp.sum(w * jnp.exp(-arg) / den, axis=-1)
    return -jnp.sqrt(2.0 / jnp.pi) * G * jnp.sum(m / s * val, axis=-1)


def circular_velocity2(R, m, s, q_int, quad=QUAD):
    """``v_c^2 = R dPhi/dR`` at ``z = 0`` in (km/s)^2 (derivative of C02 eq. 17 under the integral)."""
    R = jnp.asarray(R, dtype=float)
    Rb = R[..., None]
    e2 = 1.0 - q_int**2
    v, w = _potential_nodes(Rb, s, e2, quad)
    den = 1.0 + e2[..., None] * v**2
    x = v**2 * Rb[..., None] ** 2 / (s[..., None] ** 2 * den)
    val = jnp.sum(w * x * jnp.exp(-0.5 * x) / den, axis=-1)
    return jnp.sqrt(2.0 / jnp.pi) * G * jnp.sum(m / s * val, axis=-1)


# ----------------------------------------------------------------------------- Jeans pieces
def _pair_terms(d, tr, ms, quad, s_c=None):
    """Quadrature nodes and the factors P, Q, F, H, C for every pair at one point.

    ``tr = (nu0, s_k, p_k, b_k)`` shape (K,); ``ms = (M_j, s_j, e2_j, point_j)`` shape (J,).
    Returns arrays of shape (K, J, N) (C of shape (K, J, 1)).
    """
    nu0, s_k, p_k, _ = tr
    m_j, s_j, e2_j, point = ms
    sk = s_k[:, None]
    v_lo, v_hi = _v_range(d, s_j[None, :], e2_j[None, :], sk, point[None, :], s_c)
    v, w = graded_nodes(v_lo, v_hi, quad)                                   # (K, J, N)
    v2 = v**2
    sj2 = (s_j**2)[None, :, None]
    den = 1.0 + e2_j[None, :, None] * v2
    P = 0.5 / sk[..., None] ** 2 + v2 / (2.0 * sj2 * den)
    Q = 0.5 / (sk * p_k[:, None])[..., None] ** 2 + v2 / (2.0 * sj2)
    F = v2 / (2.0 * Q * den)
    H = v2 / den**2
    C = (jnp.sqrt(2.0 / jnp.pi) * G * m_j[None, :] * nu0[:, None] / s_j[None, :] ** 3)[..., None]
    return w, P, Q, F, H, C


def intrinsic_moments(R, z, tr, ms, quad=QUAD):
    """``(nu sigma_z^2, nu v_phi^2, nu)`` summed over tracer Gaussians at one point (R, z).

    C08 eqs. 8-9 (see the module docstring); ``nu`` in tracer units per kpc^3,
    moments times km^2/s^2.
    """
    nu0, s_k, p_k, b_k = tr
    d = jnp.sqrt(R**2 + z**2)
    w, P, Q, F, H, C = _pair_terms(d, tr, ms, quad)
    E = C * w * jnp.exp(-P * R**2 - Q * z**2)
    sz2 = jnp.sum(E * F)
    vp2 = jnp.sum(E * (b_k[:, None, None] * F * (1.0 - 2.0 * P * R**2) + R**2 * H))
    nu = jnp.sum(nu0 * jnp.exp(-(R**2 + (z / p_k) ** 2) / (2.0 * s_k**2)))
    return sz2, vp2, nu


def projected_second_moment(x, y, tr, ms, sin2, quad=QUAD):
    """``Sigma <v_los^2>`` at one sky point (x, y) (C08 eq. 28; see the module docstring)."""
    nu0, s_k, p_k, b_k = tr
    cos2 = 1.0 - sin2
    d = jnp.sqrt(x**2 + y**2)
    w, P, Q, F, H, C = _pair_terms(d, tr, ms, quad)
    a = P * sin2 + Q * cos2
    E = C * w * jnp.sqrt(jnp.pi / a) * jnp.exp(-P * x**2 - P * Q * y**2 / a)
    b = b_k[:, None, None]
    return jnp.sum(E * ((b * sin2 + cos2) * F + x**2 * sin2 * (H - 2.0 * P * b * F)))


def surface_brightness(x, y, surf, s_k, q_obs):
    """``Sigma(x, y) = sum_k surf_k exp(-(x^2 + y^2 / q_k^2) / (2 s_k^2))``."""
    return jnp.sum(surf * jnp.exp(-(x**2 + (y / q_obs) ** 2) / (2.0 * s_k**2)))


# ----------------------------------------------------------------------------- PSF x spaxel, analytic
def smooth_1d(alpha, x, s2, p, box, second=True):
    """Kernel averages of ``exp(-alpha u^2)`` and ``u^2 exp(-alpha u^2)`` at ``x``.

    Kernel: a Gaussian of variance ``s2`` convolved with a box of width ``p`` (``box``
    static).  With ``g = 1 + 2 alpha s2`` the Gaussian step gives ``exp(-alpha x^2 / g) /
    sqrt(g)`` and ``exp(-alpha x^2 / g) / sqrt(g) (s2 / g + x^2 / g^2)`` (product of
    Gaussians); the box average of ``exp(-c t^2)`` over ``[x - p/2, x + p/2]`` is an erfc
    difference, and of ``t^2 exp(-c t^2)`` follows by parts.  ``second=False`` skips the
    second average (returned as None).
    """
    g = 1.0 + 2.0 * alpha * s2
    c = alpha / g
    if not box:
        e = jnp.exp(-c * x**2) / jnp.sqrt(g)
        return e, (e * (s2 / g + x**2 / g**2) if second else None)
    ax = jnp.abs(x)                   # both averages are even in x
    norm = 1.0 / (p * jnp.sqrt(g))
    if not second:
        return norm * _box_moment0(c, ax - 0.5 * p, ax + 0.5 * p), None
    i0, i2 = _box_moments(c, ax - 0.5 * p, ax + 0.5 * p)
    return norm * i0, norm * (s2 / g * i0 + i2 / g**2)


@jax.custom_jvp
def _box_moments(c, lo, hi):
    """``(int_lo^hi exp(-c t^2) dt, int_lo^hi t^2 exp(-c t^2) dt)`` for ``hi >= |lo|``.

    The first as ``erfc(rc lo) - erfc(rc hi) = erf(rc hi) - erf(rc lo)`` (``rc = sqrt c``):
    no cancellation in the far tail, and at most ~1e-14 relative where both arguments are
    small (``rc p >= p / (sqrt 2 max width)``); the second by parts,
    ``[-t exp(-c t^2) / (2c)] + i0 / (2c)``.  The derivatives (custom JVP) reuse the two
    exponentials: ``d i0/dc = -i2``, ``d i2/dc = -i4``, and the end-point values for
    ``lo`` and ``hi``; with autodiff the gradient of a V_rms map cost about 7x its value.
    """
    i0, i2, _, _ = box_integrals(c, lo, hi)
    return i0, i2


@jax.custom_jvp
def _box_moment0(c, lo, hi):
    """The first of :func:`_box_moments` alone (its derivative needs the second)."""
    return box_integrals(c, lo, hi)[0]


@_box_moment0.defjvp
def _box_moment0_jvp(primals, tangents):
    c, lo, hi = primals
    dc, dlo, dhi = tangents
    i0, i2, e_lo, e_hi = box_integrals(c, lo, hi)
    return i0, -i2 * dc + e_hi * dhi - e_lo * dlo


def box_integrals(c, lo, hi):
    """``(i0, i2, e_lo, e_hi)``: ``i_m = int_lo^hi t^m exp(-c t^2) dt`` (``hi >= |lo|``, see
    :func:`_box_moments`) and the end-point values ``exp(-c lo^2)``, ``exp(-c hi^2)``."""
    rc = jnp.sqrt(c)
    e_lo = jnp.exp(-c * lo**2)
    e_hi = jnp.exp(-c * hi**2)
    i0 = 0.5 * jnp.sqrt(jnp.pi) / rc * (erfc(rc * lo) - erfc(rc * hi))
    i2 = (lo * e_lo - hi * e_hi + i0) / (2.0 * c)
    return i0, i2, e_lo, e_hi


@_box_moments.defjvp
def _box_moments_jvp(primals, tangents):
    c, lo, hi = primals
    dc, dlo, dhi = tangents
    i0, i2, e_lo, e_hi = box_integrals(c, lo, hi)
    i4 = (lo**3 * e_lo - hi**3 * e_hi + 3.0 * i2) / (2.0 * c)
    di0 = -i2 * dc + e_hi * dhi - e_lo * dlo
    di2 = -i4 * dc + hi**2 * e_hi * dhi - lo**2 * e_lo * dlo
    return (i0, i2), (di0, di2)


def projected_second_moment_smoothed(x, y, tr, ms, sin2, s_c, p, box, quad=QUAD):
    """``Sigma <v_los^2>`` (C08 eq. 28) convolved with one circular Gaussian PSF of dispersion
    ``s_c`` and averaged over a square spaxel of side ``p``, at one sky point, exactly.

    Each ``v`` node of eq. 28 is ``sqrt(pi/a) exp(-P x^2 - S y^2) (A + B x^2)`` with
    ``S = P Q / a``: separable Gaussians in ``x`` and ``y`` aligned with the kernel, whose
    convolutions are closed forms (:func:`smooth_1d`; C08 Appendix A done analytically).
    The ``v`` nodes follow the closest approach of the kernel to the centre,
    ``d - p / sqrt(2) - 9 s_c``, and include the scale ``s_j / s_c`` where the smoothing
    takes over; the black hole's smoothed integrand decays only like ``v^-3``, so its
    range ends at ``9e4 / min(s_k, s_c)`` (tail < 1e-9 relative).
    """
    nu0, s_k, p_k, b_k = tr
    cos2 = 1.0 - sin2
    d = jnp.sqrt(x**2 + y**2)
    reach = (0.7071067811865476 * p if box else 0.0) + _CUT * s_c
    floor = 1e-4 * jnp.where(s_c > 0, jnp.minimum(jnp.min(s_k), s_c), jnp.min(s_k))
    d_eff = jnp.maximum(d - reach, floor)
    w, P, Q, F, H, C = _pair_terms(d_eff, tr, ms, quad, jnp.maximum(s_c, 1e-300))
    a = P * sin2 + Q * cos2
    S = P * Q / a
    s2 = s_c**2
    x0, x2 = smooth_1d(P, x, s2, p, box)
    y0, _ = smooth_1d(S, y, s2, p, box)
    b = b_k[:, None, None]
    A = (b * sin2 + cos2) * F
    B = sin2 * (H - 2.0 * P * b * F)
    return jnp.sum(C * w * jnp.sqrt(jnp.pi / a) * y0 * (A * x0 + B * x2))


def surface_brightness_smoothed(x, y, surf, s_k, q_obs, s_c, p, box):
    """MGE surface brightness convolved with one Gaussian PSF and a square spaxel (exact)."""
    x0, _ = smooth_1d(0.5 / s_k**2, x, s_c**2, p, box)
    y0, _ = smooth_1d(0.5 / (s_k * q_obs) ** 2, y, s_c**2, p, box)
    return jnp.sum(surf * x0 * y0)
