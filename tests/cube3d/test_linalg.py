"""Small LAPACK-free solvers against numpy / scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import lsq_linear

from cube3d.linalg import bounded_least_squares, cholesky, cholesky_solve, restricted_solve, spd_inverse


def _spd(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


@pytest.mark.parametrize("n", [1, 2, 7, 25])
def test_cholesky_and_solves_match_numpy(n):
    rng = np.random.default_rng(n)
    m, b = _spd(rng, n), rng.normal(size=n)
    np.testing.assert_allclose(cholesky(jnp.asarray(m)), np.linalg.cholesky(m), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cholesky_solve(jnp.asarray(m), jnp.asarray(b)), np.linalg.solve(m, b), rtol=1e-9)
    np.testing.assert_allclose(spd_inverse(jnp.asarray(m)), np.linalg.inv(m), rtol=1e-9, atol=1e-12)


def test_bounded_least_squares_matches_scipy_bvls():
    rng = np.random.default_rng(0)
    solve = jax.jit(bounded_least_squares)
    n_col, n_obs = 14, 60  # one shape, one compilation; the constrained set varies
    for _ in range(60):
        n_pos = rng.integers(1, n_col + 1)
        a = rng.normal(size=(n_obs, n_col))
        a[:, :n_pos] = np.abs(a[:, :n_pos]) + rng.normal(size=(n_obs, 1))  # collinear, like templates
        y = rng.normal(size=n_obs) + a[:, :n_pos] @ (np.abs(rng.normal(size=n_pos)) * (rng.random(n_pos) > 0.5))
        lower = np.r_[np.zeros(n_pos), np.full(n_col - n_pos, -np.inf)]
        ref = lsq_linear(a, y, bounds=(lower, np.inf), method="bvls", tol=1e-14).x
        x = np.asarray(solve(jnp.asarray(a.T @ a), jnp.asarray(a.T @ y), jnp.asarray(lower == 0)))
        assert np.all(x[:n_pos] >= 0)
        cost = lambda v: np.sum((a @ v - y) ** 2)
        assert cost(x) <= cost(ref) * (1 + 1e-10) + 1e-12


def test_bounded_least_squares_vmaps_over_many_problems():
    # 64 problems in one vmap: no LAPACK call, so no batched-LAPACK deadlock (DESIGN.md).
    rng = np.random.default_rng(3)
    a = np.abs(rng.normal(size=(64, 80, 6)))
    y = rng.normal(size=(64, 80))
    m = np.einsum("bij,bik->bjk", a, a)
    b = np.einsum("bij,bi->bj", a, y)
    nonneg = jnp.ones(6, bool)
    x = jax.jit(jax.vmap(bounded_least_squares, in_axes=(0, 0, None)))(jnp.asarray(m), jnp.asarray(b), nonneg)
    for i in (0, 17, 63):
        ref = lsq_linear(a[i], y[i], bounds=(0, np.inf), method="bvls", tol=1e-14).x
        np.testing.assert_allclose(x[i], ref, atol=1e-8)


def test_warm_start_gives_the_same_optimum():
    rng = np.random.default_rng(5)
    solve = jax.jit(bounded_least_squares)
    n_col, n_obs = 12, 50
    for _ in range(30):
        a = np.abs(rng.normal(size=(n_obs, n_col))) + rng.normal(size=(n_obs, 1))
        y = rng.normal(size=n_obs) + a @ (np.abs(rng.normal(size=n_col)) * (rng.random(n_col) > 0.5))
        m, b = jnp.asarray(a.T @ a), jnp.asarray(a.T @ y)
        nonneg = jnp.ones(n_col, bool)
        cold = solve(m, b, nonneg)
        guess = jnp.asarray(rng.random(n_col) > 0.5)  # arbitrary, partly wrong guess
        warm = solve(m, b, nonneg, passive_init=guess)
        np.testing.assert_allclose(warm, cold, atol=1e-9)


def test_restricted_solve_matches_the_subsystem():
    rng = np.random.default_rng(11)
    n = 9
    m, b = _spd(rng, n), rng.normal(size=n)
    passive = np.zeros(n, bool)
    passive[[0, 3, 4, 8]] = True
    ref = np.zeros(n)
    ref[passive] = np.linalg.solve(m[np.ix_(passive, passive)], b[passive])
    for size in (None, 4, 6):  # gathered into 4 or 6 slots, or masked at full size
        x = restricted_solve(jnp.asarray(m), jnp.asarray(b), jnp.asarray(passive), size)
        np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12)


def test_max_passive_on_a_low_rank_library_gives_the_same_optimum():
    # 40 non-negative "templates" that are mixtures of 6 basis spectra (rank 6) and 3 free
    # polynomial columns: the normal matrix has rank 9, and Lawson & Hanson never hold more
    # than 9 passive variables, so solves of 9 x 9 give the full-size optimum.
    rng = np.random.default_rng(4)
    n_obs, rank, n_tpl, n_free = 200, 6, 40, 3
    basis = np.abs(rng.normal(size=(rank, n_obs))) + 1.0
    mix = rng.random((n_tpl, rank))
    poly = np.polynomial.legendre.legvander(np.linspace(-1, 1, n_obs), n_free - 1).T
    a = np.vstack([mix @ basis, poly]).T
    nonneg = jnp.asarray(np.arange(n_tpl + n_free) < n_tpl)
    solve = jax.jit(bounded_least_squares, static_argnames=("max_passive",))
    for _ in range(10):
        y = a @ np.r_[rng.random(n_tpl) * (rng.random(n_tpl) > 0.7), rng.normal(size=n_free)]
        y += 0.05 * rng.normal(size=n_obs)
        m, b = a.T @ a, a.T @ y
        norm = np.sqrt(np.diag(m))
        ms, bs = jnp.asarray(m / np.outer(norm, norm)), jnp.asarray(b / norm)
        full = np.asarray(solve(ms, bs, nonneg)) / norm
        small = np.asarray(solve(ms, bs, nonneg, max_passive=rank + n_free)) / norm
        assert np.all(small[:n_tpl] >= 0) and np.sum(small != 0) <= rank + n_free
        cost = lambda v: np.sum((a @ v - y) ** 2)
        np.testing.assert_allclose(cost(small), cost(full), rtol=1e-9)
        ref = lsq_linear(a, y, bounds=(np.r_[np.zeros(n_tpl), np.full(n_free, -np.inf)], np.inf),
                         method="bvls", tol=1e-14).x
        assert cost(small) <= cost(ref) * (1 + 1e-9)
