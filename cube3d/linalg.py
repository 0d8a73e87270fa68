"""Small dense linear algebra written for one problem, safe to ``vmap`` over many.

The per-spectrum fit solves many small (n <= ~50) symmetric positive-definite systems
inside ``jax.vmap``.  jaxlib's batched LAPACK kernels (``cho_factor``, triangular solves)
have deadlocked on the 2-core machines this project runs on (see DESIGN.md, "Known
hazards"), so the factorisation here is written in plain ``jnp`` operations under
``lax.fori_loop``: no LAPACK call, and XLA vectorises it over the batch.

Functions
---------
cholesky_solve
    Solve ``M x = b`` for a symmetric positive-definite ``M`` (Cholesky, Golub & Van
    Loan 2013, Algorithm 4.2.1, column version).
spd_inverse
    Inverse of a symmetric positive-definite matrix via the same factorisation.
restricted_solve
    The same solve over a subset of the variables (the others held at 0), gathered into
    a smaller system.
bounded_least_squares
    Minimise ``0.5 x^T M x - b^T x`` with ``x_i >= 0`` for a chosen subset of the
    variables and the others free: the active-set method of Lawson & Hanson (1974,
    chapter 23) in the normal-equation form of Bro & De Jong (1997, "FNNLS").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["cholesky", "cholesky_solve", "spd_inverse", "restricted_solve", "bounded_least_squares"]


def cholesky(m):
    """Lower-triangular Cholesky factor ``L`` with ``L @ L.T == m``.

    Parameters
    ----------
    m : array, shape (n, n)
        Symmetric positive-definite matrix.  Non-positive pivots are replaced by a tiny
        positive number so the factorisation never produces NaN (the corresponding
        direction is then effectively frozen).

    Returns
    -------
    L : array, shape (n, n)
    """
    n = m.shape[0]
    tiny = jnp.finfo(m.dtype).tiny ** 0.5
    idx = jnp.arange(n)

    def column(j, low):
        # Golub & Van Loan Alg. 4.2.1: v = A[j:, j] - L[j:, :j] L[j, :j]^T
        row_j = jnp.where(idx < j, low[j], 0.0)
        v = m[:, j] - low @ row_j
        pivot = jnp.sqrt(jnp.maximum(v[j], tiny))
        col = jnp.where(idx > j, v / pivot, 0.0).at[j].set(pivot)
        return low.at[:, j].set(col)

    return lax.fori_loop(0, n, column, jnp.zeros_like(m))


def _forward(low, b):
    n = low.shape[0]

    def step(i, y):
        return y.at[i].set((b[i] - low[i] @ y) / low[i, i])

    return lax.fori_loop(0, n, step, jnp.zeros_like(b))


def _backward(low, y):
    n = low.shape[0]

    def step(k, x):
        i = n - 1 - k
        return x.at[i].set((y[i] - low[:, i] @ x) / low[i, i])

    return lax.fori_loop(0, n, step, jnp.zeros_like(y))


def cholesky_solve(m, b):
    """Solve ``m @ x = b`` for symmetric positive-definite ``m`` (shape (n, n), b (n,))."""
    low = cholesky(m)
    return _backward(low, _forward(low, b))


def spd_inverse(m):
    """Inverse of a symmetric positive-definite matrix (shape (n, n))."""
    low = cholesky(m)
    eye = jnp.eye(m.shape[0], dtype=m.dtype)
    inv = jax.vmap(lambda e: _backward(low, _forward(low, e)))(eye)
    return 0.5 * (inv + inv.T)


def restricted_solve(m, b, passive, size=None):
    """Solve ``m x = b`` for the ``passive`` variables only; the others are set to 0.

    With ``size`` (at least the number of passive variables), the passive variables are
    gathered into a ``size x size`` system first, so the factorisation costs ``size^3``
    instead of ``n^3`` (slots beyond the passive count are padded with the identity).
    """
    n = m.shape[0]
    size = n if size is None else size
    if size >= n:
        both = passive[:, None] & passive[None, :]
        mp = jnp.where(both, m, 0.0) + jnp.diag(jnp.where(passive, 0.0, 1.0))
        return jnp.where(passive, cholesky_solve(mp, jnp.where(passive, b, 0.0)), 0.0)
    idx = jnp.nonzero(passive, size=size, fill_value=0)[0]
    valid = jnp.arange(size) < jnp.sum(passive)
    mp = jnp.where(valid[:, None] & valid[None, :], m[idx[:, None], idx[None, :]], 0.0)
    mp = mp + jnp.diag(jnp.where(valid, 0.0, 1.0))
    z = cholesky_solve(mp, jnp.where(valid, b[idx], 0.0))
    return jnp.zeros_like(b).at[idx].add(jnp.where(valid, z, 0.0))


def bounded_least_squares(m, b, nonneg, max_iter=None, tol=None, passive_init=None, max_passive=None):
    """Minimise ``0.5 x^T m x - b^T x`` subject to ``x[nonneg] >= 0``.

    Active-set method of Lawson & Hanson (1974, ch. 23, algorithm NNLS) on the normal
    equations (Bro & De Jong 1997): variables not flagged in ``nonneg`` are always free.
    With ``m = A^T W A`` and ``b = A^T W y`` this is weighted non-negative least squares.

    Parameters
    ----------
    m : array, shape (n, n)
        Symmetric positive-(semi)definite normal matrix.  Columns of ``A`` should be
        scaled to comparable norms by the caller for good conditioning.
    b : array, shape (n,)
    nonneg : bool array, shape (n,)
        True for the variables constrained to be non-negative.
    max_iter : int, optional
        Outer iterations (each adds one variable to the passive set); default ``3 n``.
    tol : float, optional
        Gradient tolerance for optimality; default ``1e-10 * max|b|``.
    passive_init : bool array, shape (n,), optional
        Warm start: constrained variables expected to be positive (e.g. the non-zero
        weights of a previous, nearby solve).  The result is the same optimum; a good
        guess only saves iterations.
    max_passive : int, optional
        Largest number of passive (non-zero or free) variables, e.g. the rank of ``m``
        when it is a product ``E H E^T`` of a small ``H``: Lawson & Hanson's passive
        columns stay linearly independent, so there are never more than ``rank(m)``.
        Every solve is then of this size instead of ``n``, and no variable is added once
        it is reached.  Default ``n``.

    Returns
    -------
    x : array, shape (n,)
    """
    n = m.shape[0]
    max_iter = 3 * n if max_iter is None else max_iter
    size = n if max_passive is None else min(int(max_passive), n)
    tol = 1e-10 * jnp.max(jnp.abs(b)) + jnp.finfo(m.dtype).tiny if tol is None else tol
    free = ~nonneg
    solve = lambda passive: restricted_solve(m, b, passive, size)

    # Start from the feasible point x = 0 with the free variables (and the warm-start
    # guess) passive; the inner loop below drops guessed variables that come out <= 0.
    passive0 = free if passive_init is None else (free | (passive_init & nonneg))
    passive0 = jnp.where(jnp.sum(passive0) > size, free, passive0)

    def inner_cond(state):
        x, passive, s, k = state
        bad = passive & nonneg & (s <= 0.0)
        return jnp.any(bad) & (k < n)

    def inner_body(state):
        # Lawson & Hanson steps 8-11: move towards s until a constrained variable hits 0.
        x, passive, s, k = state
        bad = passive & nonneg & (s <= 0.0)
        ratio = jnp.where(bad, x / jnp.where(bad, x - s, 1.0), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
        x = x + alpha * (s - x)
        blocking = bad & (ratio <= alpha * (1.0 + 1e-12))
        x = jnp.where(blocking, 0.0, x)
        # drop the variables that reached zero while heading negative (s <= 0)
        passive = passive & ~(bad & (x <= 0.0))
        x = jnp.where(passive, x, 0.0)
        s = solve(passive)
        return x, passive, s, k + 1

    def outer_cond(state):
        x, passive, k = state
        w = b - m @ x
        candidates = nonneg & ~passive & (w > tol)
        return jnp.any(candidates) & (k < max_iter) & (jnp.sum(passive) < size)

    def outer_body(state):
        x, passive, k = state
        w = b - m @ x
        candidates = nonneg & ~passive & (w > tol)
        j = jnp.argmax(jnp.where(candidates, w, -jnp.inf))
        passive = passive.at[j].set(True)
        s = solve(passive)
        x, passive, s, _ = lax.while_loop(inner_cond, inner_body, (x, passive, s, 0))
        x = jnp.where(passive, s, 0.0)
        return x, passive, k + 1

    s0 = solve(passive0)
    x0, passive0, s0, _ = lax.while_loop(inner_cond, inner_body, (jnp.zeros_like(b), passive0, s0, 0))
    x0 = jnp.where(passive0, s0, 0.0)
    x, _, _ = lax.while_loop(outer_cond, outer_body, (x0, passive0, 0))
    return x
