"""Cylindrically aligned JAM V_rms on quadrature nodes shared by every sky point.

At one node of the ``v`` integral, C08 eq. 28 (see :mod:`dynamics.jam_cyl`) is
``c sqrt(pi/a) exp(-P x^2 - S y^2) (A + B x^2)`` with ``S = P Q / a``,
``A = (b sin^2 i + cos^2 i) F`` and ``B = sin^2 i (H - 2 P b F)``: a Gaussian in ``x``
times a Gaussian in ``y``.  A circular Gaussian PSF and a square spaxel aligned with
``x`` and ``y`` keep it separable (:func:`dynamics.jam_cyl.smooth_1d`).  If the nodes do
not depend on the sky point, the whole map is therefore

    Sigma <v_los^2> (x, y) = sum_n c_n Y_n(y) [A_n X0_n(x) + B_n X2_n(x)],

a sum of products of one function of ``x`` and one of ``y``: on a grid of spaxels
(``n_x`` distinct ``|x|``, ``n_y`` distinct ``|y|``) it costs ``N (n_x + n_y)``
one-dimensional kernels and one ``(n_x, N) x (N, n_y)`` matrix product, instead of
``N n_x n_y`` two-dimensional terms.  The nodes must then resolve every scale that
any point needs, which fixes their ranges from the extent of the data:

* Flattened (MGE) mass Gaussians ``j``, for each tracer Gaussian ``k``: ``v`` in
  ``[0, v_lo]`` and ``M`` geometric panels on ``[v_lo, 1/q_j]`` with
  ``v_lo = min(0.1 s_j / D_k, 1 / (81 q_j))``, ``D_k = max(d_max, s_k / p_k, s_c)``
  (``d_max`` the largest distance of a point, or of its PSF and spaxel footprint, from
  the centre): the integrand's scales ``s_j / d``, ``s_j / s_k``, ``s_j / (s_k p_k)``
  and ``s_j / s_c`` all lie above ``v_lo``.

* Round mass Gaussians (a spherical halo expanded by :func:`dynamics.fit_mge_weights`)
  and the black hole: in ``t = v / s_j`` every factor is the same for all ``j``,
  ``P = 1/(2 s_k^2) + t^2/2``, ``Q = 1/(2 s_k^2 p_k^2) + t^2/2``, ``F = s_j^2 t^2 / (2 Q)``,
  ``H = s_j^2 t^2`` and ``C dv = sqrt(2/pi) G nu0_k M_j / s_j^2 dt``, so the sum over
  ``j`` of integrals over ``t`` in ``[0, 1/s_j]`` is one integral with the step weight
  ``mu(t) = M_BH + sum_j M_j [t < 1/s_j]`` (a point mass is the limit ``s_j -> 0``).  We
  integrate it on panels whose edges are the breakpoints ``1/s_j`` and ``2 M + 1``
  geometric points on ``[t_lo, t_end]`` (``t_lo = 0.1 / D_k``, ``t_end = 9 / d_min``
  with ``d_min`` the closest approach of a point or of its kernel to the centre, floored
  at ``1e-4`` of the smallest tracer or PSF width, or ``1e-8`` tracer widths without a
  PSF, as :mod:`dynamics.jam_cyl` does), ``mu`` constant on each: the cost is that of one
  mass component instead of one per Gaussian.

Each panel carries an ``order``-point Gauss-Legendre rule (``quad = (M, order)``).
Accuracy against a converged reference on the issue-9 problem (12 tracer Gaussians,
NFW halo as 32 Gaussians, black hole, PSF and spaxels): see
``tests/benchmarks/bench_jam.py``; ``tests/dynamics/test_jam.py`` compares with the
per-point adaptive rules of :mod:`dynamics.jam_cyl` and with brute-force quadrature.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy

from .constants import G
from ._quadrature import gauss_legendre
from .jam_cyl import box_integrals, smooth_1d

__all__ = ["Nodes", "gaussian_nodes", "spherical_nodes", "gaussian_factors", "spherical_factors", "nodes_sum", "nodes_grid", "kernel_parts",
           "product_grid"]

_CUT = 9.0
_SQRT_2_PI = 0.7978845608028654       # sqrt(2 / pi)


class Nodes(NamedTuple):
    """Flattened nodes of the separable form (all shape ``(N,)``)."""

    coef: jax.Array       # c_n sqrt(pi / a_n) (weights included)
    A: jax.Array
    B: jax.Array
    P: jax.Array          # precision of the Gaussian in x
    S: jax.Array          # precision of the Gaussian in y


def _panels(edges, order):
    """Gauss-Legendre nodes on consecutive panels between ``edges`` (leading shape kept)."""
    x, w = gauss_legendre(order)
    x = jnp.asarray(0.5 * (x + 1.0))
    w = jnp.asarray(0.5 * w)
    lo = edges[..., :-1, None]
    width = jnp.diff(edges, axis=-1)[..., None]
    shape = edges.shape[:-1] + ((edges.shape[-1] - 1) * order,)
    return (lo + width * x).reshape(shape), (width * w).reshape(shape)


def _geometric(lo, hi, m):
    """``m + 1`` geometric points from ``lo`` to ``hi`` (trailing axis)."""
    f = jnp.arange(m + 1) / m
    return lo[..., None] * (hi / lo)[..., None] ** f


def _combine(w, P, Q, F, H, C, b, sin2):
    """Nodes of eq. 28 from the factors (any common shape), flattened."""
    cos2 = 1.0 - sin2
    a = P * sin2 + Q * cos2
    coef = C * w * jnp.sqrt(jnp.pi / a)
    A = (b * sin2 + cos2) * F
    B = sin2 * (H - 2.0 * P * b * F)
    return Nodes(coef.reshape(-1), A.reshape(-1), B.reshape(-1), P.reshape(-1), (P * Q / a).reshape(-1))


def gaussian_nodes(tr, m_j, s_j, e2_j, sin2, d_max, s_c, quad):
    """Nodes of the (tracer k, flattened mass Gaussian j) pairs, ``K J (M + 1) order`` of them.

    ``tr = (nu0, s_k, p_k, b_k)``; ``m_j, s_j, e2_j`` the mass Gaussians' totals (Msun),
    widths (kpc) and intrinsic ellipticities ``1 - q_j^2``; ``d_max`` (kpc) the extent of
    the data and ``s_c`` the PSF dispersion (0 without PSF).
    """
    return _combine(*gaussian_factors(tr, m_j, s_j, e2_j, d_max, s_c, quad), tr[3][:, None, None], sin2)


def spherical_nodes(tr, m_j, s_j, m_bh, sin2, d_max, d_min, s_c, quad):
    """Nodes of the round mass Gaussians (totals ``m_j``, widths ``s_j``) and a point mass
    ``m_bh``, merged in ``t = v / s_j`` (module docstring): ``K (J + 2 M + 1) order`` nodes."""
    return _combine(*spherical_factors(tr, m_j, s_j, m_bh, d_max, d_min, s_c, quad), tr[3][:, None], sin2)


def gaussian_factors(tr, m_j, s_j, e2_j, d_max, s_c, quad):
    """``(w, P, Q, F, H, C)`` of :mod:`dynamics.jam_cyl` on the shared nodes of the
    flattened mass Gaussians, shape ``(K, J, N)`` (``C``: ``(K, J, 1)``).

    ``tr = (nu0, s_k, p_k, b_k)``; ``m_j, s_j, e2_j`` the mass Gaussians' totals (Msun),
    widths (kpc) and intrinsic ellipticities ``1 - q_j^2``; ``d_max`` (kpc) the extent of
    the data and ``s_c`` the PSF dispersion (0 without PSF).
    """
    nu0, s_k, p_k, b_k = tr
    m, order = quad
    reach = jnp.maximum(jnp.maximum(d_max, s_k / p_k), s_c)                       # (K,)
    v_hi = 1.0 / jnp.sqrt(1.0 - e2_j)                                               # (J,)
    v_lo = jnp.minimum(0.1 * s_j[None, :] / reach[:, None], v_hi[None, :] / 81.0)   # (K, J)
    edges = _geometric(v_lo, jnp.broadcast_to(v_hi, v_lo.shape), m)
    edges = jnp.concatenate([jnp.zeros(edges.shape[:-1] + (1,)), edges], axis=-1)
    v, w = _panels(edges, order)                                                    # (K, J, N)
    v2 = v**2
    sj2 = (s_j**2)[None, :, None]
    den = 1.0 + e2_j[None, :, None] * v2
    sk = s_k[:, None, None]
    P = 0.5 / sk**2 + v2 / (2.0 * sj2 * den)
    Q = 0.5 / (sk * p_k[:, None, None]) ** 2 + v2 / (2.0 * sj2)
    F = v2 / (2.0 * Q * den)
    H = v2 / den**2
    C = (_SQRT_2_PI * G * m_j[None, :] * nu0[:, None] / s_j[None, :] ** 3)[..., None]
    return w, P, Q, F, H, C


def spherical_factors(tr, m_j, s_j, m_bh, d_max, d_min, s_c, quad):
    """``(w, P, Q, F, H, C)`` on the merged nodes of the round mass Gaussians and the point
    mass (``w`` includes the step weight ``mu``), shape ``(K, T)`` (``C``: ``(K, 1)``)."""
    nu0, s_k, p_k, b_k = tr
    m, order = quad
    reach = jnp.maximum(jnp.maximum(d_max, s_k / p_k), s_c)                         # (K,)
    t_lo = 0.1 / reach
    t_end = jnp.maximum(_CUT / d_min, 2.0 * t_lo)
    breaks = 1.0 / s_j                                                              # (J,)
    geo = _geometric(t_lo, jnp.broadcast_to(t_end, t_lo.shape), 2 * m)              # (K, 2m + 1)
    edges = jnp.sort(jnp.concatenate([jnp.broadcast_to(breaks, (s_k.shape[0], breaks.shape[0])), geo],
                                     axis=-1), axis=-1)
    edges = jnp.concatenate([jnp.zeros(edges.shape[:-1] + (1,)), edges], axis=-1)
    # mass whose Gaussians reach beyond each panel: mu = M_BH + sum_j M_j [1/s_j >= right edge]
    right = edges[..., 1:]                                                          # (K, panels)
    mu = m_bh + jnp.sum(jnp.where(breaks[None, None, :] >= right[..., None], m_j, 0.0), axis=-1)
    t, w = _panels(edges, order)                                                    # (K, panels * order)
    w = w * jnp.repeat(mu, order, axis=-1)
    t2 = t**2
    sk = s_k[:, None]
    P = 0.5 / sk**2 + 0.5 * t2
    Q = 0.5 / (sk * p_k[:, None]) ** 2 + 0.5 * t2
    F = t2 / (2.0 * Q)
    C = (_SQRT_2_PI * G * nu0)[:, None]
    return w, P, Q, F, t2, C


def nodes_sum(nodes, x, y, s2, p, box, batch=64):
    """``sum_n c_n Y_n(y) [A_n X0_n(x) + B_n X2_n(x)]`` at points ``x``, ``y`` (1-D, traced
    allowed), in batches of points."""
    def one(xy):
        xb, yb = xy
        x0, x2 = smooth_1d(nodes.P[:, None], xb[None, :], s2, p, box)
        y0, _ = smooth_1d(nodes.S[:, None], yb[None, :], s2, p, box, second=False)
        return jnp.sum(nodes.coef[:, None] * y0 * (nodes.A[:, None] * x0 + nodes.B[:, None] * x2), axis=0)

    n = x.shape[0]
    nb = -(-n // batch)
    pad = nb * batch - n
    xp = jnp.concatenate([x, jnp.full(pad, x[0])]).reshape(nb, batch)
    yp = jnp.concatenate([y, jnp.full(pad, y[0])]).reshape(nb, batch)
    return jax.lax.map(one, (xp, yp)).reshape(-1)[:n]


def nodes_grid(nodes, ux, uy, s2, p, box):
    """The same sum on the product grid ``ux x uy``: shape ``(len(ux), len(uy))``.

    ``ux``, ``uy`` concrete (numpy, >= 0); ``s2`` (PSF variance) and ``p`` (spaxel side)
    may be traced.  The derivatives are written out (:func:`_grid_jvp`) and the nodes go
    in blocks of ``_CHUNK`` (kernels in cache): automatic differentiation of the kernels
    made a gradient cost about 7x the value, the explicit form about 3x.
    """
    ux = numpy.asarray(ux, dtype=float)
    uy = numpy.asarray(uy, dtype=float)
    return _grid(tuple(ux), tuple(uy), bool(box), nodes.P, nodes.S, nodes.coef, nodes.A, nodes.B,
                 jnp.asarray(s2, dtype=float), jnp.asarray(p, dtype=float))


def kernel_parts(alpha, u, s2, p, box):
    """``(X0, X2, dX0/dalpha, dX2/dalpha, dX0/ds2, dX2/ds2, dX0/dp, dX2/dp)`` of
    :func:`dynamics.jam_cyl.smooth_1d` (``X0``, ``X2`` its two averages, ``u >= 0``).

    With ``g = 1 + 2 alpha s2``, ``r = 1/g``, ``c = alpha r`` (``dc/dalpha = r^2``,
    ``dc/ds2 = -2 alpha^2 r^2``, ``dr/dalpha = -2 s2 r^2``, ``dr/ds2 = -2 alpha r^2``) and,
    with a box, ``X0 = n i0``, ``X2 = n (s2 r i0 + r^2 i2)``, ``n = sqrt(r) / p``, where
    ``i_m = int t^m exp(-c t^2) dt`` over the spaxel (``di0/dc = -i2``, ``di2/dc = -i4``,
    end-point terms for ``p``).  Without a box the Gaussian forms; ``p`` terms are zero.
    """
    g = 1.0 + 2.0 * alpha * s2
    r = 1.0 / g
    c = alpha * r
    dr_da, dr_ds = -2.0 * s2 * r * r, -2.0 * alpha * r * r
    dc_da, dc_ds = r * r, -2.0 * alpha * alpha * r * r
    if not box:
        x0 = jnp.exp(-c * u * u) * jnp.sqrt(r)
        m = s2 * r + u * u * r * r
        x2 = x0 * m
        x0_a = x0 * (-u * u * dc_da + 0.5 * dr_da / r)
        x0_s = x0 * (-u * u * dc_ds + 0.5 * dr_ds / r)
        x2_a = x0_a * m + x0 * (s2 * dr_da + 2.0 * u * u * r * dr_da)
        x2_s = x0_s * m + x0 * (r + s2 * dr_ds + 2.0 * u * u * r * dr_ds)
        zero = jnp.zeros_like(x0)
        return x0, x2, x0_a, x2_a, x0_s, x2_s, zero, zero
    lo, hi = u - 0.5 * p, u + 0.5 * p
    i0, i2, e_lo, e_hi = box_integrals(c, lo, hi)
    i4 = (lo**3 * e_lo - hi**3 * e_hi + 3.0 * i2) / (2.0 * c)
    n = jnp.sqrt(r) / p
    n_a, n_s = 0.5 * n * dr_da / r, 0.5 * n * dr_ds / r
    x0 = n * i0
    x2 = n * (s2 * r * i0 + r * r * i2)
    x0_a = n_a * i0 - n * i2 * dc_da
    x0_s = n_s * i0 - n * i2 * dc_ds
    x2_a = n_a / n * x2 + n * (s2 * dr_da * i0 - s2 * r * i2 * dc_da + 2.0 * r * dr_da * i2 - r * r * i4 * dc_da)
    x2_s = n_s / n * x2 + n * ((r + s2 * dr_ds) * i0 - s2 * r * i2 * dc_ds + 2.0 * r * dr_ds * i2
                               - r * r * i4 * dc_ds)
    i0_p = 0.5 * (e_hi + e_lo)
    i2_p = 0.5 * (hi * hi * e_hi + lo * lo * e_lo)
    x0_p = -x0 / p + n * i0_p
    x2_p = -x2 / p + n * (s2 * r * i0_p + r * r * i2_p)
    return x0, x2, x0_a, x2_a, x0_s, x2_s, x0_p, x2_p


_CHUNK = 1024          # nodes per block: the (block, n_x) kernels stay in the CPU cache


def _blocks(*arrays, fills=(1.0, 1.0, 0.0, 0.0, 0.0)):
    """Pad the node arrays to whole blocks (padding: P = S = 1, weights 0) and reshape."""
    n = arrays[0].shape[0]
    nb = -(-n // _CHUNK)
    pad = nb * _CHUNK - n
    return tuple(jnp.concatenate([a, jnp.full(pad, f)]).reshape(nb, _CHUNK) for a, f in zip(arrays, fills))


def _block_value(ux, uy, box, P, S, coef, A, B, s2, p):
    x0, x2 = smooth_1d(P[None, :], ux[:, None], s2, p, box)                       # (nx, block)
    y0, _ = smooth_1d(S[None, :], uy[:, None], s2, p, box, second=False)
    return (coef * (A * x0 + B * x2)) @ y0.T


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _grid(ux, uy, box, P, S, coef, A, B, s2, p):
    ux, uy = jnp.asarray(ux), jnp.asarray(uy)

    def step(acc, blk):
        return acc + _block_value(ux, uy, box, *blk, s2, p), None

    out, _ = jax.lax.scan(step, jnp.zeros((ux.shape[0], uy.shape[0])), _blocks(P, S, coef, A, B))
    return out


@_grid.defjvp
def _grid_jvp(ux, uy, box, primals, tangents):
    """Tangent from the explicit kernel derivatives (:func:`kernel_parts`), block by block
    (linear in the tangents, so reverse mode transposes it)."""
    P, S, coef, A, B, s2, p = primals
    dP, dS, dcoef, dA, dB, ds2, dp = tangents
    uxa, uya = jnp.asarray(ux)[:, None], jnp.asarray(uy)[:, None]

    def step(acc, blk):
        (P, S, coef, A, B), (dP, dS, dcoef, dA, dB) = blk
        x0, x2, x0_a, x2_a, x0_s, x2_s, x0_p, x2_p = kernel_parts(P[None, :], uxa, s2, p, box)   # (nx, block)
        y0, _, y0_a, _, y0_s, _, y0_p, _ = kernel_parts(S[None, :], uya, s2, p, box)
        mix = A * x0 + B * x2
        left = coef * mix
        d_left = dcoef * mix + coef * (dA * x0 + dB * x2 + dP * (A * x0_a + B * x2_a)
                                        + ds2 * (A * x0_s + B * x2_s) + dp * (A * x0_p + B * x2_p))
        d_y0 = dS * y0_a + ds2 * y0_s + dp * y0_p
        return (acc[0] + left @ y0.T, acc[1] + d_left @ y0.T + left @ d_y0.T), None

    zero = jnp.zeros((len(ux), len(uy)))
    blocks = _blocks(P, S, coef, A, B)
    tangent_blocks = _blocks(dP, dS, dcoef, dA, dB, fills=(0.0,) * 5)
    (out, d_out), _ = jax.lax.scan(step, (zero, zero), (blocks, tangent_blocks))
    return out, d_out


def product_grid(x, y):
    """``(ux, uy, ix, iy)`` when concrete points ``(|x|, |y|)`` lie on a product grid that is
    not much larger than the set of points, else None."""
    if not (isinstance(x, numpy.ndarray) and isinstance(y, numpy.ndarray)):
        return None
    ax, ay = numpy.abs(x.reshape(-1)), numpy.abs(y.reshape(-1))
    ux, ix = numpy.unique(ax, return_inverse=True)
    uy, iy = numpy.unique(ay, return_inverse=True)
    n_pts = len(numpy.unique(ix * len(uy) + iy))
    if len(ux) * len(uy) > 8 * n_pts:
        return None
    return ux, uy, ix.reshape(-1), iy.reshape(-1)
