"""One battery for every density profile: each profile joins with one ``Case`` line.

Checks: values against closed forms (rel 1e-8), dM/dr = 4 pi r^2 rho, Poisson's
equation by autodiff, the Abel projection, the mass and the potential against scipy
quad, jit == eager, batched == scalar, gradients against finite differences, pytree
round trip without retracing, and rejection of bad parameters and radii.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import mpmath
import numpy
import pytest
from jax.test_util import check_grads
from scipy import integrate

from dynamics import (
    G,
    NFW,
    Burkert,
    Composite,
    CoreNFW,
    Einasto,
    Hernquist,
    Plummer,
    Profile,
    Zhao,
)

mpmath.mp.dps = 40
RTOL = 1e-8
X_GRID = numpy.array([1e-3, 0.03, 0.5, 0.999, 1.0, 1.001, 1.7, 10.0, 100.0])   # radii / scale


def _mp(fun):
    """Evaluate an mpmath closed form elementwise at float radii."""
    return lambda r: numpy.array([float(fun(mpmath.mpf(float(x)))) for x in numpy.ravel(r)])


# ----------------------------------------------------------------------------- closed forms
def plummer_refs(m, a):
    return dict(
        density=_mp(lambda r: 3 * m / (4 * mpmath.pi * a**3) * (1 + (r / a) ** 2) ** mpmath.mpf(-2.5)),
        enclosed_mass=_mp(lambda r: m * r**3 / (r**2 + a**2) ** mpmath.mpf(1.5)),
        potential=_mp(lambda r: -G * m / mpmath.sqrt(r**2 + a**2)),
        surface_density=_mp(lambda R: m * a**2 / (mpmath.pi * (a**2 + R**2) ** 2)),
    )


def _X(s):
    # Hernquist (1990) eq. 33
    if s < 1:
        return mpmath.acosh(1 / s) / mpmath.sqrt(1 - s**2)
    if s > 1:
        return mpmath.acos(1 / s) / mpmath.sqrt(s**2 - 1)
    return mpmath.mpf(1)


def _hernquist_sigma(m, a):
    def f(R):
        s = R / a
        if s == 1:
            return 2 * m / (15 * mpmath.pi * a**2)
        return m / (2 * mpmath.pi * a**2 * (1 - s**2) ** 2) * ((2 + s**2) * _X(s) - 3)   # eq. 32
    return f


def hernquist_refs(m, a):
    return dict(
        density=_mp(lambda r: m * a / (2 * mpmath.pi * r * (r + a) ** 3)),        # eq. 2
        enclosed_mass=_mp(lambda r: m * r**2 / (r + a) ** 2),                     # eq. 3
        potential=_mp(lambda r: -G * m / (r + a)),                                 # eq. 5
        surface_density=_mp(_hernquist_sigma(m, a)),
    )


def _nfw_sigma(rho_s, r_s):
    def f(R):
        x = R / r_s
        if x == 1:
            return 2 * rho_s * r_s / 3
        return 2 * rho_s * r_s / (x**2 - 1) * (1 - _X(x))
    return f


def nfw_refs(rho_s, r_s):
    return dict(
        density=_mp(lambda r: rho_s / ((r / r_s) * (1 + r / r_s) ** 2)),
        enclosed_mass=_mp(lambda r: 4 * mpmath.pi * rho_s * r_s**3
                          * (mpmath.log(1 + r / r_s) - (r / r_s) / (1 + r / r_s))),
        potential=_mp(lambda r: -4 * mpmath.pi * G * rho_s * r_s**3 * mpmath.log(1 + r / r_s) / r),
        surface_density=_mp(_nfw_sigma(rho_s, r_s)),
    )


def dehnen_refs(m, a, gamma):
    # Dehnen (1993) eqs. 1, 2, 3 (gamma != 2)
    return dict(
        density=_mp(lambda r: (3 - gamma) * m / (4 * mpmath.pi) * a / (r**gamma * (r + a) ** (4 - gamma))),
        enclosed_mass=_mp(lambda r: m * (r / (r + a)) ** (3 - gamma)),
        potential=_mp(lambda r: G * m / a / (2 - gamma) * ((r / (r + a)) ** (2 - gamma) - 1)),
    )


def zhao_mass_ref(rho_s, r_s, alpha, beta, gamma):
    # Zhao (1996) eq. 5: incomplete beta function
    def f(r):
        x = (r / r_s) ** alpha
        p, q = (3 - gamma) / alpha, (beta - 3) / alpha
        return 4 * mpmath.pi * rho_s * r_s**3 / alpha * mpmath.betainc(p, q, 0, x / (1 + x))
    return dict(enclosed_mass=_mp(f))


def burkert_refs(rho_0, r_0):
    return dict(
        density=_mp(lambda r: rho_0 / ((1 + r / r_0) * (1 + (r / r_0) ** 2))),
        enclosed_mass=_mp(lambda r: mpmath.pi * rho_0 * r_0**3 * (
            mpmath.log(1 + (r / r_0) ** 2) + 2 * mpmath.log(1 + r / r_0) - 2 * mpmath.atan(r / r_0))),
    )


def einasto_refs(rho_2, r_2, alpha):
    def mass(r):
        y = 2 / alpha * (r / r_2) ** alpha
        return (4 * mpmath.pi * rho_2 * r_2**3 * mpmath.exp(2 / alpha) * (alpha / 2) ** (3 / alpha)
                / alpha * mpmath.gammainc(3 / alpha, 0, y))
    return dict(
        density=_mp(lambda r: rho_2 * mpmath.exp(-2 / alpha * ((r / r_2) ** alpha - 1))),
        enclosed_mass=_mp(mass),
    )


def corenfw_refs(rho_s, r_s, r_c, n):
    def mass(r):
        x = r / r_s
        return (4 * mpmath.pi * rho_s * r_s**3 * (mpmath.log(1 + x) - x / (1 + x))
                * mpmath.tanh(r / r_c) ** n)
    return dict(enclosed_mass=_mp(mass))


def sum_refs(*refs):
    keys = set.intersection(*(set(r) for r in refs))
    return {k: (lambda r, k=k: sum(ref[k](r) for ref in refs)) for k in keys}


# ----------------------------------------------------------------------------- registry
@dataclass
class Case:
    name: str
    build: Callable            # parameter vector -> profile
    params: tuple
    refs: dict = field(default_factory=dict)
    scale: float = 1.0

    @property
    def profile(self):
        return self.build(jnp.asarray(self.params))


CASES = [
    Case("plummer", lambda p: Plummer(p[0], p[1]), (2.0e7, 0.4), plummer_refs(2.0e7, 0.4), 0.4),
    Case("hernquist", lambda p: Hernquist(p[0], p[1]), (3e10, 2.5), hernquist_refs(3e10, 2.5), 2.5),
    Case("nfw", lambda p: NFW(p[0], p[1]), (1e7, 1.5), nfw_refs(1e7, 1.5), 1.5),
    Case("zhao", lambda p: Zhao(*p), (4e7, 0.8, 1.5, 3.5, 0.7), zhao_mass_ref(4e7, 0.8, 1.5, 3.5, 0.7), 0.8),
    Case("burkert", lambda p: Burkert(*p), (3e7, 0.9), burkert_refs(3e7, 0.9), 0.9),
    Case("einasto", lambda p: Einasto(*p), (2e6, 3.0, 0.3), einasto_refs(2e6, 3.0, 0.3), 3.0),
    Case("corenfw", lambda p: CoreNFW(*p), (1e7, 1.5, 0.4, 0.8), corenfw_refs(1e7, 1.5, 0.4, 0.8), 1.5),
    Case("plummer+nfw", lambda p: Plummer(p[0], p[1]) + NFW(p[2], p[3]), (2e7, 0.4, 1e7, 1.5),
         sum_refs(plummer_refs(2e7, 0.4), nfw_refs(1e7, 1.5)), 0.4),
]
IDS = [c.name for c in CASES]

# Zhao special cases: same class as "zhao" above, so they join the closed-form checks only.
SPECIAL = [
    Case("zhao=nfw", lambda p: Zhao(p[0], p[1], 1.0, 3.0, 1.0), (1e7, 1.5), nfw_refs(1e7, 1.5), 1.5),
    Case("zhao=hernquist", lambda p: Zhao(p[0] / (2 * jnp.pi * p[1] ** 3), p[1], 1.0, 4.0, 1.0),
         (3e10, 2.5), hernquist_refs(3e10, 2.5), 2.5),
    Case("zhao=plummer", lambda p: Zhao(3 * p[0] / (4 * jnp.pi * p[1] ** 3), p[1], 2.0, 5.0, 0.0),
         (2e7, 0.4), plummer_refs(2e7, 0.4), 0.4),
    Case("zhao=dehnen", lambda p: Zhao((3 - p[2]) * p[0] / (4 * jnp.pi * p[1] ** 3), p[1], 1.0, 4.0, p[2]),
         (5e9, 1.2, 0.5), dehnen_refs(5e9, 1.2, 0.5), 1.2),
]

QUANTITIES = ["density", "enclosed_mass", "potential", "surface_density"]


def _radii(case):
    return case.scale * X_GRID


def _call(profile, quantity, r):
    return getattr(profile, quantity)(r)


@partial(jax.jit, static_argnames="quantity")
def evaluate(profile, r, quantity):
    """Jitted evaluation shared by the tests (one compilation per profile type and shape)."""
    return getattr(profile, quantity)(r)


@jax.jit
def evaluate_all(profile, r):
    return jnp.stack([getattr(profile, q)(r) for q in QUANTITIES])


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES + SPECIAL, ids=IDS + [c.name for c in SPECIAL])
def test_closed_forms(case):
    r = _radii(case)
    assert case.refs, "every case needs at least one reference"
    for quantity, ref in case.refs.items():
        got = numpy.asarray(evaluate(case.profile, jnp.asarray(r), quantity))
        numpy.testing.assert_allclose(got, ref(r), rtol=RTOL, err_msg=f"{case.name}.{quantity}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mass_derivative_is_shell_mass(case):
    r = jnp.asarray(_radii(case)[1:])
    dm, rho = jax.jit(lambda p, r: (jax.vmap(jax.grad(p.enclosed_mass))(r), p.density(r)))(case.profile, r)
    numpy.testing.assert_allclose(dm, 4 * jnp.pi * r**2 * rho, rtol=RTOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_poisson(case):
    r = jnp.asarray(_radii(case)[1:-1])

    @jax.jit
    def laplacian_and_density(prof, r):
        dphi = jax.grad(prof.potential)
        lap = jax.vmap(lambda x: jax.grad(lambda y: y**2 * dphi(y))(x) / x**2)(r)
        return lap, prof.density(r)

    lap, rho = laplacian_and_density(case.profile, r)
    numpy.testing.assert_allclose(lap, 4 * jnp.pi * G * rho, rtol=1e-7)


def _np_density(prof):
    f = jax.jit(lambda p, r: p.density(r))
    return lambda r: float(f(prof, r))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_abel_projection_against_quad(case):
    prof = case.profile
    rho = _np_density(prof)
    R_all = _radii(case)[[2, 4, 7]]
    got = numpy.asarray(evaluate(prof, jnp.asarray(R_all), "surface_density"))
    for R, g in zip(R_all, got):
        near = integrate.quad(lambda r: rho(r) * r / numpy.sqrt(r + R), R, 2 * R, weight="alg",
                              wvar=(-0.5, 0.0), epsabs=0, epsrel=1e-12)[0]
        far = integrate.quad(lambda r: rho(r) * r / numpy.sqrt(r * r - R * R), 2 * R, numpy.inf,
                             epsabs=0, epsrel=1e-12, limit=200)[0]
        assert g == pytest.approx(2 * (near + far), rel=RTOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mass_and_potential_against_quad(case):
    prof = case.profile
    rho = _np_density(prof)
    r_all = _radii(case)[[2, 6]]
    got = evaluate_all(prof, jnp.asarray(r_all))
    for i, r in enumerate(r_all):
        m = integrate.quad(lambda s: 4 * numpy.pi * s * s * rho(s), 0, r, epsabs=0, epsrel=1e-12,
                           limit=200)[0]
        outer = integrate.quad(lambda s: 4 * numpy.pi * s * rho(s), r, numpy.inf, epsabs=0,
                               epsrel=1e-12, limit=200)[0]
        assert float(got[1, i]) == pytest.approx(m, rel=RTOL)
        assert float(got[2, i]) == pytest.approx(-G * (m / r + outer), rel=RTOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_equals_eager_and_batched_equals_scalar(case):
    prof = case.profile
    r = jnp.asarray(_radii(case)[[1, 5]])
    jitted = evaluate_all(prof, r)
    eager = jnp.stack([_call(prof, q, r) for q in QUANTITIES])
    numpy.testing.assert_allclose(jitted, eager, rtol=1e-13)
    scalars = jnp.stack([evaluate_all(prof, x) for x in r], axis=1)
    numpy.testing.assert_allclose(scalars, jitted, rtol=1e-13)
    mapped = jax.jit(lambda p, r: jax.vmap(lambda x: evaluate_all(p, x), out_axes=1)(r))(prof, r)
    numpy.testing.assert_allclose(mapped, jitted, rtol=1e-13)
    shaped = evaluate_all(prof, jnp.stack([r, r, r]))
    assert shaped.shape == (4, 3, 2)
    numpy.testing.assert_allclose(shaped[:, 1], jitted, rtol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parameter_batching(case):
    p = jnp.asarray(case.params)
    ps = jnp.stack([p, 1.1 * p])
    r = jnp.asarray(case.scale * 0.7)
    batched = jax.jit(jax.vmap(lambda q: evaluate_all(case.build(q), r)))(ps)
    numpy.testing.assert_allclose(batched[1], evaluate_all(case.build(ps[1]), r), rtol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_against_finite_differences(case):
    r = jnp.asarray(case.scale * numpy.array([0.3, 2.0]))
    logp0 = jnp.log(jnp.asarray(case.params))
    # log-parameters keep the finite-difference steps relative to each parameter
    fun = jax.jit(lambda lp: jnp.log(jnp.abs(evaluate_all(case.build(jnp.exp(lp)), r))))
    check_grads(fun, (logp0,), order=1, modes=("rev",))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pytree_round_trip_without_retrace(case):
    prof = case.profile
    leaves, treedef = jax.tree_util.tree_flatten(prof)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert type(again) is type(prof)
    r = jnp.asarray([0.5, 1.0])
    numpy.testing.assert_array_equal(evaluate_all(again, r), evaluate_all(prof, r))
    traces = []

    @jax.jit
    def f(p):
        traces.append(1)
        return p.density(r)

    f(prof)
    f(case.build(1.05 * jnp.asarray(case.params)))
    assert len(traces) == 1


# ----------------------------------------------------------------------------- user profile
class Isochrone(Profile):
    """Henon's isochrone, written with density only (Binney & Tremaine 2008, eq. 2.49)."""

    m_tot: jax.Array
    b: jax.Array

    def density(self, r):
        a = jnp.sqrt(self.b**2 + r**2)
        return self.m_tot * (3 * (self.b + a) * a**2 - r**2 * (self.b + 3 * a)) / (
            4 * jnp.pi * (self.b + a) ** 3 * a**3)


