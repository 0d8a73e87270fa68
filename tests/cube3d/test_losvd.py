"""Tests of cube3d.losvd: transforms against numerical transforms of the pdfs,
normalisation, moments, sign convention, jit / vmap / grad."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, special

from cube3d import losvd
from cube3d.errors import InputError

pytestmark = pytest.mark.timeout(120)

N_PIX = 128
OMEGA = 2 * np.pi * np.arange(N_PIX // 2 + 1) / N_PIX


def numerical_ft(pdf_fn, omega, centre, half_width, dx=0.02):
    """integral pdf(x) exp(-i omega x) dx by the rectangle rule on a fine wide grid
    (spectrally accurate for smooth pdfs that vanish at the window ends)."""
    x = np.arange(centre - half_width, centre + half_width + dx / 2, dx)
    f = np.asarray(pdf_fn(jnp.asarray(x)))
    return np.exp(-1j * np.outer(omega, x)) @ f * dx


def assert_jacobian_matches_fd(f, p, step=1e-4, rtol=1e-7, reverse=True):
    """Forward (and reverse) Jacobians of f at p against 4th-order central differences.

    Jitted once each (cheaper on a loaded machine than the many eager calls of
    check_grads); complex outputs are split into real and imaginary parts."""
    def fr(q):
        out = f(q)
        if jnp.iscomplexobj(out):
            return jnp.concatenate([jnp.real(out).ravel(), jnp.imag(out).ravel()])
        return out.ravel()

    jf = np.asarray(jax.jit(jax.jacfwd(fr))(p))
    if reverse:
        np.testing.assert_allclose(jax.jit(jax.jacrev(fr))(p), jf, rtol=1e-12, atol=1e-14)
    eye = jnp.eye(p.size) * step
    pts = jnp.concatenate([p + 2 * eye, p + eye, p - eye, p - 2 * eye])
    vals = np.asarray(jax.jit(jax.vmap(fr))(pts)).reshape(4, p.size, -1)
    fd = ((-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * step)).T
    assert np.max(np.abs(fd)) > 0
    np.testing.assert_allclose(jf, fd, rtol=rtol, atol=rtol * np.max(np.abs(fd)))


# (v, sigma, h) in pixels; n_h = 0 .. 4 (h3 .. h6)
GH_CASES = [
    (0.0, 2.0, []),
    (3.7, 1.3, [0.1]),
    (-2.2, 4.0, [-0.08, 0.06]),
    (1.1, 2.5, [0.05, -0.07, 0.03]),
    (0.4, 3.1, [-0.04, 0.09, 0.02, -0.05]),
]


# ---------------------------------------------------------------------------- Hermite
def test_hermite_polynomials_match_closed_forms():
    y = np.linspace(-6, 6, 101)
    hp = losvd.hermite_polynomials(jnp.asarray(y), 8)
    # van der Marel & Franx (1993), appendix A, for H3, H4
    np.testing.assert_allclose(hp[3], (2 * np.sqrt(2) * y**3 - 3 * np.sqrt(2) * y) / np.sqrt(6),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hp[4], (4 * y**4 - 12 * y**2 + 3) / np.sqrt(24),
                               rtol=1e-12, atol=1e-12)
    for m in range(9):  # physicists' Hermite / sqrt(2^m m!)
        ref = special.eval_hermite(m, y) / math.sqrt(2.0**m * math.factorial(m))
        np.testing.assert_allclose(hp[m], ref, rtol=1e-11, atol=1e-11)


def test_hermite_orthonormal_with_weight_alpha_squared():
    # vdMF93 orthonormality: integral H_l H_m alpha^2 dy = delta_lm / (2 sqrt(pi)); alpha^2 =
    # exp(-y^2) / (2 pi), integrated exactly by 40-point Gauss-Hermite quadrature
    nodes, weights = np.polynomial.hermite.hermgauss(40)
    hp = np.asarray(losvd.hermite_polynomials(jnp.asarray(nodes), 8))
    gram = (hp * weights) @ hp.T / (2 * np.pi)
    np.testing.assert_allclose(gram, np.eye(9) / (2 * np.sqrt(np.pi)), atol=1e-13)


# ---------------------------------------------------------------------------- Gauss-Hermite
@pytest.mark.parametrize("v,sigma,h", GH_CASES)
def test_gauss_hermite_ft_matches_numerical_transform(v, sigma, h):
    h = jnp.asarray(h, dtype=float)
    ft = np.asarray(losvd.gauss_hermite_ft(jnp.asarray(OMEGA), v, sigma, h))
    ref = numerical_ft(lambda x: losvd.gauss_hermite_pdf(x, v, sigma, h), OMEGA, v, 20 * sigma)
    np.testing.assert_allclose(ft, ref, rtol=0, atol=1e-10)
    assert np.max(np.abs(ref)) > 0.9  # the comparison is not between two zeros


@pytest.mark.parametrize("v,sigma,h", GH_CASES)
def test_gauss_hermite_normalisation(v, sigma, h):
    h_arr = jnp.asarray(h, dtype=float)
    ft0 = complex(losvd.gauss_hermite_ft(jnp.zeros(1), v, sigma, h_arr)[0])
    integral, _ = integrate.quad(lambda x: float(losvd.gauss_hermite_pdf(x, v, sigma, h_arr)),
                                 v - 20 * sigma, v + 20 * sigma, limit=200)
    # even terms do not integrate to zero: (-i)^m H_m(0) = sqrt(3/8) for m = 4, 15/sqrt(720) for 6
    hh = dict(zip(range(3, 3 + len(h)), h))
    expected = 1 + hh.get(4, 0.0) * np.sqrt(3 / 8) + hh.get(6, 0.0) * 15 / np.sqrt(720)
    assert ft0.imag == pytest.approx(0.0, abs=1e-15)
    assert ft0.real == pytest.approx(expected, rel=1e-12)
    assert integral == pytest.approx(expected, rel=1e-10)
    if 4 not in hh and 6 not in hh:
        assert ft0.real == pytest.approx(1.0, rel=1e-14)


def test_gaussian_moments_are_v_and_sigma():
    v, sigma = 2.3, 1.7
    x = jnp.linspace(v - 20 * sigma, v + 20 * sigma, 4001)
    norm, mean, disp = losvd.pdf_moments(x, losvd.gauss_hermite_pdf(x, v, sigma, jnp.zeros(0)))
    assert float(norm) == pytest.approx(1.0, rel=1e-12)
    assert float(mean) == pytest.approx(v, rel=1e-12)
    assert float(disp) == pytest.approx(sigma, rel=1e-12)


@pytest.mark.parametrize("v", [3.0, -5.0, 2.4])
def test_sign_convention_positive_v_shifts_to_the_red(v):
    n, j0, sigma = 256, 100, 3.0  # sigma >~ 3 px: the band limit at Nyquist is negligible
    delta = jnp.zeros(n).at[j0].set(1.0)
    omega = 2 * jnp.pi * jnp.arange(n // 2 + 1) / n
    model = jnp.fft.irfft(jnp.fft.rfft(delta) * losvd.gauss_hermite_ft(omega, v, sigma, jnp.zeros(0)), n)
    model = np.asarray(model)
    j = np.arange(n)
    centroid = np.sum(j * model) / np.sum(model)
    assert centroid == pytest.approx(j0 + v, abs=1e-9)
    assert abs(np.argmax(model) - (j0 + v)) <= 0.5
    assert np.sum(model) == pytest.approx(1.0, rel=1e-12)


def test_positive_h3_skews_towards_high_velocity():
    # van der Marel & Franx (1993): h3 > 0 gives a tail to high velocity, with the
    # peak displaced to lower velocity; the mean moves by sqrt(3) h3 sigma.
    v, sigma, h3 = 0.0, 2.0, 0.1
    x = jnp.linspace(-30, 30, 60001)
    pdf = np.asarray(losvd.gauss_hermite_pdf(x, v, sigma, jnp.array([h3])))
    xs = np.asarray(x)
    dx = xs[1] - xs[0]
    mean = np.sum(xs * pdf) * dx
    third = np.sum((xs - mean) ** 3 * pdf) * dx
    assert mean == pytest.approx(np.sqrt(3) * h3 * sigma, rel=1e-8)
    assert third > 0
    assert xs[np.argmax(pdf)] < v


@pytest.mark.parametrize("v,sigma,h", [GH_CASES[2], GH_CASES[4]])
def test_gauss_hermite_jit_vmap_grad(v, sigma, h):
    h = jnp.asarray(h, dtype=float)
    omega = jnp.asarray(OMEGA)
    eager = losvd.gauss_hermite_ft(omega, v, sigma, h)
    jitted = jax.jit(losvd.gauss_hermite_ft)(omega, v, sigma, h)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13, atol=1e-15)

    vs = jnp.array([v, v + 0.3, v - 1.1])
    sigmas = jnp.array([sigma, 1.1 * sigma, 0.8 * sigma])
    hs = jnp.stack([h, 0.5 * h, -h])
    batched = jax.vmap(losvd.gauss_hermite_ft, in_axes=(None, 0, 0, 0))(omega, vs, sigmas, hs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], losvd.gauss_hermite_ft(omega, vs[i], sigmas[i], hs[i]),
                                   rtol=1e-13, atol=1e-15)

    p = jnp.concatenate([jnp.array([v, sigma]), h])
    assert_jacobian_matches_fd(lambda q: losvd.gauss_hermite_ft(omega, q[0], q[1], q[2:]), p)
    assert_jacobian_matches_fd(lambda q: losvd.gauss_hermite_pdf(jnp.linspace(-5, 5, 11), q[0], q[1], q[2:]),
                               p, reverse=False)


def test_gauss_hermite_check_grads():
    omega = jnp.asarray(OMEGA[:20])

    def scalar(p):
        ft = losvd.gauss_hermite_ft(omega, p[0], p[1], p[2:])
        return jnp.sum(jnp.real(ft) * jnp.arange(20)) + jnp.sum(jnp.imag(ft) ** 2)

    check_grads(scalar, (jnp.array([1.1, 2.5, 0.05, -0.07]),), order=1, modes=["rev", "fwd"])


@pytest.mark.parametrize("moments", [2, 3, 4, 5, 6])
def test_gauss_hermite_ft_hessian_equals_second_derivatives(moments):
    """The closed-form Hessian of Re sum(c * L_hat) against JAX's automatic second
    derivatives of the transform and against central differences of the transform."""
    rng = np.random.default_rng(moments)
    omega = jnp.asarray(OMEGA)
    c = jnp.asarray(rng.normal(size=OMEGA.size) + 1j * rng.normal(size=OMEGA.size))
    p = jnp.asarray([1.7, 3.1, 0.06, -0.05, 0.03, -0.02][:moments])
    family = losvd.LOSVDFamily.gauss_hermite(moments)

    def scalar(q):
        return jnp.real(jnp.sum(c * losvd.gauss_hermite_ft(omega, q[0], q[1], q[2:])))

    closed = family.ft_hessian(omega, p, c)
    auto = jax.hessian(scalar)(p)
    np.testing.assert_allclose(closed, auto, rtol=1e-11, atol=1e-11 * float(jnp.max(jnp.abs(auto))))
    np.testing.assert_allclose(closed, closed.T, rtol=0, atol=0)
    step = 1e-4
    eye = np.eye(moments) * step
    fd = np.array([[(scalar(p + eye[i] + eye[j]) - scalar(p + eye[i] - eye[j]) - scalar(p - eye[i] + eye[j])
                     + scalar(p - eye[i] - eye[j])) / (4 * step**2) for j in range(moments)] for i in range(moments)])
    np.testing.assert_allclose(closed, fd, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(auto))))
    if moments > 2:  # the transform is linear in h: no h-h curvature
        np.testing.assert_array_equal(np.asarray(closed)[2:, 2:], 0.0)


def test_sanders_evans_ft_hessian_by_automatic_differentiation():
    family = losvd.LOSVDFamily.sanders_evans()
    omega = jnp.asarray(OMEGA)
    c = jnp.asarray(np.cos(OMEGA) + 0.5j)
    p = jnp.asarray([0.5, 2.5, 0.6, 0.2])
    hess = family.ft_hessian(omega, p, c)
    step = 1e-4
    grad = jax.grad(lambda q: jnp.real(jnp.sum(c * family.ft(omega, q))))
    fd = np.array([(grad(p + step * e) - grad(p - step * e)) / (2 * step) for e in np.eye(4)])
    np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-7 * float(jnp.max(jnp.abs(hess))))


def test_gauss_hermite_ft_in_float32_input_keeps_working():
    ft = losvd.gauss_hermite_ft(jnp.asarray(OMEGA, dtype=jnp.float32), 1.0, 2.0, jnp.array([0.1]))
    assert ft.shape == OMEGA.shape and jnp.iscomplexobj(ft)


def test_moment_names_and_family():
    assert losvd.gauss_hermite_moment_names(2) == ("V", "SIGMA")
    assert losvd.gauss_hermite_moment_names(6) == ("V", "SIGMA", "H3", "H4", "H5", "H6")
    fam = losvd.LOSVDFamily.gauss_hermite(4)
    assert fam.name == "gauss_hermite" and fam.n_params == 4
    assert fam.param_names == ("V", "SIGMA", "H3", "H4")
    assert fam == losvd.LOSVDFamily.gauss_hermite(4) and hash(fam) == hash(losvd.LOSVDFamily.gauss_hermite(4))
    assert fam != losvd.LOSVDFamily.gauss_hermite(6)
    params = jnp.array([1.0, 2.0, 0.05, -0.03])
    np.testing.assert_allclose(fam.ft(OMEGA, params),
                               losvd.gauss_hermite_ft(OMEGA, 1.0, 2.0, params[2:]), rtol=1e-15)
    x = jnp.linspace(-10, 10, 21)
    np.testing.assert_allclose(fam.pdf(x, params), losvd.gauss_hermite_pdf(x, 1.0, 2.0, params[2:]),
                               rtol=1e-15)
    # jit with the family as a static argument
    f = jax.jit(lambda p, fam: fam.ft(jnp.asarray(OMEGA), p), static_argnums=1)
    np.testing.assert_allclose(f(params, fam), fam.ft(OMEGA, params), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("bad", [1, 0, 2.0, True, "4"])
def test_bad_moment_count_raises(bad):
    with pytest.raises(InputError, match="moments"):
        losvd.gauss_hermite_moment_names(bad)


def test_bad_h_shape_raises():
    with pytest.raises(InputError, match="h"):
        losvd.gauss_hermite_ft(OMEGA, 0.0, 1.0, jnp.zeros((2, 2)))
    with pytest.raises(InputError, match="h"):
        losvd.gauss_hermite_pdf(OMEGA, 0.0, 1.0, 0.1)


def test_family_rejects_wrong_params_shape():
    fam = losvd.LOSVDFamily.gauss_hermite(4)
    with pytest.raises(InputError, match="V.*SIGMA"):
        fam.ft(OMEGA, jnp.zeros(3))


# ---------------------------------------------------------------------------- Sanders & Evans
KERNELS = ["laplace", "uniform"]
# (v, sigma, a, asym): Gaussian limit, tiny widths (series branch), interior, one-sided kernels
SE_CASES = [
    (0.0, 2.0, 0.0, 0.0),
    (1.2, 2.5, 2e-4, -0.5),
    (-3.1, 3.0, 0.6, 0.4),
    (2.0, 1.6, 1.5, -1.0),
    (0.7, 2.2, 2.5, 1.0),
    (-1.0, 4.0, 3.0, -0.2),
]


_SE_PDF_JIT = {k: jax.jit(lambda x, v, s, a, d, k=k: losvd.sanders_evans_pdf(x, v, s, a, d, kernel=k))
               for k in KERNELS}


def _se_pdf(kernel, v, sigma, a, asym):
    """Jitted pdf as a function of x only (one compilation per kernel and shape)."""
    return lambda x: _SE_PDF_JIT[kernel](x, v, sigma, a, asym)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("v,sigma,a,asym", SE_CASES)
def test_sanders_evans_ft_matches_numerical_transform(kernel, v, sigma, a, asym):
    ft = np.asarray(losvd.sanders_evans_ft(jnp.asarray(OMEGA), v, sigma, a, asym, kernel=kernel))
    ref = numerical_ft(_se_pdf(kernel, v, sigma, a, asym), OMEGA, v, 40 * sigma)
    np.testing.assert_allclose(ft, ref, rtol=0, atol=1e-10)
    assert ft[0] == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("v,sigma,a,asym", SE_CASES)
def test_sanders_evans_moments_are_exact(kernel, v, sigma, a, asym):
    pdf = _se_pdf(kernel, v, sigma, a, asym)

    def moment(n, centre):
        val, _ = integrate.quad(lambda x: float(pdf(x)) * (x - centre) ** n,
                                v - 60 * sigma, v + 60 * sigma, points=[v], limit=400,
                                epsabs=1e-13, epsrel=1e-12)
        return val

    assert moment(0, 0.0) == pytest.approx(1.0, abs=1e-10)
    mean = moment(1, 0.0)
    assert mean == pytest.approx(v, abs=1e-9)
    var = moment(2, v)
    assert np.sqrt(var) == pytest.approx(sigma, rel=1e-9)
    skew, kurt = losvd.sanders_evans_shape(a, asym, kernel=kernel)
    assert moment(3, v) / var**1.5 == pytest.approx(float(skew), abs=1e-8)
    assert moment(4, v) / var**2 - 3 == pytest.approx(float(kurt), abs=1e-8)


@pytest.mark.parametrize("a,delta", [(0.5, 0.0), (1.0, 0.4), (2.0, -1.3), (3.0, 3.0)])
def test_sanders_evans_shape_matches_paper_table_d2(a, delta):
    # Sanders & Evans (2020), table D2 (excess kurtosis of each kernel family), Delta = a asym
    asym = delta / a
    _, k_lap = losvd.sanders_evans_shape(a, asym, kernel="laplace")
    assert float(k_lap) == pytest.approx(
        6 * (2 * a**4 + 12 * a**2 * delta**2 + delta**4) / (1 + 2 * a**2 + delta**2) ** 2, rel=1e-12)
    _, k_uni = losvd.sanders_evans_shape(a, asym, kernel="uniform")
    assert float(k_uni) == pytest.approx(
        -(16 * a**4 - 4 * a**2 * delta**2 + delta**4) / 120 / (1 + a**2 / 3 + delta**2 / 12) ** 2,
        rel=1e-12)
    assert float(k_lap) > 0 > float(k_uni)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sanders_evans_non_negative_over_parameter_ranges(kernel):
    x = jnp.concatenate([jnp.linspace(-80, 80, 3201), jnp.array([-1e4, -500.0, 500.0, 1e4])])
    lo, hi = losvd.sanders_evans_bounds()
    assert lo == (0.0, -1.0) and hi[1] == 1.0
    grid = [(a, t) for a in [0.0, 1e-7, 5e-4, 0.01, 0.3, 1.0, 2.0, hi[0], 10.0]
            for t in [-1.0, -0.7, -0.2, 0.0, 0.5, 1.0]]
    a = jnp.array([g[0] for g in grid])
    d = jnp.array([g[1] for g in grid])
    pdf = jax.vmap(lambda a, d: losvd.sanders_evans_pdf(x, 0.5, 3.0, a, d, kernel=kernel))(a, d)
    assert bool(jnp.all(jnp.isfinite(pdf)))
    assert float(jnp.min(pdf)) >= 0.0
    # the Gauss-Hermite series with comparable shape is negative somewhere
    gh = losvd.gauss_hermite_pdf(x, 0.0, 3.0, jnp.array([0.1]))
    assert float(jnp.min(gh)) < 0.0


@pytest.mark.parametrize("kernel", KERNELS)
def test_sanders_evans_gaussian_limit(kernel):
    x = jnp.linspace(-15, 15, 61)
    np.testing.assert_allclose(losvd.sanders_evans_pdf(x, 1.0, 2.0, 0.0, 0.0, kernel=kernel),
                               losvd.gauss_hermite_pdf(x, 1.0, 2.0, jnp.zeros(0)), rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(losvd.sanders_evans_ft(OMEGA, 1.0, 2.0, 0.0, 0.0, kernel=kernel),
                               losvd.gauss_hermite_ft(OMEGA, 1.0, 2.0, jnp.zeros(0)), rtol=1e-13, atol=1e-300)
    # continuity across the small-width series branch
    for a in [0.999e-3, 1.001e-3, 0.999e-6, 1.001e-6]:
        p1 = losvd.sanders_evans_pdf(x, 1.0, 2.0, a, 0.3, kernel=kernel)
        p2 = losvd.sanders_evans_pdf(x, 1.0, 2.0, a * 1.0000001, 0.3, kernel=kernel)
        np.testing.assert_allclose(p1, p2, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sanders_evans_positive_asym_skews_to_high_velocity(kernel):
    x = jnp.linspace(-60, 60, 24001)
    pdf = np.asarray(losvd.sanders_evans_pdf(x, 0.0, 3.0, 1.0, 0.6, kernel=kernel))
    xs = np.asarray(x)
    assert np.sum((xs) ** 3 * pdf) > 0
    assert xs[np.argmax(pdf)] < 0.0
    skew, _ = losvd.sanders_evans_shape(1.0, 0.6, kernel=kernel)
    assert float(skew) > 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_sanders_evans_delta_template_shift(kernel):
    n, j0, v = 256, 90, 7.3
    delta = jnp.zeros(n).at[j0].set(1.0)
    omega = 2 * jnp.pi * jnp.arange(n // 2 + 1) / n
    model = np.asarray(jnp.fft.irfft(
        jnp.fft.rfft(delta) * losvd.sanders_evans_ft(omega, v, 4.0, 0.8, 0.3, kernel=kernel), n))
    j = np.arange(n)
    assert np.sum(j * model) / np.sum(model) == pytest.approx(j0 + v, abs=1e-8)
    assert np.sum(model) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sanders_evans_jit_vmap_grad(kernel):
    omega = jnp.asarray(OMEGA)
    f = lambda p: losvd.sanders_evans_ft(omega, *p, kernel=kernel)
    p0 = jnp.array([1.3, 2.4, 0.9, -0.35])
    np.testing.assert_allclose(jax.jit(f)(p0), f(p0), rtol=1e-13, atol=1e-15)
    ps = jnp.array([p0, [0.0, 3.0, 0.0, 0.0], [-2.0, 1.5, 2.0, 1.0]])
    batched = jax.vmap(f)(ps)
    for i in range(3):
        np.testing.assert_allclose(batched[i], f(ps[i]), rtol=1e-13, atol=1e-15)

    assert_jacobian_matches_fd(f, p0)
    xs = jnp.linspace(-8, 8, 17)
    assert_jacobian_matches_fd(lambda p: losvd.sanders_evans_pdf(xs, *p, kernel=kernel), p0, reverse=False)
    # gradients stay finite at the Gaussian point (a = 0)
    for fn in (lambda p: jnp.sum(jnp.abs(f(p)) ** 2),
               lambda p: jnp.sum(losvd.sanders_evans_pdf(xs, *p, kernel=kernel))):
        g = jax.jit(jax.grad(fn))(jnp.array([0.5, 2.0, 0.0, 0.0]))
        assert bool(jnp.all(jnp.isfinite(g)))


def test_sanders_evans_family():
    for kernel in KERNELS:
        fam = losvd.LOSVDFamily.sanders_evans(kernel)
        assert fam.name == f"sanders_evans_{kernel}"
        assert fam.param_names == ("V", "SIGMA", "A", "ASYM") and fam.n_params == 4
        p = jnp.array([0.4, 2.2, 0.7, 0.1])
        np.testing.assert_allclose(fam.ft(OMEGA, p),
                                   losvd.sanders_evans_ft(OMEGA, 0.4, 2.2, 0.7, 0.1, kernel=kernel),
                                   rtol=1e-15)
        # the documented start has a Jacobian column for A and ASYM that is not zero
        start = jnp.array([0.4, 2.2, *fam.shape_start])
        jac = jax.jacfwd(lambda q: jnp.concatenate([jnp.real(fam.ft(OMEGA, q)),
                                                    jnp.imag(fam.ft(OMEGA, q))]))(start)
        assert float(jnp.min(jnp.max(jnp.abs(jac), axis=0))) > 1e-2
        lo, hi = losvd.sanders_evans_bounds()
        assert all(lo[i] <= fam.shape_start[i] <= hi[i] for i in range(2))
    assert losvd.LOSVDFamily.sanders_evans("laplace") != losvd.LOSVDFamily.sanders_evans("uniform")
    assert losvd.LOSVDFamily.gauss_hermite(6).shape_start == (0.0,) * 4


def test_sanders_evans_bad_kernel_raises():
    with pytest.raises(InputError, match="kernel"):
        losvd.sanders_evans_ft(OMEGA, 0.0, 1.0, 0.5, 0.0, kernel="cauchy")
    with pytest.raises(InputError, match="kernel"):
        losvd.sanders_evans_pdf(OMEGA, 0.0, 1.0, 0.5, 0.0, kernel="gauss")
    with pytest.raises(InputError, match="kernel"):
        losvd.LOSVDFamily.sanders_evans("box")
    with pytest.raises(InputError, match="kernel"):
        losvd.sanders_evans_shape(0.5, 0.0, kernel="")


@pytest.mark.parametrize("fam,params", [
    (losvd.LOSVDFamily.gauss_hermite(2), [1.0, 2.0]),
    (losvd.LOSVDFamily.gauss_hermite(4), [0.7, 2.5, 0.08, 0.05]),
    (losvd.LOSVDFamily.gauss_hermite(6), [-1.2, 3.0, -0.05, 0.04, 0.03, -0.02]),
    (losvd.LOSVDFamily.sanders_evans("laplace"), [0.4, 2.2, 1.2, 0.5]),
    (losvd.LOSVDFamily.sanders_evans("uniform"), [-0.3, 1.8, 2.0, -0.5]),
])
def test_ft_moments_match_sampled_pdf(fam, params):
    params = jnp.asarray(params)
    x = jnp.linspace(-100, 100, 20001)
    norm_ref, mean_ref, disp_ref = losvd.pdf_moments(x, fam.pdf(x, params))
    norm, mean, disp = fam.moments(params)
    assert float(norm) == pytest.approx(float(norm_ref), rel=1e-10)
    assert float(mean) == pytest.approx(float(mean_ref), abs=1e-9)
    assert float(disp) == pytest.approx(float(disp_ref), rel=1e-9)
    if fam.name.startswith("sanders_evans") or fam.n_params == 2:
        assert float(mean) == pytest.approx(float(params[0]), abs=1e-12)
        assert float(disp) == pytest.approx(float(params[1]), rel=1e-12)
    if fam.n_params == 4 and fam.name == "gauss_hermite":  # integral alpha y H3 = sqrt3, integral alpha H4 = sqrt(3/8)
        v, s, h3, h4 = np.asarray(params)
        assert float(mean) == pytest.approx(v + np.sqrt(3) * h3 * s / (1 + np.sqrt(3 / 8) * h4), rel=1e-12)


@pytest.mark.parametrize("kernel,truth", [("laplace", [3.3, 2.5, 0.8, 0.4]), ("uniform", [-2.1, 3.0, 2.0, -0.5])])
def test_sanders_evans_recovered_from_shape_start(kernel, truth):
    """Noiseless spectrum convolved with a known LOSVD: a bounded Gauss-Newton fit
    (scipy least_squares, Jacobian by jax) from the family's documented start and
    bounds recovers every parameter."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(3)
    n = 512
    pix = np.arange(n)
    template = np.ones(n)
    for c, d in zip(rng.uniform(30, n - 30, 60), rng.uniform(0.05, 0.5, 60)):
        template -= d * np.exp(-0.5 * ((pix - c) / 1.2) ** 2)
    tft = jnp.fft.rfft(jnp.asarray(template))
    omega = 2 * jnp.pi * jnp.arange(n // 2 + 1) / n
    fam = losvd.LOSVDFamily.sanders_evans(kernel)
    model = jax.jit(lambda p: jnp.fft.irfft(tft * fam.ft(omega, p), n))
    jac = jax.jit(jax.jacfwd(model))
    truth = np.array(truth)
    data = np.asarray(model(truth))
    lo, hi = losvd.sanders_evans_bounds()
    start = np.array([truth[0] + 0.7, 1.2 * truth[1], *fam.shape_start])
    fit = least_squares(lambda p: np.asarray(model(p)) - data, start, jac=lambda p: np.asarray(jac(p)),
                        bounds=([-50, 0.3, lo[0], lo[1]], [50, 20, hi[0], hi[1]]), x_scale="jac",
                        xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(fit.x, truth, rtol=0, atol=1e-6)
