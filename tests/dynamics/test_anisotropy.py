"""Anisotropy models: beta(r), integrating factors, Mamon & Lokas (2005) kernels, limits, bad input."""

import jax
import jax.numpy as jnp
import numpy
import pytest
from jax.test_util import check_grads
from scipy import special

from dynamics import BaesVanHese, ConstantBeta, Isotropic, OsipkovMerritt
from dynamics._quadrature import panel_nodes
from dynamics.jeans import _numeric_kernel

R_GRID = numpy.array([0.01, 0.2, 0.7, 1.0, 3.0, 25.0])

# (name, model, closed-form beta(r))
CASES = [
    ("isotropic", Isotropic(), lambda r: 0.0 * r),
    ("constant", ConstantBeta(0.35), lambda r: 0.35 + 0.0 * r),
    ("tangential", ConstantBeta(-0.8), lambda r: -0.8 + 0.0 * r),
    ("om", OsipkovMerritt(0.6), lambda r: r**2 / (r**2 + 0.36)),
    ("bvh", BaesVanHese(-0.2, 0.6, 0.8, 2.5),
     lambda r: (-0.2 + 0.6 * (r / 0.8) ** 2.5) / (1 + (r / 0.8) ** 2.5)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name, model, beta", CASES, ids=IDS)
def test_beta_values(name, model, beta):
    numpy.testing.assert_allclose(model.beta(jnp.asarray(R_GRID)), beta(R_GRID), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name, model, beta", CASES, ids=IDS)
def test_integrating_factor_derivative_is_two_beta(name, model, beta):
    dlnf = jax.jit(jax.vmap(jax.grad(lambda lr: model.log_integrating_factor(jnp.exp(lr)))))
    numpy.testing.assert_allclose(dlnf(jnp.log(R_GRID)), 2 * beta(R_GRID), rtol=1e-12, atol=1e-14)


def _kernels(model, R, n_panels=32, order=12):
    """Numerical kernel on nodes t in [0, 8] at projected radius R, and the nodes."""
    Rv = jnp.atleast_1d(R)
    t, half = panel_nodes(0.0, 8.0 + 0.0 * Rv, n_panels, order)
    return _numeric_kernel(t, half, Rv, model), t


@pytest.mark.parametrize("model", [Isotropic(), OsipkovMerritt(0.05), OsipkovMerritt(0.6),
                                   OsipkovMerritt(20.0)], ids=["iso", "om-small", "om", "om-large"])
@pytest.mark.parametrize("R", [0.1, 1.0, 4.0])
def test_closed_kernels_match_quadrature_kernel(model, R):
    numeric, t = _kernels(model, R)
    closed = model.kernel(t, jnp.asarray(R))
    numpy.testing.assert_allclose(numeric, closed, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("beta", [0.55, 0.7, 0.95])
def test_constant_beta_kernel_against_mamon_lokas_closed_form(beta):
    # Mamon & Lokas (2005) eq. A16, valid for beta > 1/2 with real incomplete beta functions
    numeric, t = _kernels(ConstantBeta(beta), 1.0)
    u = numpy.cosh(numpy.asarray(t)).ravel()
    B = lambda a, b, x: special.betainc(a, b, x) * special.beta(a, b)
    x = 1.0 / u**2
    closed = 0.5 * u ** (2 * beta - 1) * (
        (1.5 - beta) * numpy.sqrt(numpy.pi) * special.gamma(beta - 0.5) / special.gamma(beta)
        + beta * B(beta + 0.5, 0.5, x) - B(beta - 0.5, 0.5, x))
    numpy.testing.assert_allclose(numpy.asarray(numeric).ravel(), closed, rtol=1e-9, atol=1e-12)


def test_limits_reduce_to_simpler_models():
    iso, _ = _kernels(Isotropic(), 0.5)
    for model in (ConstantBeta(0.0), BaesVanHese(0.0, 0.0, 1.0, 2.0), OsipkovMerritt(1e10)):
        k, _ = _kernels(model, 0.5)
        numpy.testing.assert_allclose(k, iso, rtol=1e-10, atol=1e-14)
    const, _ = _kernels(ConstantBeta(0.4), 0.5)
    bvh, _ = _kernels(BaesVanHese(0.4, 0.4, 0.3, 1.5), 0.5)
    numpy.testing.assert_allclose(bvh, const, rtol=1e-12)


def test_kernels_jit_vmap_and_gradients():
    t = jnp.linspace(0.01, 5.0, 7)
    om = lambda ra, R: OsipkovMerritt(ra).kernel(t, R)
    numpy.testing.assert_allclose(jax.jit(om)(0.6, 0.5), om(0.6, 0.5), rtol=1e-14)
    batched = jax.vmap(om, in_axes=(0, None))(jnp.asarray([0.3, 0.6]), 0.5)
    numpy.testing.assert_allclose(batched[1], om(0.6, 0.5), rtol=1e-14)
    check_grads(jax.jit(om), (0.6, 0.5), order=1, modes=("rev",))
    bvh = jax.jit(lambda p: _kernels(BaesVanHese(p[0], p[1], p[2], p[3]), 0.5, 8, 8)[0])
    check_grads(bvh, (jnp.asarray([-0.2, 0.6, 0.8, 2.5]),), order=1, modes=("rev",))


BAD = [
    (lambda: ConstantBeta(1.0), "beta"),
    (lambda: ConstantBeta(1.5), "beta"),
    (lambda: ConstantBeta(jnp.nan), "beta"),
    (lambda: OsipkovMerritt(0.0), "r_a"),
    (lambda: OsipkovMerritt(-1.0), "r_a"),
    (lambda: OsipkovMerritt(jnp.inf), "r_a"),
    (lambda: BaesVanHese(1.0, 0.0, 1.0, 2.0), "beta_0"),
    (lambda: BaesVanHese(0.0, 1.2, 1.0, 2.0), "beta_inf"),
    (lambda: BaesVanHese(0.0, 0.5, 0.0, 2.0), "r_a"),
    (lambda: BaesVanHese(0.0, 0.5, 1.0, -2.0), "eta"),
]


@pytest.mark.parametrize("make, name", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_parameters_raise(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_radii_raise():
    for model in (OsipkovMerritt(0.5), ConstantBeta(0.2), BaesVanHese(0.0, 0.5, 1.0, 2.0)):
        for bad in (numpy.nan, -1.0):
            with pytest.raises(ValueError, match="must be"):
                model.beta(numpy.array([1.0, bad]))
