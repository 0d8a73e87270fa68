"""Spherical distribution functions: Eddington inversion and Osipkov-Merritt models.

Conventions: kpc, km/s, Msun. Energies are *relative* energies per unit mass,
``E = Psi(r) - v^2 / 2`` with the relative potential ``Psi = -Phi`` (``Phi -> 0`` at
infinity), in (km/s)^2. A distribution function ``f`` is normalised so that its density
moment reproduces the tracer density in the tracer's own units (Msun/kpc^3 for a mass
profile; any normalisation for a tracer), i.e. ``f`` has units of [tracer density] /
(km/s)^3.

Osipkov-Merritt models depend on ``Q = E - L^2 / (2 r_a^2)`` (Osipkov 1979; Merritt 1985)
and have ``beta(r) = r^2 / (r^2 + r_a^2)``; ``r_a = inf`` is the isotropic (Eddington)
model.

References
----------
Eddington A. S. 1916, MNRAS 76, 572.
Binney J. & Tremaine S. 2008, Galactic Dynamics, 2nd ed. (BT08), sect. 4.3.
Osipkov L. P. 1979, Pis'ma Astron. Zh. 5, 77; Merritt D. 1985, AJ 90, 1027.
Hernquist L. 1990, ApJ 356, 359.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dynamics.constants import G

__all__ = [
    "SphericalDF",
    "eddington_df",
    "osipkov_merritt_df",
    "df_moments",
    "plummer_df",
    "hernquist_df",
]

_INV_SQRT8_PI2 = 1.0 / (math.sqrt(8.0) * math.pi**2)


def _gauss_legendre_unit(n):
    """Gauss-Legendre nodes and weights on [0, 1] (numpy, float64)."""
    x, w = np.polynomial.legendre.leggauss(int(n))
    return 0.5 * (x + 1.0), 0.5 * w


def _check_range(r_min, r_max, n_grid, n_quad):
    if not (np.isfinite(r_min) and np.isfinite(r_max)) or not (0.0 < r_min < r_max):
        raise ValueError(
            f"r_min, r_max must be finite with 0 < r_min < r_max, got r_min={r_min}, r_max={r_max}"
        )
    if int(n_grid) < 16 or int(n_quad) < 8:
        raise ValueError(f"n_grid must be >= 16 and n_quad >= 8, got {n_grid}, {n_quad}")


def _check_r_a(r_a):
    r_a_np = np.asarray(r_a, dtype=float)
    if r_a_np.shape != () or np.isnan(r_a_np) or r_a_np <= 0.0:
        raise ValueError(f"r_a must be a positive scalar (inf for isotropy), got {r_a}")


def _hermite_interp(x, xp, yp, dyp):
    """Cubic Hermite interpolation with given node derivatives; linear beyond the ends."""
    i = jnp.clip(jnp.searchsorted(xp, x, side="right") - 1, 0, xp.shape[0] - 2)
    h = xp[i + 1] - xp[i]
    t = (x - xp[i]) / h
    t2 = t * t
    t3 = t2 * t
    inside = (
        (2 * t3 - 3 * t2 + 1) * yp[i]
        + (t3 - 2 * t2 + t) * h * dyp[i]
        + (-2 * t3 + 3 * t2) * yp[i + 1]
        + (t3 - t2) * h * dyp[i + 1]
    )
    below = yp[0] + dyp[0] * (x - xp[0])
    above = yp[-1] + dyp[-1] * (x - xp[-1])
    return jnp.where(x < xp[0], below, jnp.where(x > xp[-1], above, inside))


class SphericalDF(eqx.Module):
    """A tabulated spherical distribution function ``f(Q)``, ``Q = E - L^2 / (2 r_a^2)``.

    Built by :func:`eddington_df` or :func:`osipkov_merritt_df`. Evaluation is a cubic
    Hermite interpolation, with node derivatives from automatic differentiation, of
    ``y = asinh(f / s(Q))`` against ``ln Q``, ``s(Q) = f_scale (Q/psi0)^scale_slope`` (``y ~ ln f`` where ``f >> f_scale``, so
    power laws such as the Plummer ``Q^{7/2}`` are followed closely; linear through zero,
    so that negative values of an unphysical model are kept). Cheap inside
    ``jit``/``vmap``.

    Attributes
    ----------
    log_q : Array, shape (n,)
        ``ln Q`` of the table nodes, increasing; ``Q`` in (km/s)^2.
    y_table, dy_table : Array, shape (n,)
        ``asinh(f / f_scale)`` and its derivative with respect to ``ln Q``.
    f_table : Array, shape (n,)
        The raw ``f`` at the nodes; negative values mean the model is unphysical
        (e.g. Osipkov-Merritt with too small an ``r_a``, or a cored tracer in a cuspy
        potential).
    f_scale : Array
        Linear-to-logarithmic crossover of the interpolation at the top of the table:
        ``1e-14 max|f|``, or the largest ``-f`` when the table has negative values.
    scale_slope : Array
        The crossover scales as ``f_scale (Q / psi0)^scale_slope``, ``scale_slope`` being
        the logarithmic slope of ``f`` at the low-``Q`` end (so ``f / scale`` stays smooth
        there whatever the sign structure of ``f`` near the top).
    psi0 : Array
        Relative potential at the innermost table radius, (km/s)^2 (``~ Psi(0)``).
    r_a : Array
        Osipkov-Merritt anisotropy radius in kpc (``inf`` for isotropy).
    """

    log_q: jax.Array
    y_table: jax.Array
    dy_table: jax.Array
    f_table: jax.Array
    f_scale: jax.Array
    scale_slope: jax.Array
    psi0: jax.Array
    r_a: jax.Array

    def of_q(self, q):
        """Distribution function at ``Q`` ((km/s)^2); zero for ``Q <= 0``.

        Beyond the table the interpolant continues linearly in ``(ln Q, asinh f)``
        (a power law where ``f >> f_scale``).
        """
        q = jnp.asarray(q)
        q_safe = jnp.where(q > 0, q, 1.0)
        lq = jnp.log(q_safe)
        y = _hermite_interp(lq, self.log_q, self.y_table, self.dy_table)
        scale = self.f_scale * jnp.exp(self.scale_slope * (lq - jnp.log(self.psi0)))
        return jnp.where(q > 0, scale * jnp.sinh(y), 0.0)

    def __call__(self, energy, ang_mom=0.0):
        """``f(E, L)`` for relative energy ``E`` ((km/s)^2) and ``L = r v_t`` (kpc km/s)."""
        q = jnp.asarray(energy) - 0.5 * jnp.asarray(ang_mom) ** 2 / self.r_a**2
        return self.of_q(q)

    def is_physical(self, rtol=1e-10):
        """True when ``f >= 0`` on the whole table (up to ``rtol`` of its maximum)."""
        f = np.asarray(self.f_table)
        return bool(np.all(f >= -rtol * np.max(np.abs(f))))


def _augmented_density(tracer, r_a):
    """``rho_Q(r) = (1 + r^2/r_a^2) rho(r)`` (BT08 eq. 4.67); ``r_a = inf`` gives ``rho``."""

    def rho_q(r):
        return tracer.density(r) * (1.0 + (r / r_a) ** 2)

    return rho_q


@eqx.filter_jit
def _build_table(tracer, mass, r_a, r_min, r_max, n_grid, n_quad, r_out_factor):
    """Eddington / Osipkov-Merritt inversion on a log-radius grid (see eddington_df)."""
    r_a = jnp.asarray(r_a, dtype=float)
    rho_q = _augmented_density(tracer, r_a)

    def psi(r):
        return -mass.potential(r)

    def dpsi(r):  # d Psi / dr = -G M(r) / r^2 (one derivative fewer than grad(psi))
        return -G * mass.enclosed_mass(r) / r**2

    drho = jax.grad(rho_q)

    def g(r):  # d rho_Q / d Psi as a function of r
        return drho(r) / dpsi(r)

    dg = jax.grad(g)

    r_grid = jnp.exp(jnp.linspace(jnp.log(r_min), jnp.log(r_max), n_grid))
    r_out = r_max * r_out_factor
    x_nodes, w_nodes = _gauss_legendre_unit(n_quad)
    x_nodes = jnp.asarray(x_nodes)
    w_nodes = jnp.asarray(w_nodes)

    def f_at(r_q):
        # Eddington 1916; BT08 eq. 4.46(b) with Psi -> r:
        #   sqrt(8) pi^2 f(Q) = int_{r_Q}^{r_out} (-dg/dr) dr / sqrt(Q - Psi(r))
        #                       + g(r_out) / sqrt(Q - Psi(r_out)),
        # the boundary term being the truncated form of (d rho/d Psi)_{Psi=0} / sqrt(Q).
        # ln r = ln r_Q + s^2 removes the inverse-square-root singularity at r_Q.
        q = psi(r_q)
        s_max = jnp.sqrt(jnp.log(r_out / r_q))
        s = s_max * x_nodes
        r = r_q * jnp.exp(s**2)
        gap = q - jax.vmap(psi)(r)
        integrand = -jax.vmap(dg)(r) * 2.0 * s * r / jnp.sqrt(jnp.where(gap > 0, gap, jnp.inf))
        integral = s_max * jnp.sum(w_nodes * integrand)
        boundary = g(r_out) / jnp.sqrt(q - psi(r_out))
        return q, _INV_SQRT8_PI2 * (integral + boundary)

    def node(r_q):
        # value and d/d ln r of (Q, f) at one table radius (forward mode)
        (q, f), (dq, df) = jax.jvp(f_at, (r_q,), (r_q,))
        return q, f, df / dq * q  # d f / d ln Q

    q_tab, f_tab, dfdlq = jax.lax.map(node, r_grid, batch_size=64)
    # radius increases -> Q decreases; store increasing in Q
    q_tab, f_tab, dfdlq = q_tab[::-1], f_tab[::-1], dfdlq[::-1]
    # log-like above f_scale, linear below; a table that changes sign gets f_scale at
    # least its most negative |f|, so the interpolant stays smooth through the zero
    f_scale = jnp.maximum(1e-14 * jnp.max(jnp.abs(f_tab)), jnp.max(-f_tab))
    slope = jnp.clip(dfdlq[0] / f_tab[0], 0.0, 20.0)
    log_q = jnp.log(q_tab)
    scale = f_scale * jnp.exp(slope * (log_q - log_q[-1]))
    u = f_tab / scale
    return SphericalDF(
        log_q=log_q,
        y_table=jnp.arcsinh(u),
        dy_table=(dfdlq / scale - slope * u) / jnp.sqrt(1.0 + u * u),
        f_table=f_tab,
        f_scale=f_scale,
        scale_slope=slope,
        psi0=q_tab[-1],
        r_a=r_a,
    )


def eddington_df(tracer, mass, *, r_min=1e-6, r_max=1e6, n_grid=512, n_quad=128,
                 r_out_factor=1e3):
    """Isotropic distribution function of a tracer in a potential, by Eddington inversion.

    Computes, on a table of ``Q = Psi(r_k)`` for log-spaced ``r_k``,

    .. math:: f(E) = \\frac{1}{\\sqrt{8}\\pi^2}\\left[\\int_0^E \\frac{d^2\\rho}{d\\Psi^2}
              \\frac{d\\Psi}{\\sqrt{E-\\Psi}} + \\frac{1}{\\sqrt{E}}
              \\left(\\frac{d\\rho}{d\\Psi}\\right)_{\\Psi=0}\\right]

    (Eddington 1916; BT08 eq. 4.46b), with ``d rho/d Psi`` and ``d^2 rho/d Psi^2`` taken by
    automatic differentiation along ``r`` and the integral done in ``s``,
    ``ln r = ln r_Q + s^2`` (Gauss-Legendre), which is smooth at the ``1/sqrt`` endpoint.

    Parameters
    ----------
    tracer : profile
        Any object with ``.density(r)`` (scalar ``r`` in kpc); any normalisation.
    mass : profile
        The total mass profile, with ``.potential(r)`` in (km/s)^2 vanishing at infinity.
    r_min, r_max : float
        Radius range of the table in kpc (``Q`` from ``Psi(r_max)`` to ``Psi(r_min)``);
        cover well inside and outside the scale radii.
    n_grid, n_quad : int
        Table size and number of Gauss-Legendre nodes per energy.
    r_out_factor : float
        The radial integrals run to ``r_max * r_out_factor``.

    Returns
    -------
    SphericalDF
        With ``r_a = inf``; call it as ``df(E)``.

    Examples
    --------
    >>> df = eddington_df(Plummer(1e6, 0.3), Plummer(1e6, 0.3))  # doctest: +SKIP
    >>> df(0.5 * df.psi0)  # doctest: +SKIP
    """
    _check_range(r_min, r_max, n_grid, n_quad)
    return _build_table(tracer, mass, jnp.inf, float(r_min), float(r_max), int(n_grid), int(n_quad),
                        float(r_out_factor))


def osipkov_merritt_df(tracer, mass, r_a, *, r_min=1e-6, r_max=1e6, n_grid=512, n_quad=128,
                       r_out_factor=1e3):
    """Osipkov-Merritt distribution function ``f(Q)``, ``Q = E - L^2/(2 r_a^2)``.

    Eddington's inversion applied to the augmented density
    ``rho_Q(r) = (1 + r^2/r_a^2) rho(r)`` (Osipkov 1979; Merritt 1985; BT08 eq. 4.67);
    the model has ``beta(r) = r^2/(r^2 + r_a^2)``. Small ``r_a`` can make ``f`` negative
    (unphysical): check :meth:`SphericalDF.is_physical`.

    Parameters
    ----------
    tracer, mass : profiles
        As in :func:`eddington_df`.
    r_a : float
        Anisotropy radius in kpc, ``> 0`` (``inf`` gives the isotropic model).
    r_min, r_max, n_grid, n_quad, r_out_factor
        As in :func:`eddington_df`.

    Returns
    -------
    SphericalDF
        Call it as ``df(E, L)``.
    """
    _check_r_a(r_a)
    _check_range(r_min, r_max, n_grid, n_quad)
    return _build_table(tracer, mass, jnp.asarray(r_a, dtype=float), float(r_min), float(r_max),
                        int(n_grid), int(n_quad), float(r_out_factor))


def df_moments(df, r, mass, *, n_quad=96):
    """Density and velocity dispersions implied by an (Osipkov-Merritt) DF at radius ``r``.

    With ``k^2 = 1 + r^2/r_a^2`` and ``w^2 = v_r^2 + k^2 v_t^2`` the DF is isotropic in
    ``(v_r, k v_t)``, so (BT08 eqs. 4.43, 4.67)

    ``rho k^2 = 4 pi int_0^{sqrt(2 Psi)} f(Psi - w^2/2) w^2 dw``,
    ``sigma_r^2 = <w^2>/3``, ``sigma_theta^2 = sigma_r^2 / k^2``.

    Parameters
    ----------
    df : SphericalDF
    r : float or Array
        Radius in kpc (any shape).
    mass : profile
        The potential the DF was built in.
    n_quad : int
        Gauss-Legendre nodes over ``w``.

    Returns
    -------
    density : Array
        Tracer density (units of the tracer profile), shape of ``r``.
    sigma_r2, sigma_t2 : Array
        Radial and one-component tangential velocity dispersion squared, (km/s)^2.
    """
    r = jnp.asarray(r, dtype=float)
    return _df_moments(df, r, mass, n_quad=int(n_quad))


@eqx.filter_jit
def _df_moments(df, r, mass, *, n_quad):
    x, w = _gauss_legendre_unit(n_quad)
    x = jnp.asarray(x)
    w = jnp.asarray(w)

    def one(r1):
        psi = -mass.potential(r1)
        w_esc = jnp.sqrt(2.0 * psi)
        fx = df.of_q(psi * (1.0 - x**2))
        m0 = 4.0 * jnp.pi * w_esc**3 * jnp.sum(w * fx * x**2)
        m2 = 4.0 * jnp.pi * w_esc**5 * jnp.sum(w * fx * x**4)
        k2 = 1.0 + (r1 / df.r_a) ** 2
        sig_r2 = m2 / (3.0 * m0)
        return m0 / k2, sig_r2, sig_r2 / k2

    out = jax.vmap(one)(r.reshape(-1))
    return tuple(o.reshape(r.shape) for o in out)


def plummer_df(energy, ang_mom, m_tot, r_s, r_a=jnp.inf):
    """Closed-form Plummer distribution function, isotropic or Osipkov-Merritt.

    With ``C = 3 a^2 / (4 pi G^5 M^4)`` (so that ``rho = C Psi^5``) and
    ``rho_Q = C[(1 - a^2/r_a^2) Psi^5 + (G M / r_a)^2 Psi^3]``, Eddington's formula for
    ``Psi^n`` (``Gamma(n+1)/Gamma(n-1/2) Q^{n-3/2}``) gives

    ``f(Q) = C / (sqrt(8) pi^2) [(1 - a^2/r_a^2) (128/7) Q^{7/2} + 8 (G M/r_a)^2 Q^{3/2}]``,

    which for ``r_a = inf`` is ``24 sqrt(2) a^2 Q^{7/2} / (7 pi^3 G^5 M^4)`` (BT08 eq. 4.83;
    Dejonghe 1987 for the anisotropic case). Normalised to the mass density.

    Parameters
    ----------
    energy : Array
        Relative energy ``E`` in (km/s)^2.
    ang_mom : Array
        Angular momentum ``L`` in kpc km/s.
    m_tot : float
        Total mass in Msun.
    r_s : float
        Plummer scale radius ``a`` in kpc.
    r_a : float
        Osipkov-Merritt radius in kpc (default ``inf``: isotropic).

    Returns
    -------
    Array
        ``f`` in Msun kpc^-3 (km/s)^-3, zero for ``Q <= 0``.
    """
    q = jnp.asarray(energy) - 0.5 * jnp.asarray(ang_mom) ** 2 / r_a**2
    qp = jnp.where(q > 0, q, 0.0)
    c = 3.0 * r_s**2 / (4.0 * jnp.pi * G**5 * m_tot**4)
    f = c * _INV_SQRT8_PI2 * (
        (1.0 - (r_s / r_a) ** 2) * (128.0 / 7.0) * qp**3.5
        + 8.0 * (G * m_tot / r_a) ** 2 * qp**1.5
    )
    return jnp.where(q > 0, f, 0.0)


def hernquist_df(energy, m_tot, r_s):
    """Closed-form isotropic Hernquist distribution function (Hernquist 1990, eq. 17).

    ``f(E) = M / (8 sqrt(2) pi^3 a^3 v_g^3) (1-q^2)^{-5/2} [3 arcsin q
    + q (1-q^2)^{1/2} (1-2q^2) (8q^4 - 8q^2 - 3)]``, with ``q = sqrt(a E / (G M))`` and
    ``v_g = sqrt(G M / a)``. Normalised to the mass density; ``E`` in (km/s)^2.
    """
    e = jnp.asarray(energy)
    vg2 = G * m_tot / r_s
    q = jnp.sqrt(jnp.clip(e / vg2, 0.0, 1.0 - 1e-15))
    q2 = q * q
    bracket = 3.0 * jnp.arcsin(q) + q * jnp.sqrt(1.0 - q2) * (1.0 - 2.0 * q2) * (
        8.0 * q2 * q2 - 8.0 * q2 - 3.0
    )
    f = m_tot / (8.0 * math.sqrt(2.0) * jnp.pi**3 * r_s**3 * vg2**1.5) * bracket / (
        1.0 - q2
    ) ** 2.5
    return jnp.where(e > 0, f, 0.0)
