"""JAM benchmark: compiled dynamics.jam_vrms / jam_velocity vs jampy on the issue-9 problem.

A 12-Gaussian MGE (log-spaced widths 0.05-40 arcsec, q_obs 0.6-0.9) on a 40 x 40 grid of
0.8 arcsec spaxels at 0.7 Mpc, a 0.6 arcsec Gaussian PSF, mass = stars x M/L + NFW halo
+ black hole.  Prints, for each of V_rms (cylindrical) and the first moment: the compiled
time of one call (best of --repeat), the time of value + gradient with respect to six
parameters (inclination, beta, M/L, two halo parameters, m_bh), the relative error
against a converged reference (denser quadrature everywhere) and, when jampy imports,
jampy's time and its difference from ours (after scaling jampy's G = 0.004301).

    python tests/benchmarks/bench_jam.py [--n 40] [--n-velocity 8] [--repeat 3] [--fast]

The first moment (line-of-sight quadrature of clipped square roots through a tabulated
rotation field, PSF by a grid convolution) runs on ``--n-velocity`` spaxels per side
(default: the same 40 x 40 grid); jampy runs on the same grid for each.

``--fast`` uses a lighter quadrature (JamSettings(quad=(4, 6))), the setting that the
accuracy goal (1e-5) allows.
"""

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy  # noqa: E402

from dynamics import G, MGE, NFW, JamSettings, jam_velocity, jam_vrms  # noqa: E402

DIST = 0.7                                    # Mpc
PIX = 0.8                                     # arcsec
PSF = 0.6                                     # arcsec (Gaussian dispersion)
SURF = numpy.array([3e5, 1.5e5, 8e4, 4e4, 2e4, 9e3, 4e3, 1.6e3, 6e2, 2e2, 60.0, 15.0])    # Lsun/pc^2
SIGMA = numpy.geomspace(0.05, 40.0, 12)       # arcsec
QOBS = numpy.linspace(0.9, 0.6, 12)
INC, BETA, ML, RHO_S, R_S, MBH = 60.0, 0.15, 2.5, 1e7, 5.0, 1e7


