"""Benchmark: sigma_los at 1000 radii, Plummer tracer in a Zhao halo, Osipkov-Merritt.

Run as ``python tests/benchmarks/bench_jeans.py [--n 1000] [--repeat 200]``.  Prints the
time per jitted call (best and median of ``--repeat`` calls; the CPU is shared, the best
is the least perturbed), the relative error against a scipy ``quad`` brute force (a
double integral: the Jeans integral for ``nu sigma_r^2`` inside the Abel projection,
with the Zhao mass from scipy's incomplete beta function), and the same for the
gradient of a Gaussian log-likelihood.  galpy / jampy are timed alongside only if
they import (they are optional and not installed by default).
"""

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy
from scipy import integrate, special

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # run from a checkout

from dynamics import G, OsipkovMerritt, Plummer, Zhao, sigma_los  # noqa: E402

M_STARS, A_STARS = 1.0e6, 0.25
HALO = dict(rho_s=3.0e7, r_s=1.2, alpha=1.5, beta=3.5, gamma=0.5)
R_A = 0.4


def zhao_mass(r):
    """Zhao (1996) eq. 5 with scipy's regularised incomplete beta."""
    a, b, g = HALO["alpha"], HALO["beta"], HALO["gamma"]
    x = (r / HALO["r_s"]) ** a
    p, q = (3.0 - g) / a, (b - 3.0) / a
    return 4 * numpy.pi * HALO["rho_s"] * HALO["r_s"] ** 3 / a * special.beta(p, q) * special.betainc(
        p, q, x / (1.0 + x)
    )


def nu(r):
    return (1.0 + (r / A_STARS) ** 2) ** -2.5


def mass(r):
    return M_STARS * r**3 / (r**2 + A_STARS**2) ** 1.5 + zhao_mass(r)


def nu_sigma_r2(r):
    """OM: nu sigma_r^2 = (r^2 + r_a^2)^-1 int_r^inf (s^2 + r_a^2) nu G M / s^2 ds."""
    f = lambda s: (s**2 + R_A**2) * nu(s) * G * mass(s) / s**2
    val = integrate.quad(f, r, numpy.inf, epsabs=0, epsrel=1e-11, limit=200)[0]
    return val / (r**2 + R_A**2)


def sigma_los_brute(R):
    """Sigma sigma_los^2 = 2 int_R^inf (1 - beta R^2/r^2) nu sigma_r^2 r dr / sqrt(r^2 - R^2), r = R cosh t."""
    def f(t):
        r = R * numpy.cosh(t)
        beta = r**2 / (r**2 + R_A**2)
        return (1.0 - beta / numpy.cosh(t) ** 2) * nu_sigma_r2(r) * r
    p = 2.0 * integrate.quad(f, 0.0, 40.0, epsabs=0, epsrel=1e-12, limit=200)[0]
    sigma = 2.0 * integrate.quad(lambda t: nu(R * numpy.cosh(t)) * R * numpy.cosh(t), 0.0, 40.0,
                                 epsabs=0, epsrel=1e-13, limit=200)[0]
    return numpy.sqrt(p / sigma)


def timeit(fn, *args, repeat):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of radii")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--n-check", type=int, default=15, help="radii checked by brute force")
    args = parser.parse_args()

    R = jnp.geomspace(0.01, 2.0, args.n)
    stars = Plummer(M_STARS, A_STARS)
    halo = Zhao(**HALO)
    aniso = OsipkovMerritt(R_A)
    f = jax.jit(lambda R, t, h, a: sigma_los(R, t, t + h, a))
    best, med = timeit(f, R, stars, halo, aniso, repeat=args.repeat)
    s = numpy.asarray(f(R, stars, halo, aniso))

    idx = numpy.linspace(0, args.n - 1, args.n_check).astype(int)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)   # quad at its round-off limit
        ref = numpy.array([sigma_los_brute(float(R[i])) for i in idx])
    t_ref = time.perf_counter() - t0
    err = numpy.max(numpy.abs(s[idx] / ref - 1.0))

    v_obs = numpy.asarray(s) * 1.02
    def loglike(h, a):
        model = sigma_los(R, stars, stars + h, a)
        return -0.5 * jnp.sum((v_obs / model) ** 2 + 2.0 * jnp.log(model))
    g = jax.jit(jax.value_and_grad(loglike, argnums=(0, 1)))
    g_best, g_med = timeit(g, halo, aniso, repeat=max(args.repeat // 4, 10))

    res = time.get_clock_info("perf_counter").resolution
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}, perf_counter resolution {res:.0e} s")
    print(f"sigma_los, {args.n} radii (Plummer tracer, Zhao(1.5, 3.5, 0.5) halo, Osipkov-Merritt):")
    print(f"  time per jitted call: best {best * 1e3:.3f} ms, median {med * 1e3:.3f} ms "
          f"({args.repeat} calls, perf_counter)")
    print(f"  max relative error vs scipy quad brute force at {args.n_check} radii: {err:.2e} "
          f"(brute force took {t_ref:.1f} s)")
    print(f"  value + gradient of a Gaussian log-likelihood (all halo and anisotropy parameters): "
          f"best {g_best * 1e3:.3f} ms, median {g_med * 1e3:.3f} ms")

    try:
        import galpy  # noqa: F401
        print("  galpy imports, but no side-by-side timing is implemented (not installed here to test)")
    except ImportError:
        print("  galpy: not installed, skipped")
    try:
        import jampy  # noqa: F401
        print("  jampy imports, but no side-by-side timing is implemented (not installed here to test)")
    except ImportError:
        print("  jampy: not installed, skipped")


if __name__ == "__main__":
    main()
