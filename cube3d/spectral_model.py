"""The model of one log-rebinned spectrum, and the pieces the fit is built from.

One galaxy spectrum ``g`` (pixel ``j``) is modelled as

    m_j = P_mult(x_j) * sum_k a_k (T_k * L)(j + offset) + sum_l b_l P_l(x_j),

with templates ``T_k`` convolved with the line-of-sight velocity distribution ``L`` in
Fourier space (Cappellari 2017, MNRAS 466, 798, sec. 3 and eq. 38: the LOSVD transform is
analytic, so no sampled kernel and no pixel-integration bias at small sigma), non-negative
template weights ``a_k``, additive Legendre polynomials ``P_l`` (free coefficients ``b_l``)
and an optional multiplicative Legendre polynomial ``P_mult = 1 + sum_m c_m P_m``.

Everything here works on one spectrum, in pixel units (V and sigma in pixels of
``velscale`` km/s), and is ``vmap``-safe (no batched LAPACK; :mod:`cube3d.linalg`).
:mod:`cube3d.fit` iterates on these pieces.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .linalg import bounded_least_squares, cholesky_solve

__all__ = [
    "SpectralProblem",
    "build_problem",
    "legendre_basis",
    "good_fft_length",
    "convolved_templates",
    "n_templates",
    "basis_weights",
    "reduced_columns",
    "reduce_coef",
    "expand",
    "linear_solve",
    "ft_jacobian",
    "kinematic_jacobian",
    "residual_curvature",
    "template_gradient",
    "start_velocity",
]


class SpectralProblem(NamedTuple):
    """Arrays shared by every spectrum of a fit (unbatched under ``vmap``).

    Attributes
    ----------
    template_ft : (n_basis, n_freq) complex
        Real FFTs of the zero-padded basis spectra: the templates themselves, or the
        right singular vectors of a truncated SVD of the library (``template_mix``).
    omega : (n_freq,)
        Angular frequencies, radians per pixel.
    add_basis : (degree + 1, n_pix)
        Additive Legendre polynomials (empty for degree -1).
    mult_basis : (mdegree, n_pix)
        Multiplicative Legendre polynomials P_1..P_mdegree.
    lower, upper : (n_theta,)
        Bounds of the nonlinear parameters (pixels for V and sigma).
    xcorr_template : (n_fft,)
        High-passed mean template at the start dispersion, for the cross-correlation.
    xcorr_basis : (5, n_pix)
        Legendre P0..P4 for the continuum subtracted before the cross-correlation.
    theta_start : (n_theta,)
        Start of the nonlinear parameters: V 0 (replaced per spectrum), the start
        dispersion in pixels, the shape parameters' start, multiplicative terms 0.
    template_mix : (n_tpl, n_basis) or None
        Templates = ``template_mix @ basis`` (a truncated SVD,
        :func:`cube3d.basis.svd_basis`); None when the basis is the templates.  The
        convolution with the LOSVD is linear, so only the ``n_basis`` basis spectra are
        convolved and the normal matrix of the ``n_tpl`` weights is built from the
        ``n_basis x n_basis`` one.
    exact_ft : (n_tpl, n_freq) complex or None
        With ``template_mix``: the real FFTs of the templates themselves, for the exact
        finish of a fit (:func:`template_gradient`, :mod:`cube3d.fit`).
    """

    template_ft: jax.Array
    omega: jax.Array
    add_basis: jax.Array
    mult_basis: jax.Array
    lower: jax.Array
    upper: jax.Array
    xcorr_template: jax.Array
    xcorr_basis: jax.Array
    theta_start: jax.Array
    template_mix: Optional[jax.Array] = None
    exact_ft: Optional[jax.Array] = None


def legendre_basis(n_pix, degree, start=0):
    """Legendre polynomials P_start..P_degree on x in [-1, 1] over ``n_pix`` pixels.

    Returns
    -------
    numpy.ndarray, shape (degree + 1 - start, n_pix), float64
    """
    x = np.linspace(-1.0, 1.0, n_pix)
    return np.polynomial.legendre.legvander(x, max(degree, 0)).T[start : degree + 1]


def good_fft_length(n):
    """Smallest ``2^a 3^b 5^c >= n`` (fast FFT sizes)."""
    best = 1 << int(np.ceil(np.log2(n)))
    p5 = 1
    while p5 < 2 * n:
        p3 = p5
        while p3 < 2 * n:
            p2 = p3
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p3 *= 3
        p5 *= 5
    return best


def build_problem(templates, offset, n_pix, velscale, *, v_range, sigma_max, sigma_start,
                  shape_bounds, shape_start, degree, mdegree, compressed=None):
    """Arrays shared by all spectra of a fit: template transforms, bases, bounds, start.

    Parameters
    ----------
    templates : numpy.ndarray, (n_tpl, n_tpl_pix)
        Templates on the galaxy's ln-lambda step.
    offset : int
        Galaxy pixel ``j`` is template pixel ``j + offset``.
    n_pix : int
        Galaxy pixels.
    velscale : float
        km/s per pixel.
    v_range, sigma_max, sigma_start : float
        Bound of |V|, upper bound of sigma and the start dispersion, km/s.
    shape_bounds : (numpy.ndarray, numpy.ndarray)
        Lower and upper bounds of the LOSVD shape parameters (after V and sigma).
    shape_start : sequence of float
        Start of the shape parameters.
    degree, mdegree : int
        Additive (-1: none) and multiplicative (0: none) Legendre degrees.
    compressed : (numpy.ndarray, numpy.ndarray), optional
        ``(mix, basis)`` with ``templates ~ mix @ basis`` (:func:`cube3d.basis.svd_basis`):
        the fit convolves the basis spectra; the templates' own transforms are kept in
        ``exact_ft``.

    Returns
    -------
    problem : SpectralProblem
    n_fft : int
        FFT length: the templates zero-padded so that a circular convolution does not
        wrap the widest LOSVD (shift + 5 sigma) into the galaxy range.
    vmax_pix : float
        The velocity bound in pixels.
    """
    n_tpl_pix = templates.shape[1]
    pad = int(np.ceil((v_range + 5 * sigma_max) / velscale))
    n_fft = good_fft_length(n_tpl_pix + pad)
    tpl_ft = jnp.fft.rfft(jnp.asarray(templates), n_fft, axis=-1)
    mix, basis_ft = None, tpl_ft
    if compressed is not None:
        mix, basis = compressed
        basis_ft = jnp.fft.rfft(jnp.asarray(basis), n_fft, axis=-1)
    omega = 2.0 * np.pi * np.arange(n_fft // 2 + 1) / n_fft

    basis5 = legendre_basis(n_pix, 4)
    xt = _xcorr_template(templates.mean(axis=0), offset, n_pix, n_fft, basis5, omega, sigma_start / velscale)

    vmax_pix = v_range / velscale
    lo_shape, hi_shape = shape_bounds
    n_mult = max(mdegree, 0)
    lower = np.concatenate([[-vmax_pix, 0.1], lo_shape, -np.ones(n_mult)])
    upper = np.concatenate([[vmax_pix, sigma_max / velscale], hi_shape, np.ones(n_mult)])
    problem = SpectralProblem(
        template_ft=basis_ft,
        omega=jnp.asarray(omega),
        add_basis=jnp.asarray(legendre_basis(n_pix, degree) if degree >= 0 else np.zeros((0, n_pix))),
        mult_basis=jnp.asarray(legendre_basis(n_pix, n_mult, start=1) if n_mult else np.zeros((0, n_pix))),
        lower=jnp.asarray(lower),
        upper=jnp.asarray(upper),
        xcorr_template=jnp.asarray(xt),
        xcorr_basis=jnp.asarray(basis5),
        theta_start=jnp.asarray(np.concatenate([[0.0, sigma_start / velscale], shape_start, np.zeros(n_mult)])),
        template_mix=None if mix is None else jnp.asarray(mix),
        exact_ft=None if mix is None else tpl_ft,
    )
    return problem, n_fft, float(vmax_pix)


def _xcorr_template(mean_tpl, offset, n_pix, n_fft, basis5, omega, sigma_pix):
    """The mean template, continuum-subtracted over the galaxy range and smoothed to the
    start dispersion, zero-padded to ``n_fft`` (for :func:`start_velocity`)."""
    seg = mean_tpl[offset : offset + n_pix]
    cont = np.linalg.lstsq(basis5.T, seg, rcond=None)[0] @ basis5
    xt = np.zeros(n_fft)
    xt[: mean_tpl.size] = mean_tpl
    xt[offset : offset + n_pix] -= cont
    xt[:offset] -= cont[0]
    xt[offset + n_pix : mean_tpl.size] -= cont[-1]
    return np.fft.irfft(np.fft.rfft(xt) * np.exp(-0.5 * (omega * sigma_pix) ** 2), n_fft)


def _materialize(x):
    """Return ``x`` unchanged, computed once.

    XLA fuses the elementwise LOSVD transform into its broadcast product with the
    (n_tpl, n_freq) template transforms and so recomputes the cosines, exponentials and
    Hermite polynomials once per template (2.5x slower).  A length-1 FFT is the identity
    but cannot be fused through, so the transform is evaluated once per spectrum.
    """
    return jnp.fft.fft(x[..., None], axis=-1)[..., 0]


def _irfft(spectra, n_fft, single):
    """Inverse real FFT along the last axis, in single precision when ``single`` (the
    result is returned in the input's real precision)."""
    if not single:
        return jnp.fft.irfft(spectra, n_fft, axis=-1)
    real = jnp.finfo(spectra.dtype).dtype
    return jnp.fft.irfft(spectra.astype(jnp.complex64), n_fft, axis=-1).astype(real)


def convolved_templates(problem, ft_fn, kin, offset, n_pix, n_fft, single=False):
    """Basis spectra (the templates, or a compressed basis) convolved with the LOSVD ``kin``,
    sliced to the galaxy pixels: (n_basis, n_pix).

    ``ft_fn(omega, kin)`` is the LOSVD's Fourier transform (:class:`cube3d.losvd.LOSVDFamily`).
    ``single``: inverse transforms in single precision (relative error ~1e-7).
    """
    lhat = _materialize(ft_fn(problem.omega, kin))
    full = _irfft(problem.template_ft * lhat[None, :], n_fft, single)
    return lax.dynamic_slice_in_dim(full, offset, n_pix, axis=-1)


def n_templates(problem):
    """Number of templates (weights) of a problem: rows of ``template_mix``, else basis spectra."""
    return (problem.template_ft if problem.template_mix is None else problem.template_mix).shape[0]


def basis_weights(problem, template_weights):
    """Weights of the basis spectra for given template weights (``a @ template_mix``)."""
    return template_weights if problem.template_mix is None else template_weights @ problem.template_mix


def reduced_columns(conv, mpoly, problem):
    """The linear columns in the basis: convolved basis spectra times the multiplicative
    polynomial, then the additive polynomials: (n_basis + n_add, n_pix)."""
    return jnp.concatenate([conv * mpoly[None, :], problem.add_basis], axis=0)


def expand(problem, x):
    """Map the last axis from the basis columns (n_basis + n_add) to the linear
    parameters (n_tpl + n_add): template column ``k`` is ``sum_j mix[k, j]`` basis
    column ``j``, so inner products transform with ``template_mix``."""
    if problem.template_mix is None:
        return x
    n_basis = problem.template_mix.shape[1]
    return jnp.concatenate([x[..., :n_basis] @ problem.template_mix.T, x[..., n_basis:]], axis=-1)


def linear_solve(conv, mpoly, problem, galaxy, w, passive_init=None, max_iter=None):
    """Profiled linear problem at fixed theta: non-negative template weights + additive poly.

    ``conv`` holds the convolved basis spectra (:func:`convolved_templates`).  The normal
    matrix of the ``n_tpl + n_add`` linear parameters is ``E (R W R^T) E^T`` with ``R`` the
    ``n_basis + n_add`` reduced columns (:func:`reduced_columns`) and ``E`` the expansion
    of :func:`expand`; only ``R`` touches the pixels.

    Returns ``(coef, model, chi2, gram, rhs)``: the coefficients (template weights, then
    additive polynomial), the model, its chi^2, and the weighted normal matrix and vector
    of the linear parameters (reused by the next Gauss-Newton step).  Parameters are
    scaled to unit diagonal for conditioning and the solution is scaled back.
    """
    cols = reduced_columns(conv, mpoly, problem)
    n_tpl = n_templates(problem)
    gram = expand(problem, expand(problem, (cols * w[None, :]) @ cols.T).T)
    rhs = expand(problem, cols @ (w * galaxy))
    norm = jnp.sqrt(jnp.abs(jnp.diagonal(gram))) + 1e-30
    m = gram / (norm[:, None] * norm[None, :])
    nonneg = jnp.arange(gram.shape[0]) < n_tpl
    # at most rank(gram) = n_basis + n_add variables are ever passive (bounded_least_squares)
    coef = bounded_least_squares(m, rhs / norm, nonneg, passive_init=passive_init, max_passive=cols.shape[0],
                                 max_iter=max_iter) / norm
    model = reduce_coef(problem, coef) @ cols
    chi2 = jnp.sum(w * (galaxy - model) ** 2)
    return coef, model, chi2, gram, rhs


def reduce_coef(problem, coef):
    """Coefficients of the reduced columns (:func:`reduced_columns`) for linear
    coefficients ``coef`` (template weights, then additive polynomial)."""
    n_tpl = n_templates(problem)
    return jnp.concatenate([basis_weights(problem, coef[:n_tpl]), coef[n_tpl:]])


def ft_jacobian(problem, ft_fn, kin):
    """d L_hat / d kin at the problem's frequencies, computed once per spectrum:
    (n_freq, n_kin) complex (forward mode over the few parameters)."""
    return _materialize(jax.jacfwd(lambda k: ft_fn(problem.omega, k))(kin))


def kinematic_jacobian(problem, ft_fn, kin, weights, offset, n_pix, n_fft, single=False, dlhat=None):
    """d model / d kin at fixed weights of the basis spectra (:func:`basis_weights`), before
    the multiplicative polynomial: (n_kin, n_pix).  The weighted sum is transformed once,
    then multiplied by the derivative of the LOSVD transform (``dlhat``, default
    :func:`ft_jacobian`)."""
    combined_ft = weights @ problem.template_ft  # (n_freq,)
    dlhat = ft_jacobian(problem, ft_fn, kin) if dlhat is None else dlhat  # (n_freq, n_kin)
    dfull = _irfft(combined_ft[None, :] * dlhat.T, n_fft, single)
    return lax.dynamic_slice_in_dim(dfull, offset, n_pix, axis=-1)


def _parseval_weights(v, offset, n_pix, n_fft):
    """``c_k conj(V_k) / n_fft`` for a pixel vector ``v`` placed at ``offset`` in ``n_fft``
    zeros, with ``c_k`` 1 at frequency 0 and Nyquist and 2 elsewhere: then
    ``<irfft(X)[offset:offset + n_pix], v> = Re sum_k X_k * (this)_k`` for any real
    spectrum's transform ``X`` (Parseval's theorem for the real FFT)."""
    u = jnp.zeros(n_fft, dtype=v.dtype).at[offset : offset + n_pix].set(v)
    uhat = jnp.fft.rfft(u)
    c = jnp.full(uhat.shape, 2.0).at[0].set(1.0)
    if n_fft % 2 == 0:
        c = c.at[-1].set(1.0)
    return c * jnp.conj(uhat) / n_fft


def residual_curvature(problem, ft_hessian, kin, weights, v, dlhat, offset, n_pix, n_fft):
    """The second-order terms of a spectrum's chi^2 Hessian that Gauss-Newton drops.

    The Hessian of ``chi^2 / 2 = sum_i w_i r_i^2 / 2`` (``r = galaxy - model``) is
    ``J^T W J - sum_i w_i r_i d2 model_i``; Gauss-Newton keeps the first term only, and
    converges linearly where the second is not small against it (Nocedal & Wright 2006,
    sect. 10.3).  The model's second derivatives involving the LOSVD are those of the
    convolved basis, ``d2 (T_b * L) / d kin_j d kin_l`` and ``d (T_b * L) / d kin_j``;
    their inner products with ``v = W r`` (times the multiplicative polynomial) come from
    one transform of ``v`` by Parseval's theorem (as in :func:`template_gradient`).

    Parameters
    ----------
    ft_hessian : callable
        ``ft_hessian(omega, kin, c)``: Hessian of ``Re sum(c * L_hat(omega, kin))``
        (:meth:`cube3d.losvd.LOSVDFamily.ft_hessian`).
    weights : (n_basis,)
        Weights of the basis spectra (:func:`basis_weights`).
    v : (n_pix,)
        Weighted residual ``w (galaxy - model)`` times the multiplicative polynomial.
    dlhat : (n_freq, n_kin)
        :func:`ft_jacobian` at ``kin``.

    Returns
    -------
    s_kk : (n_kin, n_kin)
        ``sum_i v_i d2 model_i / d kin d kin``.
    s_kb : (n_kin, n_basis)
        ``sum_i v_i d conv_b,i / d kin``: the cross terms with the basis weights.
    """
    cu = _parseval_weights(v, offset, n_pix, n_fft)
    s_kk = ft_hessian(problem.omega, kin, (weights @ problem.template_ft) * cu)
    s_kb = jnp.real((problem.template_ft * cu[None, :]) @ dlhat).T
    return s_kk, s_kb


def template_gradient(problem, ft_fn, kin, v, offset, n_pix, n_fft):
    """Inner products ``<T_k * L, v>`` of every template convolved with the LOSVD ``kin``
    (sliced to the galaxy pixels) with a pixel vector ``v``: (n_tpl,).

    With ``v = W (galaxy - model)`` this is the gradient of ``-chi^2 / 2`` with respect to
    the template weights, which decides whether a template at zero weight should enter a
    non-negative solution (Lawson & Hanson 1974).  Computed without convolving the
    templates: by Parseval's theorem for the real FFT, ``<irfft(X), u> = (1/N) sum_k c_k
    Re(X_k conj(U_k))`` with ``c_k = 1`` at frequency 0 and Nyquist and 2 elsewhere, so one
    transform of ``v`` and a product with the templates' transforms give all of them
    (``exact_ft`` when the library is compressed, else ``template_ft``).
    """
    ft = problem.template_ft if problem.exact_ft is None else problem.exact_ft
    lhat = ft_fn(problem.omega, kin)
    return jnp.real(ft @ (lhat * _parseval_weights(v, offset, n_pix, n_fft)))


def start_velocity(problem, galaxy, w, offset, n_pix, n_fft, vmax_pix):
    """Cross-correlation start (Tonry & Davis 1979), in pixels: peak of the weighted,
    continuum-subtracted galaxy correlated with the high-passed mean template,
    refined by a parabola through the peak and its neighbours."""
    basis = problem.xcorr_basis
    m = (basis * w[None, :]) @ basis.T + 1e-12 * jnp.eye(basis.shape[0])
    cont = cholesky_solve(m, basis @ (w * galaxy)) @ basis
    u = jnp.zeros(n_fft).at[offset : offset + n_pix].set(w * (galaxy - cont))
    corr = jnp.fft.irfft(jnp.fft.rfft(problem.xcorr_template) * jnp.conj(jnp.fft.rfft(u)), n_fft)
    lags = jnp.arange(-n_fft // 4, n_fft // 4)
    # corr[k] = sum_i u[i] t[i + k]; a galaxy redshifted by s pixels peaks at k = -s
    cc = jnp.where(jnp.abs(lags) <= vmax_pix, corr[(-lags) % n_fft], -jnp.inf)
    i = jnp.argmax(cc)
    y0, y1, y2 = cc[jnp.maximum(i - 1, 0)], cc[i], cc[jnp.minimum(i + 1, cc.size - 1)]
    den = y0 - 2 * y1 + y2
    frac = jnp.where(jnp.isfinite(den) & (den < 0), 0.5 * (y0 - y2) / den, 0.0)
    return lags[i] + jnp.clip(frac, -0.5, 0.5)