def test_user_profile_gets_mass_potential_projection():
    m, b = 3e9, 0.7
    iso = Isochrone(jnp.asarray(m), jnp.asarray(b))
    r = jnp.asarray([0.05, 0.7, 3.0, 40.0])
    a = jnp.sqrt(b**2 + r**2)
    got = evaluate_all(iso, r)
    numpy.testing.assert_allclose(got[1], m * r**3 / ((b + a) ** 2 * a), rtol=RTOL)
    numpy.testing.assert_allclose(got[2], -G * m / (b + a), rtol=RTOL)
    # Sigma against scipy quad of the Abel integral (substitution r = R cosh u)
    R = 0.3
    ref = 2 * R * integrate.quad(lambda u: float(evaluate(iso, R * numpy.cosh(u), "density"))
                                 * numpy.cosh(u), 0, 40, epsabs=0, epsrel=1e-12, limit=200)[0]
    assert float(evaluate(iso, jnp.asarray(R), "surface_density")) == pytest.approx(ref, rel=RTOL)
    summed = iso + Plummer(1e6, 0.1)
    assert isinstance(summed, Composite)
    numpy.testing.assert_allclose(evaluate(summed, r, "enclosed_mass"),
                                  got[1] + Plummer(1e6, 0.1).enclosed_mass(r), rtol=1e-14)


