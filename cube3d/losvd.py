"""Line-of-sight velocity distributions (LOSVDs) and their Fourier transforms.

A spectrum's model is the log-rebinned template convolved with the LOSVD, done in
Fourier space::

    model = irfft(rfft(template, n) * losvd_ft(omega), n),   omega = 2 pi k / n

with ``k = 0 .. n // 2`` (radians per pixel).  With numpy's rfft convention
``X_k = sum_j x_j exp(-2 pi i k j / n)`` the transform wanted is

    L_hat(omega) = integral L(x) exp(-i omega x) dx,

where ``x`` is the line-of-sight velocity in *pixels* (``v / velscale``).  With this
sign a positive ``v`` moves the spectrum to the red (higher pixel index).

Conventions
-----------
Every function here is written for one LOSVD and is pure ``jax.numpy``: it can be
``jit``-ted, ``vmap``-ped over spaxels and differentiated in every parameter.
Velocities ``v`` and dispersions ``sigma`` are in pixels of the ln-lambda grid.

Families
--------
* Gauss-Hermite series (van der Marel & Franx 1993, MNRAS 265, 175; Gerhard 1993,
  MNRAS 265, 213) with the closed-form transform of Cappellari (2017, MNRAS 466, 798,
  eq. 38): :func:`gauss_hermite_ft`, :func:`gauss_hermite_pdf`.
* Sanders & Evans (2020, MNRAS 499, 5806) kernel-convolved Gaussians, non-negative
  everywhere by construction: :func:`sanders_evans_ft`, :func:`sanders_evans_pdf`.

:class:`LOSVDFamily` ties a family to its parameter names so that the fitter and the
map writer share them.  :func:`ft_moments` gives the exact mean and dispersion of any
family from its transform (for reporting), :func:`pdf_moments` those of a sampled pdf,
and :func:`sanders_evans_shape` the skewness and excess kurtosis of a Sanders & Evans
LOSVD.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc as jax_erfc
from jax.scipy.special import erfcx as jax_erfcx
from jax.scipy.special import ndtr as jax_ndtr

from cube3d.errors import InputError

__all__ = [
    "LOSVDFamily",
    "gauss_hermite_ft",
    "gauss_hermite_ft_hessian",
    "gauss_hermite_moment_names",
    "gauss_hermite_pdf",
    "ft_moments",
    "hermite_polynomials",
    "pdf_moments",
    "sanders_evans_bounds",
    "sanders_evans_ft",
    "sanders_evans_pdf",
    "sanders_evans_shape",
]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------------------
# Gauss-Hermite
# --------------------------------------------------------------------------------------
def hermite_polynomials(y, max_order: int):
    """Normalised Hermite polynomials H_0 .. H_max_order of van der Marel & Franx.

    Parameters
    ----------
    y : array_like
        Argument (dimensionless), any shape.
    max_order : int
        Highest order, a Python int (static).

    Returns
    -------
    list of jax.Array
        ``[H_0(y), ..., H_max(y)]``, each of the shape of ``y``.

    Notes
    -----
    ``H_m = Hphys_m(y) / sqrt(2^m m!)``, Hphys the physicists' Hermite polynomials
    (van der Marel & Franx 1993, appendix A; ``H_3 = (2 sqrt2 y^3 - 3 sqrt2 y) / sqrt6``,
    ``H_4 = (4y^4 - 12y^2 + 3) / sqrt24``), computed by the stable three-term recurrence

        H_0 = 1,  H_1 = sqrt2 y,
        H_{m+1} = (sqrt2 y H_m - sqrt(m) H_{m-1}) / sqrt(m + 1)

    which never forms the factorially large coefficients of the power series.
    """
    y = jnp.asarray(y)
    out = [jnp.ones_like(y)]
    if max_order >= 1:
        out.append(_SQRT2 * y)
    for m in range(1, max_order):
        out.append((_SQRT2 * y * out[m] - math.sqrt(m) * out[m - 1]) / math.sqrt(m + 1))
    return out


def _check_h(h):
    h = jnp.asarray(h)
    if h.ndim != 1:
        raise InputError(
            f"losvd: parameter h must be a 1-D array of h3.. coefficients, got shape {h.shape}"
        )
    return h


def gauss_hermite_ft(omega, v, sigma, h):
    """Fourier transform of a Gauss-Hermite LOSVD (Cappellari 2017, eq. 38).

    Parameters
    ----------
    omega : array_like, shape (n_omega,)
        Angular frequency in radians per pixel (``2 pi k / n``).
    v : float
        Mean velocity parameter V, in pixels.
    sigma : float
        Dispersion parameter sigma, in pixels (> 0).
    h : array_like, shape (n_h,)
        Coefficients ``h_3 .. h_{2+n_h}``; ``n_h`` may be 0 (pure Gaussian).

    Returns
    -------
    jax.Array, complex, shape (n_omega,)
        ``L_hat(omega) = integral L(x) exp(-i omega x) dx`` of
        :func:`gauss_hermite_pdf`.

    Notes
    -----
    With ``y = (x - v) / sigma`` the LOSVD is ``L(x) = alpha(y) / sigma *
    [1 + sum_m h_m H_m(y)]``, ``alpha`` the unit normal (van der Marel & Franx 1993).
    The functions ``alpha(y) H_m(y)`` are Hermite functions, eigenfunctions of the
    Fourier transform:  ``integral alpha(y) H_m(y) exp(-i k y) dy =
    (-i)^m H_m(k) exp(-k^2 / 2)``.  Substituting ``x = v + sigma y`` gives

        L_hat(omega) = exp(-i omega v - (omega sigma)^2 / 2)
                       * [1 + sum_m h_m (-i)^m H_m(omega sigma)]

    (Cappellari 2017, eq. 38, in numpy's ``exp(-i ...)`` sign convention).  The series
    is not normalised when even terms are present: ``L_hat(0) = 1 + sum_{m even}
    h_m (-1)^{m/2} H_m(0)`` (e.g. ``1 + sqrt(3/8) h4``), as in ppxf, where the template
    weights absorb the scale.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> n = 64
    >>> omega = 2 * jnp.pi * jnp.arange(n // 2 + 1) / n
    >>> ft = gauss_hermite_ft(omega, 1.5, 2.0, jnp.array([0.05, -0.02]))
    >>> ft.shape
    (33,)
    """
    h = _check_h(h)
    omega = jnp.asarray(omega)
    dtype = jnp.result_type(omega, v, sigma, h, float)
    omega = omega.astype(dtype)
    k = omega * sigma
    n_h = h.shape[0]
    hp = hermite_polynomials(k, 2 + n_h)
    real = jnp.ones_like(k)
    imag = jnp.zeros_like(k)
    for j in range(n_h):
        m = j + 3
        # (-i)^m: 1, -i, -1, i for m = 0, 1, 2, 3 (mod 4)
        sign = 1.0 if m % 4 in (0, 1) else -1.0
        if m % 2 == 0:
            real = real + sign * h[j] * hp[m]
        else:
            imag = imag - sign * h[j] * hp[m]
    series = real + 1j * imag
    phase = -omega * v
    gauss = jnp.exp(-0.5 * k * k)
    return gauss * (jnp.cos(phase) + 1j * jnp.sin(phase)) * series


# (-i)^m for m % 4, as (real, imaginary)
_MINUS_I_POWERS = ((1.0, 0.0), (0.0, -1.0), (-1.0, 0.0), (0.0, 1.0))


def gauss_hermite_ft_hessian(omega, v, sigma, h, weights):
    """Hessian of ``Re sum_k weights_k L_hat(omega_k)`` over ``(v, sigma, h_3, ..)``.

    The second derivatives of the Gauss-Hermite transform (:func:`gauss_hermite_ft`)
    contracted with complex weights, in closed form: the cosine, sine and exponential
    are evaluated once (automatic differentiation of the transform evaluates them again
    for every pair of parameters, 7x slower).  Used for the residual curvature of a
    Newton step (:func:`cube3d.spectral_model.residual_curvature`).

    Parameters
    ----------
    omega : array (n_omega,)
        Angular frequency, radians per pixel.
    v, sigma : float
        Mean velocity and dispersion parameters, pixels.
    h : array (n_h,)
        ``h_3 .. h_{2+n_h}``.
    weights : complex array (n_omega,)

    Returns
    -------
    jax.Array (2 + n_h, 2 + n_h)
        Symmetric; the ``h``-``h`` block is zero (the transform is linear in ``h``).

    Notes
    -----
    With ``k = omega sigma``, ``E = exp(-i omega v - k^2 / 2)`` and the series
    ``P(k) = 1 + sum_m h_m (-i)^m H_m(k)`` (Cappellari 2017, eq. 38), ``L_hat = E P``.
    The normalised Hermite polynomials satisfy ``H_m' = sqrt(2m) H_{m-1}`` (from
    ``Hphys_m' = 2m Hphys_{m-1}``), so with ``R = P' - k P``:

        d L / dv = -i omega E P,            d L / dsigma = omega E R,
        d L / dh_m = E (-i)^m H_m,
        d2 L / dv2 = -omega^2 E P,          d2 L / dv dsigma = -i omega^2 E R,
        d2 L / dv dh_m = -i omega E (-i)^m H_m,
        d2 L / dsigma2 = omega^2 E (R' - k R),   R' = P'' - P - k P',
        d2 L / dsigma dh_m = omega E (-i)^m (sqrt(2m) H_{m-1} - k H_m),
        d2 L / dh_m dh_n = 0.
    """
    h = _check_h(h)
    omega = jnp.asarray(omega)
    n_h = h.shape[0]
    k = omega * sigma
    hp = hermite_polynomials(k, 2 + n_h)
    gauss = jnp.exp(-0.5 * k * k)
    e_re, e_im = gauss * jnp.cos(omega * v), -gauss * jnp.sin(omega * v)
    w_re, w_im = jnp.real(weights), jnp.imag(weights)
    q_re, q_im = w_re * e_re - w_im * e_im, w_re * e_im + w_im * e_re  # weights * E
    coef = [_MINUS_I_POWERS[(j + 3) % 4] for j in range(n_h)]  # (-i)^m, m = j + 3
    zero = jnp.zeros_like(k)

    def series(term):
        """sum_m h_m (-i)^m term(m) as (real, imaginary) arrays."""
        re = sum((h[j] * coef[j][0] * term(j + 3) for j in range(n_h) if coef[j][0]), zero)
        im = sum((h[j] * coef[j][1] * term(j + 3) for j in range(n_h) if coef[j][1]), zero)
        return re, im

    p0 = series(lambda m: hp[m])
    p0 = (p0[0] + 1.0, p0[1])
    p1 = series(lambda m: math.sqrt(2 * m) * hp[m - 1])
    p2 = series(lambda m: math.sqrt(2 * m) * math.sqrt(2 * m - 2) * hp[m - 2])
    r0 = (p1[0] - k * p0[0], p1[1] - k * p0[1])
    r1 = (p2[0] - p0[0] - k * p1[0], p2[1] - p0[1] - k * p1[1])
    w2 = omega * omega
    # second derivatives d2 L / dp_a dp_b = E (re + i im) of the upper triangle, h-h omitted
    entries = {(0, 0): (-w2 * p0[0], -w2 * p0[1]),
               (0, 1): (w2 * r0[1], -w2 * r0[0]),  # -i (re + i im) = im - i re
               (1, 1): (w2 * (r1[0] - k * r0[0]), w2 * (r1[1] - k * r0[1]))}
    for j in range(n_h):
        m = j + 3
        c_re, c_im = coef[j]
        entries[0, 2 + j] = (omega * c_im * hp[m], -omega * c_re * hp[m])
        t = math.sqrt(2 * m) * hp[m - 1] - k * hp[m]
        entries[1, 2 + j] = (omega * c_re * t, omega * c_im * t)
    # Re sum_k weights_k E_k (re + i im)_k of every entry as two matrix-vector products
    # (the same summation order for any batch of spectra, unlike a reduction under vmap)
    values = (jnp.stack([e[0] for e in entries.values()]) @ q_re
              - jnp.stack([e[1] for e in entries.values()]) @ q_im)
    n = 2 + n_h
    hess = jnp.zeros((n, n), dtype=values.dtype)
    rows, cols = (jnp.asarray(idx) for idx in zip(*entries))
    return hess.at[rows, cols].set(values).at[cols, rows].set(values)


def gauss_hermite_pdf(x, v, sigma, h):
    """Gauss-Hermite LOSVD in real space (van der Marel & Franx 1993).

    Parameters
    ----------
    x : array_like
        Velocity in pixels, any shape.
    v, sigma : float
        V and sigma parameters in pixels.
    h : array_like, shape (n_h,)
        ``h_3 .. h_{2+n_h}``.

    Returns
    -------
    jax.Array
        ``alpha(y) / sigma * [1 + sum_m h_m H_m(y)]``, ``y = (x - v) / sigma``, per
        pixel.  It may be negative in the wings (the reason for the Sanders & Evans
        family) and integrates to ``gauss_hermite_ft(0, ...)``.
    """
    h = _check_h(h)
    x = jnp.asarray(x)
    dtype = jnp.result_type(x, v, sigma, h, float)
    y = (x.astype(dtype) - v) / sigma
    n_h = h.shape[0]
    hp = hermite_polynomials(y, 2 + n_h)
    series = jnp.ones_like(y)
    for j in range(n_h):
        series = series + h[j] * hp[j + 3]
    return _INV_SQRT_2PI * jnp.exp(-0.5 * y * y) / sigma * series


def gauss_hermite_moment_names(moments: int) -> tuple[str, ...]:
    """Parameter names of a Gauss-Hermite LOSVD with ``moments`` parameters.

    ``gauss_hermite_moment_names(4) == ("V", "SIGMA", "H3", "H4")``.
    """
    if not isinstance(moments, int) or isinstance(moments, bool) or moments < 2:
        raise InputError(f"losvd: moments must be an integer >= 2, got {moments!r}")
    return ("V", "SIGMA") + tuple(f"H{m}" for m in range(3, moments + 1))


# --------------------------------------------------------------------------------------
# Sanders & Evans (2020): Gaussian convolved with a uniform or Laplace kernel
# --------------------------------------------------------------------------------------
SANDERS_EVANS_KERNELS = ("laplace", "uniform")
_SMALL_WIDTH = {"laplace": 1e-6, "uniform": 1e-3}


def _check_kernel(kernel):
    if kernel not in SANDERS_EVANS_KERNELS:
        raise InputError(
            f"losvd: kernel must be one of {SANDERS_EVANS_KERNELS}, got {kernel!r}"
        )


def _half_widths(a, asym):
    """Half-widths (a+, a-) = a (1 +- asym) of the kernel; Sanders & Evans's Delta = a asym."""
    return a * (1.0 + asym), a * (1.0 - asym)


def _kernel_raw_moments(ap, am, kernel):
    """Raw moments E[K^n], n = 1..4, of the two-sided kernel with half-widths ap, am.

    Each half carries weight 1/2 (Sanders & Evans 2020, sections 4.1-4.2):
    uniform halves on (0, a+) and (-a-, 0) give ``E[K^n] = (a+^n + (-a-)^n) / (2 (n+1))``;
    exponential halves of scales a+ and a- give ``E[K^n] = n! (a+^n + (-a-)^n) / 2``.
    """
    if kernel == "uniform":
        fac = [1.0 / (2 * (n + 1)) for n in range(5)]
    else:
        fac = [math.factorial(n) / 2.0 for n in range(5)]
    return [fac[n] * (ap**n + (-am) ** n) for n in range(1, 5)]


def _standardisation(sigma, ap, am, kernel):
    """Core dispersion c and kernel mean m_K so that the LOSVD has std sigma and mean v."""
    m1, m2, _, _ = _kernel_raw_moments(ap, am, kernel)
    var_k = m2 - m1 * m1
    c = sigma / jnp.sqrt(1.0 + var_k)
    return c, m1


def _kernel_ft(k, ap, am, kernel):
    """E[exp(-i k K)] for the two-sided kernel (Sanders & Evans 2020, section 4)."""
    if kernel == "laplace":
        # integral_0^inf e^{-y/a} e^{-iky} dy / a = 1 / (1 + i k a)
        return 0.5 / (1.0 + 1j * k * ap) + 0.5 / (1.0 - 1j * k * am)
    # integral_0^a e^{-iky} dy / a = e^{-i k a/2} sinc(k a/2), sinc(t) = sin t / t
    tp, tm = 0.5 * k * ap, 0.5 * k * am
    sinc_p = jnp.sinc(tp / jnp.pi)
    sinc_m = jnp.sinc(tm / jnp.pi)
    return 0.5 * (jnp.cos(tp) - 1j * jnp.sin(tp)) * sinc_p + 0.5 * (
        jnp.cos(tm) + 1j * jnp.sin(tm)
    ) * sinc_m


def sanders_evans_ft(omega, v, sigma, a, asym, *, kernel: str = "laplace"):
    """Closed-form Fourier transform of a Sanders & Evans (2020) LOSVD.

    Parameters
    ----------
    omega : array_like, shape (n_omega,)
        Angular frequency in radians per pixel (``2 pi k / n``).
    v : float
        Mean velocity in pixels: the exact first moment of the LOSVD.
    sigma : float
        Dispersion in pixels (> 0): the exact standard deviation of the LOSVD.
    a : float
        Kernel width in units of the Gaussian core dispersion (>= 0; 0 is Gaussian).
    asym : float
        Kernel asymmetry in [-1, 1]: the two halves of the kernel have widths
        ``a (1 + asym)`` (towards high velocity) and ``a (1 - asym)``; ``asym > 0``
        gives positive skewness.  Sanders & Evans's ``Delta`` is ``a * asym``.  The
        box ``0 <= a``, ``-1 <= asym <= 1`` is the whole valid domain (see
        :func:`sanders_evans_bounds`).
    kernel : {"laplace", "uniform"}
        ``"laplace"`` gives excess kurtosis >= 0, ``"uniform"`` gives <= 0.

    Returns
    -------
    jax.Array, complex, shape (n_omega,)
        ``L_hat(omega) = integral L(x) exp(-i omega x) dx``; ``L_hat(0) = 1``.

    Notes
    -----
    Sanders & Evans (2020, MNRAS 499, 5806, sections 3-4) write the LOSVD as a unit
    Gaussian convolved with a kernel ``K``: ``U = Z + K``.  The kernel has two halves of
    weight 1/2 each, uniform on ``(0, a+)`` and ``(-a-, 0)`` (their section 4.1,
    negative excess kurtosis) or exponential with scales ``a+`` and ``a-`` (section 4.2,
    positive excess kurtosis), ``a+- = a +- Delta = a (1 +- asym)``.  The pdf is a
    convolution of non-negative functions, hence non-negative everywhere.  Its
    transform is the product of the transforms (derived here; Sanders & Evans give
    the same in their ``exp(+i ...)`` convention)::

        K_hat(k) = [1 / (1 + i k a+) + 1 / (1 - i k a-)] / 2            (Laplace)
        K_hat(k) = [e^{-i k a+/2} sinc(k a+/2) + e^{i k a-/2} sinc(k a-/2)] / 2 (uniform)

    Sanders & Evans choose the scale ``b`` and offset ``w0`` by fitting formulae so that
    ``(v, sigma)`` mimic Gauss-Hermite parameters.  Here they are set in closed form so
    that ``v`` and ``sigma`` are the exact mean and standard deviation:
    ``x = v + c (U - E[K])`` with ``c = sigma / sqrt(1 + Var K)``, so::

        L_hat(omega) = exp(-i omega (v - c E[K]) - (omega c)^2 / 2) K_hat(omega c)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> omega = 2 * jnp.pi * jnp.arange(33) / 64
    >>> sanders_evans_ft(omega, 1.0, 2.0, 0.5, 0.2, kernel="laplace").shape
    (33,)
    """
    _check_kernel(kernel)
    omega = jnp.asarray(omega)
    dtype = jnp.result_type(omega, v, sigma, a, asym, float)
    omega = omega.astype(dtype)
    ap, am = _half_widths(a, asym)
    c, m_k = _standardisation(sigma, ap, am, kernel)
    k = omega * c
    phase = -omega * (v - c * m_k)
    return (
        jnp.exp(-0.5 * k * k)
        * (jnp.cos(phase) + 1j * jnp.sin(phase))
        * _kernel_ft(k, ap, am, kernel)
    )


def _half_pdf(u, width, kernel):
    """E[phi(u - Y)] for Y on (0, inf) from one half of the kernel (scale ``width``).

    Laplace half (exponential of scale w)::

        g(u) = exp(1/(2w^2) - u/w) Phi(u - 1/w) / w
             = phi(u) sqrt(pi/2) erfcx((1/w - u) / sqrt2) / w        (stable for u < 1/w)

    uniform half on (0, w): ``g(u) = (Phi(u) - Phi(u - w)) / w``.  For tiny widths both
    use the series ``phi(u) sum_n E[Y^n] He_n(u) / n!`` to third order (exact limit
    ``phi(u)`` at w = 0, gradient-safe).
    """
    small = width < _SMALL_WIDTH[kernel]
    w = jnp.where(small, 1.0, width)  # safe value in the unused branch
    phi = _INV_SQRT_2PI * jnp.exp(-0.5 * u * u)
    ws = jnp.where(small, width, 0.0)
    if kernel == "laplace":
        series = phi * (1 + ws * u + ws**2 * (u * u - 1) + ws**3 * (u**3 - 3 * u))
        z = (1.0 / w - u) / _SQRT2
        z_pos = jnp.where(z >= 0, z, 0.0)
        left = phi * math.sqrt(math.pi / 2) * jax_erfcx(z_pos) / w
        expo = jnp.where(z >= 0, -1.0, 0.5 / (w * w) - u / w)  # < 0 where used
        right = jnp.exp(expo) * jax_ndtr(u - 1.0 / w) / w
        exact = jnp.where(z >= 0, left, right)
    else:
        series = phi * (
            1 + ws * u / 2 + ws**2 * (u * u - 1) / 6 + ws**3 * (u**3 - 3 * u) / 24
        )
        exact = _normal_cdf_difference(u, u - w) / w
    return jnp.where(small, series, exact)


def _normal_cdf_difference(hi, lo):
    """Phi(hi) - Phi(lo) for hi >= lo without cancellation in either tail."""
    upper = 0.5 * (jax_erfc(lo / _SQRT2) - jax_erfc(hi / _SQRT2))  # for lo > 0
    lower = 0.5 * (jax_erfc(-hi / _SQRT2) - jax_erfc(-lo / _SQRT2))  # for hi <= 0
    return jnp.maximum(jnp.where(lo > 0, upper, lower), 0.0)


def sanders_evans_pdf(x, v, sigma, a, asym, *, kernel: str = "laplace"):
    """Sanders & Evans (2020) LOSVD in real space, per pixel; non-negative everywhere.

    Parameters are those of :func:`sanders_evans_ft`; ``x`` is the velocity in pixels
    (any shape).  The pdf is ``f_U((x - v) / c + E[K]) / c`` with
    ``f_U(u) = [g_+(u) + g_-(-u)] / 2`` (Sanders & Evans 2020, sections 4.1-4.2), ``g``
    the Gaussian smoothed by one half of the kernel (see ``_half_pdf``).
    """
    _check_kernel(kernel)
    x = jnp.asarray(x)
    dtype = jnp.result_type(x, v, sigma, a, asym, float)
    ap, am = _half_widths(a, asym)
    c, m_k = _standardisation(sigma, ap, am, kernel)
    u = (x.astype(dtype) - v) / c + m_k
    f_u = 0.5 * (_half_pdf(u, ap, kernel) + _half_pdf(-u, am, kernel))
    return f_u / c


def sanders_evans_bounds(a_max: float = 5.0):
    """Box bounds of the Sanders & Evans shape parameters (A, ASYM).

    Returns ``((0, -1), (a_max, 1))``.  At ``a = a_max = 5`` the excess kurtosis is
    2.9 (Laplace) or -0.96 (uniform; the limit is -1.2).
    """
    return (0.0, -1.0), (float(a_max), 1.0)


def sanders_evans_shape(a, asym, *, kernel: str = "laplace"):
    """Skewness and excess kurtosis of a Sanders & Evans (2020) LOSVD.

    Parameters
    ----------
    a, asym : float
        Kernel width and asymmetry, as in :func:`sanders_evans_ft`.
    kernel : {"laplace", "uniform"}

    Returns
    -------
    (skewness, excess_kurtosis) : tuple of jax.Array
        ``kappa_3 / s^3`` and ``kappa_4 / s^4``, ``s^2 = 1 + Var K``: the Gaussian
        adds nothing to cumulants above the second (Sanders & Evans 2020, table D2:
        Laplace ``6 (2a^4 + 12 a^2 D^2 + D^4) / (1 + 2a^2 + D^2)^2``, ``D = a asym``).
        Independent of v and sigma.
    """
    _check_kernel(kernel)
    m1, m2, m3, m4 = _kernel_raw_moments(*_half_widths(a, asym), kernel)
    var = m2 - m1**2
    k3 = m3 - 3 * m2 * m1 + 2 * m1**3
    k4 = m4 - 4 * m3 * m1 - 3 * m2**2 + 12 * m2 * m1**2 - 6 * m1**4
    s2 = 1.0 + var
    return k3 / s2**1.5, k4 / s2**2


# --------------------------------------------------------------------------------------
# Reporting helpers
# --------------------------------------------------------------------------------------
def pdf_moments(x, pdf):
    """Normalisation, mean and dispersion of a pdf sampled on a uniform grid.

    Parameters
    ----------
    x : array_like, shape (n,)
        Uniform grid (any unit; pixels here), wide enough to hold the pdf.
    pdf : array_like, shape (n,)
        Density per unit of ``x`` on that grid.

    Returns
    -------
    (norm, mean, dispersion) : tuple of jax.Array
        ``integral pdf``, ``<x>`` and ``sqrt(<(x - <x>)^2>)`` (moments of the
        normalised pdf), by the rectangle rule (spectrally accurate for smooth pdfs
        that vanish at the grid ends).
    """
    x = jnp.asarray(x)
    pdf = jnp.asarray(pdf)
    dx = x[1] - x[0]
    norm = jnp.sum(pdf) * dx
    mean = jnp.sum(x * pdf) * dx / norm
    var = jnp.sum((x - mean) ** 2 * pdf) * dx / norm
    return norm, mean, jnp.sqrt(var)


def ft_moments(ft, params):
    """Normalisation, mean and dispersion of an LOSVD from derivatives of its transform.

    Parameters
    ----------
    ft : callable
        ``ft(omega, params) -> complex (n_omega,)``, e.g. :meth:`LOSVDFamily.ft`.
    params : array_like
        Parameters passed to ``ft``.

    Returns
    -------
    (norm, mean, dispersion) : tuple of jax.Array
        With ``L_hat(omega) = integral L(x) exp(-i omega x) dx``:
        ``norm = L_hat(0)``, ``<x> = i L_hat'(0) / L_hat(0)``,
        ``<x^2> = -L_hat''(0) / L_hat(0)``, dispersion ``sqrt(<x^2> - <x>^2)``, in the
        unit of ``x`` (pixels).  Exact (forward-mode derivatives at omega = 0) and
        differentiable in ``params``, so errors propagate by the Jacobian.  For a
        Gauss-Hermite LOSVD this is the true mean and dispersion, which differ from the
        V and SIGMA parameters when h3, h4 != 0.
    """

    def f(w):
        return ft(jnp.reshape(w, (1,)), params)[0]

    zero = jnp.zeros((), dtype=jnp.result_type(float))
    one = jnp.ones_like(zero)
    f0, d1 = jax.jvp(f, (zero,), (one,))
    d2 = jax.jvp(lambda w: jax.jvp(f, (w,), (one,))[1], (zero,), (one,))[1]
    mean = jnp.real(1j * d1 / f0)
    second = jnp.real(-d2 / f0)
    return jnp.real(f0), mean, jnp.sqrt(second - mean * mean)


# --------------------------------------------------------------------------------------
# Family description shared by the fitter and the map writer
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LOSVDFamily:
    """A parametric LOSVD family: its name, parameter names and transforms.

    Hashable and immutable, so it can be a static argument of a jitted fitter.
    ``params`` is always a 1-D array ``(v, sigma, ...)`` with v and sigma in pixels.

    Attributes
    ----------
    name : str
        ``"gauss_hermite"`` or ``"sanders_evans_laplace"`` / ``"sanders_evans_uniform"``.
    param_names : tuple of str
        FITS-style names, e.g. ``("V", "SIGMA", "H3", "H4")``; used as map HDU names.
    shape_start : tuple of float
        Starting values of the shape parameters (those after V and SIGMA) for an
        iterative fit: zeros for Gauss-Hermite; for Sanders & Evans ``(0.4, 0.0)``
        (Laplace) or ``(1.2, 0.0)`` (uniform), excess kurtosis about +-0.15: its
        transform depends on A only at fourth order near A = 0, so a fit started at
        the Gaussian (A = 0) would have zero Jacobian columns for A and ASYM.
    """

    name: str
    param_names: tuple[str, ...]
    shape_start: tuple[float, ...]
    _ft: Callable = dataclasses.field(repr=False, compare=False)
    _pdf: Callable = dataclasses.field(repr=False, compare=False)
    _ft_hessian: Optional[Callable] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def n_params(self) -> int:
        """Number of parameters (``len(param_names)``)."""
        return len(self.param_names)

    def ft(self, omega, params):
        """Fourier transform at ``omega`` (rad / pixel) for ``params`` (n_params,)."""
        return self._ft(omega, self._check_params(params))

    def ft_hessian(self, omega, params, weights):
        """Hessian of ``Re sum_k weights_k ft(omega_k, params)`` over ``params``:
        (n_params, n_params).  In closed form where the family has one
        (:func:`gauss_hermite_ft_hessian`), else by automatic differentiation."""
        params = self._check_params(params)
        if self._ft_hessian is not None:
            return self._ft_hessian(omega, params, weights)
        return jax.hessian(lambda p: jnp.real(jnp.sum(weights * self._ft(omega, p))))(params)

    def pdf(self, x, params):
        """Real-space LOSVD at ``x`` (pixels) for ``params`` (n_params,)."""
        return self._pdf(x, self._check_params(params))

    def moments(self, params):
        """``(norm, mean, dispersion)`` of the LOSVD in pixels; see :func:`ft_moments`."""
        return ft_moments(self._ft, self._check_params(params))

    def _check_params(self, params):
        params = jnp.asarray(params)
        if params.shape != (self.n_params,):
            raise InputError(
                f"losvd: {self.name} takes params of shape ({self.n_params},) "
                f"{self.param_names}, got shape {params.shape}"
            )
        return params

    def __hash__(self):
        return hash((self.name, self.param_names))

    def __eq__(self, other):
        return (
            isinstance(other, LOSVDFamily)
            and self.name == other.name
            and self.param_names == other.param_names
        )

    @classmethod
    def gauss_hermite(cls, moments: int = 4) -> "LOSVDFamily":
        """Gauss-Hermite series with ``moments`` parameters (V, SIGMA, H3, ...)."""
        names = gauss_hermite_moment_names(moments)

        def ft(omega, params):
            return gauss_hermite_ft(omega, params[0], params[1], params[2:])

        def pdf(x, params):
            return gauss_hermite_pdf(x, params[0], params[1], params[2:])

        def ft_hessian(omega, params, weights):
            return gauss_hermite_ft_hessian(omega, params[0], params[1], params[2:], weights)

        return cls("gauss_hermite", names, (0.0,) * (moments - 2), ft, pdf, ft_hessian)

    @classmethod
    def sanders_evans(cls, kernel: str = "laplace") -> "LOSVDFamily":
        """Sanders & Evans (2020) LOSVD, parameters (V, SIGMA, A, ASYM).

        ``kernel="laplace"`` (excess kurtosis >= 0) or ``"uniform"`` (<= 0).  V and
        SIGMA are the exact mean and standard deviation; A the kernel width and ASYM
        its asymmetry, bounded by :func:`sanders_evans_bounds`; see
        :func:`sanders_evans_ft`.
        """
        _check_kernel(kernel)

        def ft(omega, params):
            return sanders_evans_ft(omega, *params, kernel=kernel)

        def pdf(x, params):
            return sanders_evans_pdf(x, *params, kernel=kernel)

        # start with |excess kurtosis| ~ 0.15 (0.18 Laplace, -0.13 uniform)
        start = (0.4, 0.0) if kernel == "laplace" else (1.2, 0.0)
        return cls(f"sanders_evans_{kernel}", ("V", "SIGMA", "A", "ASYM"), start, ft, pdf)
