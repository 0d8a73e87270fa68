"""Benchmark of discrete-star inference (not a test; run by hand).

1. Log-likelihood of 1000 stars with its gradient, jitted (goal < 1 ms), for several
   model configurations, with the accuracy of the Chebyshev ``ln R`` interpolation of
   ``sigma_los`` against direct Jeans integration at every star.
2. NUTS on 1000 mock stars with 5 free parameters (goal: R-hat < 1.01, >= 400 effective
   samples for every parameter, under 2 minutes wall clock including compilation):
   Zhao halo (``log10_m_ref`` = log10 M(<0.33 kpc), ``log10_r_s``, ``gamma``), constant
   ``beta_sym`` and ``v_sys``; dense mass matrix; the mock is a Plummer tracer in an NFW
   halo with Gaussian Jeans velocities (beta = 0), so the model is the truth.

Usage::

    python tests/benchmarks/bench_inference.py [--n-stars 1000] [--num-warmup 500]
        [--num-samples 1000] [--num-chains 2] [--skip-nuts]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dynamics import NFW, ConstantBeta, OsipkovMerritt, Plummer  # noqa: E402
from dynamics.inference import (  # noqa: E402
    CONSTANT_BETA,
    NFW_HALO,
    OSIPKOV_MERRITT,
    ZHAO_HALO,
    ModelConfig,
    StarData,
    build_models,
    fit_nuts,
    make_log_likelihood,
    member_variance,
    radius_grid,
)
from dynamics.jeans import sigma_los2_profile  # noqa: E402
from dynamics.mocks import mock_stars  # noqa: E402

TRUTH = dict(log10_rho_s=7.5, log10_r_s=0.0, gamma=1.0, beta_sym=0.0, log10_r_a=np.log10(0.5),
             v_sys=60.0, f_fg=0.1, fg_mean=20.0, log10_fg_ratio=0.79)  # sigma_fg / max sigma_los ~ 60 / 9.8


def _time(fn, *args, repeat=200):
    jax.block_until_ready(fn(*args))                     # compile
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * np.median(times), 1e3 * np.percentile(times, 10)


def bench_likelihood(data):
    print(f"\n[1] log-likelihood + gradient, {data.R.shape[0]} stars (jit, median of 200 calls)")
    configs = {
        "nfw + OM (4 par)": ModelConfig(halo=NFW_HALO, anisotropy=OSIPKOV_MERRITT),
        "zhao + OM (5 par)": ModelConfig(halo=ZHAO_HALO, anisotropy=OSIPKOV_MERRITT),
        "zhao + const beta (5 par)": ModelConfig(halo=ZHAO_HALO, anisotropy=CONSTANT_BETA),
        "zhao + OM + foreground (8 par)": ModelConfig(halo=ZHAO_HALO, anisotropy=OSIPKOV_MERRITT,
                                                      foreground=True),
    }
    for label, cfg in configs.items():
        vg, names = make_log_likelihood(data, cfg)
        theta = jnp.asarray([TRUTH[n] for n in names])
        t0 = time.perf_counter()
        jax.block_until_ready(vg(theta))
        t_compile = time.perf_counter() - t0
        med, p10 = _time(vg, theta)
        params = {n: TRUTH[n] for n in names}
        tracer, mass, aniso = build_models(params, cfg)
        ref = sigma_los2_profile(data.R, tracer, mass, aniso, grid=False) + data.v_err**2
        got = member_variance(params, data, cfg, radius_grid(data.R, 32))
        err = float(jnp.max(jnp.abs(got / ref - 1)))
        print(f"  {label:32s} {med:7.3f} ms (10th pct {p10:6.3f} ms), compile {t_compile:5.1f} s, "
              f"max rel err of sigma_los^2+e^2 (32 nodes) {err:.1e}")


def bench_nuts(args):
    tracer = Plummer(1.0, 0.25)
    halo = NFW(10 ** TRUTH["log10_rho_s"], 10 ** TRUTH["log10_r_s"])
    mock = mock_stars(jax.random.PRNGKey(2), args.n_stars, tracer, halo, ConstantBeta(0.0),
                      v_sys=TRUTH["v_sys"], v_err=2.0)
    data = StarData(mock.R, mock.v, mock.v_err)
    r_ref = 0.33
    truth = dict(TRUTH, log10_m_ref=float(jnp.log10(halo.enclosed_mass(r_ref))))
    cfg = ModelConfig(halo=ZHAO_HALO, anisotropy=CONSTANT_BETA, mass_radius=r_ref,
                      priors={"v_sys": (0.0, 120.0)})
    print(f"\n[2] NUTS, {data.R.shape[0]} stars, zhao (m_ref, r_s, gamma) + constant beta + v_sys "
          f"(5 parameters), dense mass, {args.num_chains} chains x ({args.num_warmup} warm-up + "
          f"{args.num_samples}), sequential")
    t0 = time.perf_counter()
    res = fit_nuts(jax.random.PRNGKey(1), data, cfg, num_warmup=args.num_warmup,
                   num_samples=args.num_samples, num_chains=args.num_chains, dense_mass=True)
    wall = time.perf_counter() - t0
    for name in res.samples:
        s = np.asarray(res.samples[name])
        print(f"  {name:12s} truth {truth[name]:7.3f}  mean {s.mean():7.3f} +- {s.std():6.3f}  "
              f"r_hat {res.r_hat[name]:.4f}  n_eff {res.n_eff[name]:7.1f}")
    worst_rhat = max(res.r_hat.values())
    min_neff = min(res.n_eff.values())
    steps = np.asarray(res.num_steps)
    print(f"  wall {wall:.1f} s (incl. compile); max r_hat {worst_rhat:.4f}; min n_eff {min_neff:.0f}; "
          f"divergences {res.num_divergences}; mean leapfrog steps/draw {steps.mean():.1f}")
    ok = worst_rhat < 1.01 and min_neff >= 400 and wall < 120
    print(f"  goal (R-hat < 1.01, n_eff >= 400, < 120 s): {'met' if ok else 'NOT met'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=1000)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--skip-nuts", action="store_true")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    tracer = Plummer(1.0, 0.25)
    halo = NFW(10 ** TRUTH["log10_rho_s"], 10 ** TRUTH["log10_r_s"])
    t0 = time.perf_counter()
    mock = mock_stars(jax.random.PRNGKey(0), args.n_stars, tracer, halo,
                      OsipkovMerritt(10 ** TRUTH["log10_r_a"]), v_sys=TRUTH["v_sys"], v_err=2.0)
    jax.block_until_ready(mock)
    print(f"mock of {args.n_stars} stars (exact OM DF sampling, incl. DF inversion): "
          f"{time.perf_counter() - t0:.1f} s")
    data = StarData(mock.R, mock.v, mock.v_err)
    bench_likelihood(data)
    if not args.skip_nuts:
        bench_nuts(args)


if __name__ == "__main__":
    main()