def _best(f, repeat):
    out = f()
    jax.block_until_ready(out)
    best = numpy.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - t)
    return out, best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--n-velocity", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--only", choices=("vrms", "velocity"), default=None)
    args = ap.parse_args()

    kpc = DIST * numpy.pi / 0.648 * 1e-3

    def grid(n):
        g = (numpy.arange(n) - (n - 1) / 2) * PIX
        xa, ya = (a.ravel() for a in numpy.meshgrid(g, g))
        return xa, ya, jnp.asarray(xa * kpc), jnp.asarray(ya * kpc)

    xa, ya, x, y = grid(args.n)
    tracer = MGE.from_observed(SURF, SIGMA, QOBS, DIST)
    r_range = (float(tracer.sigma.min()) / 10, 10 * float(max(tracer.sigma.max(), numpy.hypot(x, y).max())))
    settings = JamSettings(quad=(4, 6) if args.fast else JamSettings().quad, halo_range=r_range)
    ref_settings = JamSettings(quad=(12, 12), psf_step=0.25, los=(16, 16), halo_range=r_range)
    # first moment: lighter v and line-of-sight rules (the clipping kinks limit it to ~1e-4);
    # reference: denser rules everywhere, a finer rotation table and a finer PSF grid
    vel_settings = JamSettings(quad=(8, 6), los=(6, 8), halo_range=r_range)
    vel_ref_settings = JamSettings(quad=(12, 8), los=(16, 16), table=512, psf_step=0.25, halo_range=r_range)
    psf = dict(psf_sigma=PSF * kpc, pixel_size=PIX * kpc)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; {args.n}x{args.n} spaxels of {PIX} arcsec at {DIST} Mpc, "
          f"PSF sigma {PSF} arcsec, 12 Gaussians + NFW ({settings.halo_gaussians} Gaussians) + BH; "
          f"quad {settings.quad}")

    def model(fn, s, **kw):
        x, y = (xy if fn is jam_vrms else xy_vel)[2:]

        def f(inc, beta, ml, log_rho_s, r_s, m_bh):
            mass = tracer.scaled(ml) + NFW(10.0**log_rho_s, r_s)
            return fn(x, y, tracer, mass, inclination=inc, beta=beta, m_bh=m_bh, settings=s, **psf, **kw)
        return f

    xy, xy_vel = (xa, ya, x, y), grid(args.n_velocity)
    p0 = (INC, BETA, ML, numpy.log10(RHO_S), R_S, MBH)
    rows = []
    todo = [("V_rms cyl", jam_vrms, settings, ref_settings), ("first moment", jam_velocity, vel_settings,
                                                               vel_ref_settings)]
    todo = [t for t in todo if args.only is None or (t[1] is jam_vrms) == (args.only == "vrms")]
    for name, fn, settings, ref_settings in todo:
        f = jax.jit(model(fn, settings))
        t0 = time.perf_counter()
        jax.block_until_ready(f(*p0))
        compile_s = time.perf_counter() - t0
        val, t_val = _best(lambda: f(*p0), args.repeat)
        loss = jax.jit(jax.value_and_grad(lambda *p: jnp.sum(model(fn, settings)(*p) ** 2), argnums=tuple(range(6))))
        _, t_grad = _best(lambda: loss(*p0), args.repeat)
        ref = jax.jit(model(fn, ref_settings))(*p0)
        scale = jnp.max(jnp.abs(ref)) if fn is jam_velocity else 1.0
        err = float(jnp.max(jnp.abs(val - ref) / jnp.maximum(jnp.abs(ref), 1e-300 if scale == 1.0 else scale)))
        rows.append((name, val, t_val, t_grad, err, compile_s))
        n = args.n if fn is jam_vrms else args.n_velocity
        print(f"{name:13s} {n}x{n} value {t_val * 1e3:8.1f} ms  value+grad(6) {t_grad * 1e3:8.1f} ms "
              f"(ratio {t_grad / t_val:4.1f})  max rel error vs converged {err:.1e}  compile {compile_s:.1f} s")

    try:
        import matplotlib

        matplotlib.use("Agg")
        from jampy.axi.jam_axi_proj import jam_axi_proj
    except ImportError:
        print("jampy not importable: no side-by-side timing")
        return
    # jampy's mass MGE: stars x M/L + our NFW expansion (same Gaussians), in its units
    from dynamics import fit_mge

    halo = fit_mge(NFW(RHO_S, R_S), *r_range, settings.halo_gaussians)
    pc_per_arcsec = DIST * numpy.pi / 0.648
    surf_pot = numpy.concatenate([SURF * ML, numpy.asarray(halo.surf) * 1e-6])
    sig_pot = numpy.concatenate([SIGMA, numpy.asarray(halo.sigma) * 1e3 / pc_per_arcsec])
    q_pot = numpy.concatenate([QOBS, numpy.ones(halo.n)])
    g_scale = numpy.sqrt(0.004301 / (G * 1e3))
    for name, val, t_val, *_ in rows:
        moment = "zz" if name.startswith("V_rms") else "z"
        settings = JamSettings(halo_range=r_range) if moment == "zz" else vel_settings
        xa, ya, x, y = xy if moment == "zz" else xy_vel
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            j = jam_axi_proj(SURF, SIGMA, QOBS, surf_pot, sig_pot, q_pot, INC, MBH, DIST, xa, ya,
                             beta=numpy.full(12, BETA), plot=False, quiet=True, ml=1, moment=moment,
                             sigmapsf=PSF, pixsize=PIX, kappa=1.0 if moment == "z" else None)
            times.append(time.perf_counter() - t)
        # the same mass model but with the non-negative halo fit: compare ours with that halo
        mass = tracer.scaled(ML) + halo
        extra = {} if moment == "zz" else {"rotation": "total"}       # jampy 8 clips total moments
        fn = jam_vrms if moment == "zz" else jam_velocity
        ours = fn(x, y, tracer, mass, inclination=INC, beta=BETA, m_bh=MBH, settings=settings, **psf, **extra)
        model_j = j.model / g_scale
        if moment == "zz":
            diff = numpy.abs(model_j / numpy.asarray(ours) - 1)
        else:
            diff = numpy.abs(model_j - numpy.asarray(ours)) / numpy.max(numpy.abs(numpy.asarray(ours)))
        t_j = min(times)
        print(f"jampy {name:13s} {t_j * 1e3:8.1f} ms  (ours {t_val * 1e3:.1f} ms: {t_j / t_val:5.1f}x faster)  "
              f"jampy vs ours: median {numpy.median(diff):.1e}, max {diff.max():.1e}")


if __name__ == "__main__":
    main()
