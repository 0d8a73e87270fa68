"""Rotation of the cylindrically aligned JAM tabulated in the meridional plane.

The first moment needs, for every tracer Gaussian ``k`` and at every point ``(R, z)`` of
every line of sight, the excess ``[nu v_phi^2]_k - [nu sigma_phi^2]_k`` (Cappellari 2008
eqs. 34-35 with ``sigma_phi = sigma_R``; :mod:`dynamics.jam_cyl`)::

    excess_k = R^2 sum_j C int (H - 2 b_k P F) exp(-P R^2 - Q z^2) dv.

Divided by ``nu_k = nu0_k exp(-R^2 / (2 s_k^2) - z^2 / (2 s_k^2 p_k^2))`` it is a smooth,
bounded field (km/s)^2,

    u_k(R, z) = R^2 sum_n a_kn exp(-alpha_n R^2) exp(-gamma_n z^2),
    a = C w (H - 2 b_k P F) / nu0_k,  alpha = P - 1/(2 s_k^2) >= 0,  gamma = Q - 1/(2 s_k^2 p_k^2) >= 0,

on the ``v`` nodes shared by all points (:mod:`dynamics.jam_cyl_separable`): on a product
grid of ``R`` and ``z`` it is one matrix product per tracer Gaussian.  We tabulate it on
``R = r0 sinh(xi)``, ``z = r0 sinh(eta)`` with uniform steps in ``xi`` and ``eta``
(``r0`` a sixteenth of the smallest tracer width: fine steps at the centre, logarithmic
outside, so a black hole's scale-free rotation is followed inwards) and interpolate along
the lines of sight with the tensor-product 4-point Lagrange rule (error ~ h^4; ``u_k`` is
even in ``R`` and ``z``, so the table is mirrored about zero).  With 128 points per axis
the excess ``nu_k u_k`` is interpolated to ~1e-5 of its largest value next to a black hole
and ~1e-7 elsewhere (``tests/dynamics/test_jam_cyl_rotation.py``).  A line of sight then costs an interpolation per node instead of a ``v``
quadrature over every pair of Gaussians.
"""

import jax
import jax.numpy as jnp

from . import jam_cyl_separable as sep

__all__ = ["RotationTable", "rotation_table", "interpolate"]


class RotationTable:
    """``u_k`` on the grid: ``values`` (n + 3, n + 3, K) padded for the 4-point stencil,
    ``r0`` (kpc) and ``h`` (step in ``xi`` and ``eta``); a pytree."""

    def __init__(self, values, r0, h):
        self.values, self.r0, self.h = values, r0, h


jax.tree_util.register_pytree_node(RotationTable, lambda t: ((t.values, t.r0, t.h), None),
                                   lambda _, c: RotationTable(*c))


def rotation_table(tr, flat, round_, m_bh, r_max, n, quad):
    """Tabulate ``u_k`` (module docstring) up to ``r_max`` (kpc) in ``R`` and ``z``.

    ``tr = (nu0, s_k, p_k, b_k)``; ``flat = (M_j, s_j, e2_j)`` of the flattened mass
    Gaussians or None; ``round_ = (M_j, s_j)`` of the round ones or None; ``m_bh`` the
    point mass; ``n`` (static) grid points per axis; ``quad`` the ``v`` rule.
    """
    nu0, s_k, p_k, b_k = tr
    r0 = jnp.min(s_k) / 16.0
    xi_max = jnp.arcsinh(r_max / r0)
    h = xi_max / (n - 1)
    grid = r0 * jnp.sinh(h * jnp.arange(n))
    d_min = 1e-4 * r0                        # the black hole's v range ends at 9 / d_min
    parts = []
    if flat is not None:
        w, P, Q, F, H, C = sep.gaussian_factors(tr, *flat, r_max, 0.0, quad)
        K = s_k.shape[0]
        parts.append(tuple(jnp.broadcast_to(v, w.shape).reshape(K, -1) for v in (w, P, Q, F, H, C)))
    if round_ is not None or m_bh is not None:
        m_r, s_r = round_ if round_ is not None else (jnp.zeros(1), jnp.ones(1))
        bh = 0.0 if m_bh is None else m_bh
        w, P, Q, F, H, C = sep.spherical_factors(tr, m_r, s_r, bh, r_max, d_min, 0.0, quad)
        parts.append(tuple(jnp.broadcast_to(v, w.shape) for v in (w, P, Q, F, H, C)))
    w, P, Q, F, H, C = (jnp.concatenate(v, axis=1) for v in zip(*parts))
    a = C * w * (H - 2.0 * b_k[:, None] * P * F) / nu0[:, None]                     # (K, N)
    alpha = P - 0.5 / s_k[:, None] ** 2
    gamma = Q - 0.5 / (s_k * p_k)[:, None] ** 2
    er = jnp.exp(-alpha[:, None, :] * grid[None, :, None] ** 2)                      # (K, n, N)
    ez = jnp.exp(-gamma[:, :, None] * grid[None, None, :] ** 2)                      # (K, N, n)
    u = grid[None, :, None] ** 2 * jnp.matmul(er * a[:, None, :], ez)               # (K, n, n)
    u = jnp.moveaxis(u, 0, -1)                                                      # (n, n, K)
    # mirror one row/column below zero (u is even), repeat the last two beyond the end
    u = jnp.concatenate([u[1:2], u, u[-1:], u[-1:]], axis=0)
    u = jnp.concatenate([u[:, 1:2], u, u[:, -1:], u[:, -1:]], axis=1)
    return RotationTable(u, r0, h)


def _lagrange4(t):
    """Weights of the 4-point Lagrange rule on nodes -1, 0, 1, 2 at ``t`` in [0, 1]."""
    return jnp.stack([-t * (t - 1.0) * (t - 2.0) / 6.0, (t + 1.0) * (t - 1.0) * (t - 2.0) / 2.0,
                      -(t + 1.0) * t * (t - 2.0) / 2.0, (t + 1.0) * t * (t - 1.0) / 6.0], axis=-1)


def interpolate(table, R, z):
    """``u_k`` at one point ``(R, z)`` (kpc, ``R >= 0``): shape (K,).  Beyond the table the
    last value is kept (the tables reach 12 widths beyond every tracer Gaussian)."""
    n = table.values.shape[0] - 3

    def locate(r):
        xi = jnp.minimum(jnp.arcsinh(r / table.r0) / table.h, n - 1.0)
        j = jnp.clip(jnp.floor(xi), 0, n - 2).astype(int)
        return j, _lagrange4(xi - j)

    i, wi = locate(R)
    j, wj = locate(jnp.abs(z))
    m = table.values.shape[1]
    rows = ((i + jnp.arange(4))[:, None] * m + (j + jnp.arange(4))[None, :]).reshape(-1)
    block = jnp.take(table.values.reshape(-1, table.values.shape[2]), rows, axis=0)     # (16, K)
    return (wi[:, None] * wj[None, :]).reshape(-1) @ block
