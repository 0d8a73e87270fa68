"""Fisher-matrix forecasts of parameter errors by automatic differentiation.

Two information matrices for the discrete-star likelihood of :mod:`dynamics.inference`:

* observed: ``F = -d^2 ln L / d theta d theta^T`` at ``theta`` for the data in hand
  (``jax.hessian``);
* expected, for Gaussian data ``v_i ~ N(mu_i(theta), V_i(theta))`` (e.g. Tegmark,
  Taylor & Heavens 1997, eq. 15)::

      F_ab = sum_i [ d_a mu_i d_b mu_i / V_i + d_a V_i d_b V_i / (2 V_i^2) ],

  which needs only the radii and errors (a forecast before the velocities exist). Here
  ``mu_i = v_sys`` and ``V_i = sigma_los^2(R_i) + e_i^2``.

The Cramer-Rao forecast of the errors is ``sqrt(diag(F^-1))`` in the sampling
coordinates of :mod:`dynamics.inference` (log10 densities and radii, ``beta_sym``...),
with flat priors.

References
----------
Tegmark M., Taylor A. N. & Heavens A. F. 1997, ApJ 480, 22.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dynamics.inference import (
    StarData,
    check_data,
    log_likelihood,
    member_variance,
    param_names,
    radius_grid,
)

__all__ = [
    "FisherForecast",
    "observed_fisher",
    "expected_fisher_gaussian",
    "fisher_forecast",
]


class FisherForecast(NamedTuple):
    """A Fisher forecast.

    Attributes
    ----------
    names : list of str
        Parameter order.
    theta : Array, (k,)
        Where the information was evaluated.
    fisher : Array, (k, k)
    covariance : Array, (k, k)
        ``F^-1``.
    sigma : Array, (k,)
        Forecast 1-sigma errors, ``sqrt(diag(F^-1))``.
    """

    names: list
    theta: jax.Array
    fisher: jax.Array
    covariance: jax.Array
    sigma: jax.Array


def observed_fisher(log_like, theta):
    """Observed information ``-H`` of a scalar log-likelihood at ``theta``.

    Parameters
    ----------
    log_like : callable
        ``theta (k,) -> scalar``.
    theta : Array, (k,)

    Returns
    -------
    Array, (k, k)
    """
    return -jax.hessian(log_like)(jnp.asarray(theta, dtype=float))


def expected_fisher_gaussian(mean_fn, var_fn, theta):
    """Expected Fisher matrix of independent Gaussian data (TTH97 eq. 15).

    Parameters
    ----------
    mean_fn, var_fn : callable
        ``theta (k,) -> (n,)`` means and variances of the ``n`` data.
    theta : Array, (k,)

    Returns
    -------
    Array, (k, k)
    """
    theta = jnp.asarray(theta, dtype=float)
    var = var_fn(theta)
    j_mu = jax.jacfwd(mean_fn)(theta)   # (n, k)
    j_var = jax.jacfwd(var_fn)(theta)   # (n, k)
    return (j_mu / var[:, None]).T @ j_mu + 0.5 * (j_var / var[:, None] ** 2).T @ j_var


def fisher_forecast(data, config, truth, *, kind="expected", n_nodes=32):
    """Fisher forecast of the errors of the free parameters of a discrete-star model.

    Parameters
    ----------
    data : StarData
        Radii and errors (and velocities for ``kind="observed"``; ignored otherwise).
    config : dynamics.inference.ModelConfig
    truth : dict
        Parameter values (free parameters by name) where the information is evaluated.
    kind : {"expected", "observed"}
        ``"expected"``: Gaussian expected information of the velocities (no foreground
        mixture), plus the observed information of the positional term when the tracer
        scale is free. ``"observed"``: ``-Hessian`` of the full log-likelihood.
    n_nodes : int
        Chebyshev radii for ``sigma_los`` (:func:`dynamics.inference.radius_grid`).

    Returns
    -------
    FisherForecast
    """
    if kind not in ("expected", "observed"):
        raise ValueError(f"kind must be 'expected' or 'observed', got {kind!r}")
    names = param_names(config)
    missing = [n for n in names if n not in truth]
    if missing:
        raise ValueError(f"truth lacks free parameters {missing}")
    data = StarData(*(jnp.asarray(x, dtype=float) for x in data))
    check_data(data)
    grid = radius_grid(data.R, n_nodes)
    theta = jnp.asarray([truth[n] for n in names], dtype=float)

    def as_params(th):
        return dict(zip(names, th))

    if kind == "observed":
        fisher = observed_fisher(lambda th: log_likelihood(as_params(th), data, config, grid), theta)
    else:
        if config.foreground:
            raise ValueError("kind='expected' does not support the foreground mixture; use 'observed'")

        def mean_fn(th):
            p = {**config.fixed, **as_params(th)}
            return jnp.full(data.R.shape, p["v_sys"])

        def var_fn(th):
            return member_variance(as_params(th), data, config, grid)

        fisher = expected_fisher_gaussian(mean_fn, var_fn, theta)
        if config.tracer_r_s is None:
            def ll_pos(th):
                a = 10.0 ** as_params(th)["log10_r_plummer"]
                R, R_max = data.R, config.R_max
                return jnp.sum(jnp.log(2.0 * R * a**2 / (R**2 + a**2) ** 2
                                       * (R_max**2 + a**2) / R_max**2))

            fisher = fisher + observed_fisher(ll_pos, theta)
    cov = jnp.linalg.inv(fisher)
    return FisherForecast(names, theta, fisher, cov, jnp.sqrt(jnp.diag(cov)))
