"""Kernels of the spatial priors against tinygp and against their own spectral densities.

References: Rasmussen & Williams (2006) eqs. 4.9, 4.14, 4.17 (correlations) and 4.15,
4.20 (spectral densities); a stationary correlation is the inverse Fourier transform of
its spectral density, ``rho(d) = int S(w) exp(i w.d) d^D w / (2 pi)^D``, which for an
isotropic density becomes ``int_0^inf S(w) cos(w d) dw / pi`` (D = 1) and the Hankel
transform ``int_0^inf S(w) J0(w d) w dw / (2 pi)`` (D = 2).
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from cube3d.errors import InputError
from cube3d.spatial.kernels import (
    KINDS,
    KernelSpec,
    correlation,
    covariance,
    parse_kernel,
    spectral_density,
    tinygp_kernel,
)


def points(n=23, seed=0):
    """Scattered (y, x) points with a repeated one (distance exactly 0)."""
    x = np.random.default_rng(seed).uniform(-4.0, 6.0, size=(n, 2))
    x[-1] = x[0]
    return jnp.asarray(x)


SPECS = [KernelSpec((k,), sep) for k in KINDS for sep in (False, True)] + [
    KernelSpec(("matern32", "expsquared"), False),
    KernelSpec(("matern52", "matern32", "expsquared"), True),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "+".join(s.terms) + ("-sep" if s.separable else "-iso"))
def test_covariance_matches_tinygp(spec):
    x = points()
    amp = jnp.asarray([3.0, 0.7, 1.9][: spec.n_terms])
    scale = jnp.asarray([2.2, 0.6, 5.0][: spec.n_terms])
    ours = covariance(spec, amp, scale, x, x[:17])
    ref = tinygp_kernel(spec, amp, scale)(x, x[:17])
    assert ours.shape == (23, 17)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    # the diagonal is the total variance, sum of amp^2
    np.testing.assert_allclose(jnp.diagonal(covariance(spec, amp, scale, x, x)), jnp.sum(amp**2), rtol=1e-14)


def test_isotropic_and_separable_differ_off_axis():
    # same along an axis, different along a diagonal (guards against a silent swap)
    iso, sep = KernelSpec(("matern52",), False), KernelSpec(("matern52",), True)
    o = jnp.zeros((1, 2))
    on_axis, diag = jnp.asarray([[0.0, 2.0]]), jnp.asarray([[1.5, 1.5]])
    a, s = jnp.ones(1), jnp.asarray([2.0])
    np.testing.assert_allclose(covariance(iso, a, s, o, on_axis), covariance(sep, a, s, o, on_axis), rtol=1e-14)
    u = np.sqrt(5.0) * 1.5 * np.sqrt(2.0) / 2.0
    expect_iso = (1 + u + u * u / 3) * np.exp(-u)  # R&W eq. 4.17 at d = 1.5 sqrt(2)
    u1 = np.sqrt(5.0) * 1.5 / 2.0
    expect_sep = ((1 + u1 + u1 * u1 / 3) * np.exp(-u1)) ** 2
    np.testing.assert_allclose(covariance(iso, a, s, o, diag)[0, 0], expect_iso, rtol=1e-13)
    np.testing.assert_allclose(covariance(sep, a, s, o, diag)[0, 0], expect_sep, rtol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_correlation_closed_forms(kind):
    u = np.array([0.0, 0.3, 1.0, 2.5])
    if kind == "matern32":
        a = np.sqrt(3.0) * u
        ref = (1 + a) * np.exp(-a)
    elif kind == "matern52":
        a = np.sqrt(5.0) * u
        ref = (1 + a + a * a / 3) * np.exp(-a)
    else:
        ref = np.exp(-0.5 * u * u)
    np.testing.assert_allclose(correlation(kind, jnp.asarray(u)), ref, rtol=1e-14)
    assert float(correlation(kind, 0.0)) == 1.0


def test_covariance_gradient_finite_at_zero_distance():
    spec = KernelSpec(("matern32",), False)
    x = jnp.zeros((1, 2))
    g = jax.grad(lambda y: covariance(spec, jnp.ones(1), jnp.ones(1), x, y[None])[0, 0])(jnp.zeros(2))
    assert np.all(np.isfinite(g))


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(48)


def _piecewise_gauss(f, edges):
    """Sum of 48-point Gauss-Legendre rules over consecutive ``edges``; ``f`` vectorised."""
    a, b = edges[:-1, None], edges[1:, None]
    w = 0.5 * (b - a) * (_NODES[None, :] + 1.0) + a
    vals = np.asarray(f(w)) * 0.5 * (b - a) * _WEIGHTS[None, :]
    return float(np.sum(vals)), float(np.max(np.abs(np.sum(vals[-20:], axis=1))))


def _edges(zeros, w_max):
    """Interval edges: zeros of the oscillating factor merged with a geometric grid."""
    return np.unique(np.r_[0.0, np.geomspace(1e-3, w_max, 400), zeros[zeros < w_max]])


def _ift_1d(kind, scale, d):
    """``int_0^inf S(w) cos(w d) dw / pi`` by quadrature between the zeros of the cosine."""
    w_max = 2e4
    zeros = (np.arange(int(w_max * d / np.pi) + 1) + 0.5) * np.pi / d if d > 0 else np.zeros(0)
    val, tail = _piecewise_gauss(lambda w: spectral_density(kind, w * w, scale, 1) * np.cos(w * d),
                                 _edges(zeros, w_max))
    assert tail < 1e-9  # the last pieces (near w_max) no longer matter
    return val / np.pi


def _ift_2d(kind, scale, d):
    """Hankel transform ``int_0^inf S(w) J0(w d) w dw / (2 pi)`` between the zeros of J0."""
    w_max = 2e4
    zeros = special.jn_zeros(0, int(w_max * d / np.pi) + 2) / d if d > 0 else np.zeros(0)
    val, tail = _piecewise_gauss(lambda w: spectral_density(kind, w * w, scale, 2) * special.j0(w * d) * w,
                                 _edges(zeros, w_max))
    assert tail < 1e-9
    return val / (2.0 * np.pi)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [0.7, 3.0])
def test_spectral_density_is_fourier_pair(kind, scale):
    for d in (0.0, 0.5, 2.0, 5.0):
        rho = float(correlation(kind, d / scale))
        assert abs(_ift_1d(kind, scale, d) - rho) < 1e-6, (kind, scale, d)
        assert abs(_ift_2d(kind, scale, d) - rho) < 1e-6, (kind, scale, d)


@pytest.mark.parametrize("kind", KINDS)
def test_spectral_density_positive_decreasing(kind):
    w2 = jnp.linspace(0.0, 50.0, 101)
    for dim in (1, 2):
        s = spectral_density(kind, w2, 1.3, dim)
        assert np.all(np.asarray(s) > 0) and np.all(np.diff(np.asarray(s)) < 0)


def test_parse_kernel():
    assert parse_kernel("matern52") == KernelSpec(("matern52",), False)
    assert parse_kernel(" Matern32 + expsquared ", separable=True) == KernelSpec(("matern32", "expsquared"), True)
    spec = KernelSpec(("expsquared",), True)
    assert parse_kernel(spec) is spec
    assert parse_kernel("matern32+matern52+expsquared").n_terms == 3
    for bad in ("rbf", "", "matern52+", "matern52+rq", "matern12"):
        with pytest.raises(InputError, match="kernel"):
            parse_kernel(bad)
    assert issubclass(InputError, ValueError)
    with pytest.raises(InputError):
        correlation("cosine", 1.0)


def test_registry_round_trip():
    """Every registered kind: named as its key, found by parse_kernel, and the same
    correlation as its tinygp counterpart (1-D, along one axis)."""
    import inspect

    from cube3d.spatial.kernels import KERNELS, KernelKind, get_kernel

    assert KINDS == tuple(KERNELS) and set(KINDS) == {"matern32", "matern52", "expsquared"}
    d = jnp.asarray([[0.0], [0.4], [1.3], [3.7]])
    for name, kind in KERNELS.items():
        assert isinstance(kind, KernelKind) and not inspect.isabstract(type(kind))
        assert kind.name == name and get_kernel(name) is kind and kind.hsgp_c_nu > 0
        assert parse_kernel(name.upper()).kinds == (kind,)
        ref = kind.tinygp_class(scale=1.7)(d, jnp.zeros((1, 1)))[:, 0]
        np.testing.assert_allclose(kind.correlation(d[:, 0] / 1.7), ref, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(spectral_density(name, 0.3, 1.7, 2), kind.spectral_density(0.3, 1.7, 2), rtol=0)
    with pytest.raises(TypeError):
        KernelKind()


def test_new_kernel_needs_only_registration(monkeypatch):
    """A kind added to KERNELS alone works in parsing, covariance, the Hilbert basis and tinygp."""
    from cube3d.spatial import hsgp
    from cube3d.spatial.kernels import KERNELS, Matern52

    class Twin(Matern52):
        name = "twin52"

    monkeypatch.setitem(KERNELS, "twin52", Twin())
    spec = parse_kernel("twin52+expsquared", separable=True)
    ref = KernelSpec(("matern52", "expsquared"), True)
    x, amp, scale = points(9), jnp.asarray([1.0, 0.5]), jnp.asarray([2.0, 3.0])
    np.testing.assert_array_equal(covariance(spec, amp, scale, x, x), covariance(ref, amp, scale, x, x))
    np.testing.assert_allclose(tinygp_kernel(spec, amp, scale)(x, x), covariance(ref, amp, scale, x, x), rtol=1e-12)
    basis = hsgp.make_basis((6, 5), hsgp.basis_size(spec, (6, 5), 1.0))
    np.testing.assert_array_equal(hsgp.spectral_weights(spec, basis, amp, scale),
                                  hsgp.spectral_weights(ref, basis, amp, scale))