def test_composite_flattens_and_keeps_structure():
    a, b, c = Plummer(1e6, 0.3), NFW(1e7, 1.0), Burkert(1e7, 0.5)
    total = a + b + c
    assert len(total.components) == 3 and not isinstance(total.components[0], Composite)
    assert jax.tree_util.tree_structure(total) == jax.tree_util.tree_structure(
        Plummer(2e6, 0.1) + NFW(2e7, 2.0) + Burkert(1e6, 0.2))


# ----------------------------------------------------------------------------- bad input
BAD = [
    (lambda: Plummer(-1.0, 0.3), "m_tot"),
    (lambda: Plummer(1e6, 0.0), "r_s"),
    (lambda: Hernquist(1e6, -2.0), "r_s"),
    (lambda: NFW(0.0, 1.0), "rho_s"),
    (lambda: NFW(1e7, jnp.nan), "r_s"),
    (lambda: Zhao(1e7, 1.0, 0.0, 3.0, 1.0), "alpha"),
    (lambda: Zhao(1e7, 1.0, 1.0, 3.0, 3.0), "gamma"),
    (lambda: Zhao(1e7, 1.0, 1.0, 2.0, 1.0), "beta"),
    (lambda: Burkert(1e7, -0.1), "r_0"),
    (lambda: Einasto(1e7, 1.0, 0.0), "alpha"),
    (lambda: CoreNFW(1e7, 1.0, 0.0, 1.0), "r_c"),
    (lambda: CoreNFW(1e7, 1.0, 0.3, 1.5), "n"),
    (lambda: Composite(()), "components"),
]


@pytest.mark.parametrize("make, name", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_parameters_raise(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf, -1.0])
def test_bad_radii_raise(case, bad):
    for q in QUANTITIES:
        with pytest.raises(ValueError, match="must be"):
            _call(case.profile, q, numpy.array([0.5, bad]))


def test_traced_parameters_are_not_checked():
    # validation is skipped for tracers: a jitted constructor with a bad value gives NaN, not an error
    out = jax.jit(lambda m: Plummer(m, 0.3).enclosed_mass(1.0))(jnp.asarray(-1.0))
    assert float(out) < 0
