"""Joint model benchmark (issue 10): a 40 x 40 IFU map plus 300 discrete tracers, 8 free parameters.

The mock (:mod:`cube3d.testing.dynamics_files` geometry, through :mod:`dynamics.joint_mocks`): a
6-Gaussian MGE at 20 Mpc, 40 x 40 spaxels of 0.5 arcsec at PA 40 deg to the grid, PSF sigma
0.6 arcsec; 300 tracers of a 5 kpc Plummer law with 5% contaminants; NFW halo.  Free: ml,
inclination, beta_z, kappa, log10_m200, concentration, beta_z_discrete, f_out.  Prints the
compile time and the time of one log-density gradient (the unit of NUTS's cost), split by data
set; the wall time of ``fit_laplace`` (2 starts); and a short NUTS run (``--nuts-draws``
warm-up + draws, one chain), whose gradients per draw give the projected time of the
default 2 x (500 + 500).

    python tests/benchmarks/bench_joint.py [--n 40] [--n-stars 300] [--nuts-draws 60] [--skip-nuts]
"""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cube3d.testing.dynamics_files import MOCK_MGE, MOCK_TRUTH  # noqa: E402
from dynamics import MGE  # noqa: E402
from dynamics.joint_fit import fit_laplace, fit_nuts  # noqa: E402
from dynamics.joint_mocks import mock_discrete, mock_ifu  # noqa: E402
from dynamics.joint_model import JointConfig, log_likelihood_parts  # noqa: E402
from dynamics.tracer_density import plummer_mge  # noqa: E402

DIST = 20.0
KPC = DIST * np.pi / 0.648 * 1e-3          # kpc per arcsec


def _best(f, repeat=5):
    jax.block_until_ready(f())
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--n-stars", type=int, default=300)
    ap.add_argument("--nuts-draws", type=int, default=60)
    ap.add_argument("--skip-nuts", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}")
    tracer = MGE.from_observed(*MOCK_MGE, DIST)
    cfg = JointConfig(tracer=tracer, halo="nfw", discrete_tracer=plummer_mge(5.0), outlier_sigma=600.0)
    t = time.perf_counter()
    ifu, _ = mock_ifu(jax.random.PRNGKey(0), MOCK_TRUTH, cfg, n_side=args.n, pixel_size=0.5 * KPC, angle=40.0,
                      psf_sigma=0.6 * KPC)
    stars = mock_discrete(jax.random.PRNGKey(1), MOCK_TRUTH, cfg, n=args.n_stars, a=5.0, r_max=20.0,
                          outlier_fraction=0.05).data
    print(f"mock: {args.n}x{args.n} spaxels + {args.n_stars} tracers in {time.perf_counter() - t:.0f} s")
    p = {k: jnp.asarray(v) for k, v in MOCK_TRUTH.items()}
    t_grad = None
    for name, data in (("IFU", (ifu, None)), ("discrete", (None, stars)), ("joint", (ifu, stars))):
        f = jax.jit(jax.value_and_grad(lambda q, d=data: sum(log_likelihood_parts(q, *d, cfg))))
        t = time.perf_counter()
        jax.block_until_ready(f(p))
        compile_s = time.perf_counter() - t
        t_grad = _best(lambda: f(p))
        print(f"{name:>9}: log-density value + gradient {t_grad * 1e3:7.1f} ms "
              f"(compile {compile_s:.1f} s)", flush=True)
    res = fit_laplace(jax.random.PRNGKey(2), ifu, stars, cfg, radii=(10.0,), n_starts=2)
    print(f"laplace: {res.info['seconds']:.1f} s wall (optimise {res.info['seconds_optimise']:.1f} s incl. "
          f"compile, {res.info['n_potential_evaluations']} gradients; Hessian {res.info['seconds_hessian']:.1f} s); "
          f"converged {res.converged}; goal < 60 s")
    for r in res.summary:
        print(f"   {r['name']:>24} {r['p50']:9.4g} [{r['p16']:9.4g}, {r['p84']:9.4g}]  truth "
              f"{MOCK_TRUTH.get(r['name'], float('nan')):.4g}")
    if args.skip_nuts:
        return
    n = args.nuts_draws
    res_n = fit_nuts(jax.random.PRNGKey(3), ifu, stars, cfg, num_warmup=n, num_samples=n, num_chains=1,
                     init=res, predict_draws=1)
    steps = res_n.info["mean_steps_per_draw"]
    print(f"nuts: 1 chain x ({n} + {n}) in {res_n.info['seconds_sampling']:.0f} s (compile included), "
          f"{steps:.1f} gradients per sampling draw; projected 2 x (500 + 500) at {t_grad * 1e3:.0f} ms per "
          f"gradient: {2 * 1000 * steps * t_grad / 60:.0f} min (goal < 15 min)")


if __name__ == "__main__":
    main()
