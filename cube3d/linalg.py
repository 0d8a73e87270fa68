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
        Iterations, each adding a variable to the passive set or moving back towards
        feasibility (one solve each); default ``4 n``.
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

    Notes
    -----
    Lawson & Hanson's two nested loops are written as one: an iteration whose passive
    solution ``s`` is infeasible moves ``x`` towards it until a constrained variable
    reaches zero and drops that variable (their steps 8-11); otherwise ``x = s`` and the
    variable with the largest positive gradient joins the passive set (steps 2-6).  Each
    iteration ends with one solve on the new passive set.  One loop and one solve site
    compile to half the code of the nested form.
    """
    n = m.shape[0]
    max_iter = 4 * n if max_iter is None else max_iter
    size = n if max_passive is None else min(int(max_passive), n)
    tol = 1e-10 * jnp.max(jnp.abs(b)) + jnp.finfo(m.dtype).tiny if tol is None else tol
    free = ~nonneg

    def status(x, passive, s):
        bad = passive & nonneg & (s <= 0.0)
        grad = b - m @ jnp.where(passive, s, 0.0)  # the gradient at x = s (used when feasible)
        candidates = nonneg & ~passive & (grad > tol) & (jnp.sum(passive) < size)
        return bad, grad, candidates

    def cond(state):
        x, passive, s, k = state
        bad, _, candidates = status(x, passive, s)
        return (k == 0) | ((jnp.any(bad) | jnp.any(candidates)) & (k <= max_iter))

    def body(state):
        x, passive, s, k = state
        bad, grad, candidates = status(x, passive, s)
        infeasible = jnp.any(bad)
        first = k == 0  # the first iteration only solves on the initial passive set
        # steps 8-11: move from x towards s until a constrained variable hits 0, drop it
        ratio = jnp.where(bad, x / jnp.where(bad, x - s, 1.0), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
        x_back = x + alpha * (s - x)
        x_back = jnp.where(bad & (ratio <= alpha * (1.0 + 1e-12)), 0.0, x_back)
        passive_back = passive & ~(bad & (x_back <= 0.0))
        x_back = jnp.where(passive_back, x_back, 0.0)
        # steps 2-6: accept s and add the variable with the largest positive gradient
        j = jnp.argmax(jnp.where(candidates, grad, -jnp.inf))
        x_add = jnp.where(passive, s, 0.0)
        passive_add = passive.at[j].set(True)
        x = jnp.where(first, x, jnp.where(infeasible, x_back, x_add))
        passive = jnp.where(first, passive, jnp.where(infeasible, passive_back, passive_add))
        return x, passive, restricted_solve(m, b, passive, size), k + 1

    # Start from the feasible point x = 0 with the free variables (and the warm-start
    # guess) passive; infeasible guesses are dropped by the first iterations.
    passive0 = free if passive_init is None else (free | (passive_init & nonneg))
    passive0 = jnp.where(jnp.sum(passive0) > size, free, passive0)
    state = (jnp.zeros_like(b), passive0, jnp.zeros_like(b), 0)
    x, passive, s, _ = lax.while_loop(cond, body, state)
    # s where it is feasible (always, unless max_iter ran out: then the feasible x)
    return jnp.where(jnp.any(passive & nonneg & (s <= 0.0)), x, jnp.where(passive, s, 0.0))
