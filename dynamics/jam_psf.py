"""PSF and spaxel convolution of JAM first-moment maps on a grid (Cappellari 2008, Appendix A).

(V_rms maps are convolved analytically, :func:`dynamics.jam_cyl.projected_second_moment_smoothed`;
the first moment, with its clipped square roots, is not a sum of Gaussians and uses this grid.)

The observed second moment is ``(K * [Sigma <v^2>]) / (K * Sigma)`` with ``K`` the PSF
(a sum of circular Gaussians, weights ``w_c``, dispersions ``s_c``) convolved with a
square spaxel of side ``p`` (C08 eq. A6).  For one Gaussian the kernel separates::

    K_c(u, w) = k_c(u) k_c(w),   k_c(u) = [Phi((u + p/2) / s_c) - Phi((u - p/2) / s_c)] / p

(``Phi`` the normal CDF; the Gaussian density when ``p = 0``).  Both ``k_c`` and the MGE
model are analytic, so the convolution integral, sampled on a regular grid of step
``h``, is a trapezoid sum whose error falls like ``exp(-2 pi^2 s^2 / h^2)`` (with
``s`` the smaller of the PSF dispersion and the model's finest scale): we evaluate the
model on a grid centred on the galaxy (one quadrant, mirrored: the maps are even in
``x`` and ``y``) and form, at every output point, the weighted sums
``h^2 sum_gg' k_c(x - x_g) k_c(y - y_g') f(x_g, y_g')`` exactly at that point (no
interpolation).  A black hole makes the model singular (logarithmically) at the
centre, where a uniform grid converges only like ``h^2``: the grid is therefore
uniform in ``xi`` with ``x = phi(xi) = xi^3 / (xi^2 + a^2)`` (``a = 3 h``, an odd
analytic map, ``phi' ~ 3 xi^2 / a^2`` at the centre), separately in ``x`` and ``y``,
so the sums stay separable, the Jacobian ``phi'(xi)`` vanishes at the singular point
and the trapezoid rule keeps its exponential convergence elsewhere.  Nodes sit at
half-integer multiples of ``h`` in ``xi``, never at the centre.  Spaxels without a PSF are averaged by a 2-D Gauss-Legendre rule.
"""

import jax.numpy as jnp
import numpy
from jax.scipy.special import ndtr

from ._quadrature import gauss_legendre

__all__ = ["kernel_1d", "grid_convolve", "pixel_average_nodes"]

_SPAN = 8.0      # grid margin, in PSF dispersions beyond half a spaxel
_MAP = 10         # width of the central node clustering, in grid steps


def kernel_1d(u, s, p, box):
    """1-D kernel of a Gaussian of dispersion ``s`` convolved with a box of width ``p``.

    ``box`` (static bool) selects the box form; otherwise the Gaussian density.
    """
    if box:
        return (ndtr((u + 0.5 * p) / s) - ndtr((u - 0.5 * p) / s)) / p
    return jnp.exp(-0.5 * (u / s) ** 2) / (jnp.sqrt(2.0 * jnp.pi) * s)


def grid_half_extent(x, y, s, p):
    """Half side (kpc) of the convolution grid: data extent + p/2 + 8 max(s)."""
    return jnp.maximum(jnp.max(jnp.abs(x)), jnp.max(jnp.abs(y))) + 0.5 * p + _SPAN * jnp.max(s)


def grid_size(x, y, s, p, step):
    """Static number of grid steps per half axis (concrete inputs)."""
    x, y, s = numpy.asarray(x), numpy.asarray(y), numpy.asarray(s)      # numpy: no tracers under jit
    ext = max(numpy.abs(x).max(), numpy.abs(y).max()) + 0.5 * float(p) + _SPAN * s.max()
    return int(numpy.ceil(ext / float(step))) + _MAP


def grid_convolve(fields_fn, x, y, s, w, p, box, n_half, odd_x=None):
    """Convolve model fields with the PSF x spaxel kernel at points ``(x, y)``.

    Parameters
    ----------
    fields_fn : callable
        ``fields_fn(xg, yg) -> tuple`` of arrays of the shape of ``xg`` (model on grid
        points; must be even in x and y).
    x, y : arrays (N,)
        Output points (kpc).
    s, w : arrays (C,)
        PSF dispersions (kpc) and weights (summing to 1).
    p : scalar
        Spaxel side (kpc).
    box : bool (static)
        Whether ``p > 0``.
    n_half : int (static)
        Grid steps per half axis; the step is ``grid_half_extent / n_half``.
    odd_x : tuple of bool, optional
        Per field, whether it is odd in ``x`` (first moments) instead of even.
    """
    ext = grid_half_extent(x, y, s, p)
    h = ext / (n_half - _MAP)
    a = _MAP * h
    xi = h * (jnp.arange(n_half, dtype=float) + 0.5)       # the centre (a cusp with a BH) is no node
    g = xi**3 / (xi**2 + a**2)                             # u = phi(xi), clusters nodes at the centre
    jac = (xi**4 + 3.0 * a**2 * xi**2) / (xi**2 + a**2) ** 2
    xg, yg = jnp.meshgrid(g, g, indexing="ij")
    quadrant = fields_fn(xg, yg)
    full_axis = jnp.concatenate([-jnp.flip(g), g])
    full_jac = h * jnp.concatenate([jnp.flip(jac), jac])
    out = []
    odd_x = (False,) * len(quadrant) if odd_x is None else odd_x
    for f, odd in zip(quadrant, odd_x):
        f = jnp.concatenate([(-1.0 if odd else 1.0) * jnp.flip(f, 0), f], axis=0)
        f = jnp.concatenate([jnp.flip(f, 1), f], axis=1)                # (2n, 2n)
        tot = 0.0
        for c in range(s.shape[0]):
            kx = full_jac * kernel_1d(x[:, None] - full_axis, s[c], p, box)      # (N, G)
            ky = full_jac * kernel_1d(y[:, None] - full_axis, s[c], p, box)
            tot = tot + w[c] * jnp.sum(kx * (ky @ f.T), axis=1)
        out.append(tot)
    return out


def pixel_average_nodes(x, y, p, order=6):
    """Gauss-Legendre nodes (N, order^2) and weights (order^2,) over square spaxels of side p."""
    t, wt = gauss_legendre(order)
    t = jnp.asarray(0.5 * t)
    wt = jnp.asarray(0.5 * wt)
    dx, dy = jnp.meshgrid(t, t, indexing="ij")
    ww = (wt[:, None] * wt[None, :]).reshape(-1)
    return x[:, None] + p * dx.reshape(-1), y[:, None] + p * dy.reshape(-1), ww
