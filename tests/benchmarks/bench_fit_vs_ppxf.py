"""Throughput of cube3d's chunked, vmapped fit against ppxf's serial loop, at equal accuracy.

Both codes fit the *same* N mock spectra with the *same* templates, mask, additive
Legendre degree (4), no multiplicative polynomial, and the same number of Gauss-Hermite
moments.  The mocks are made from real data: the MUSE minicube of the Abell 478 BCG
is prepared by cube3d (4800-5800 A rest frame, its velscale, emission/sky-line mask,
MUSE LSF-matched MILES SSPs reduced to ``--n-templates`` by cube3d's basis selection);
each mock is a random non-negative mix of those templates convolved (in pixel space,
independently of either fitter's Fourier model) with a Gauss-Hermite LOSVD (van der
Marel & Franx 1993) of random V, sigma, h3, h4, plus Gaussian noise at ``--sn`` per
pixel (MUSE Voronoi bins at target S/N 25-30 are the realistic case).

Printed: spectra per second for ppxf (serial Python loop, as it is used), for cube3d
including compilation (first call) and compiled (second call), their ratios; the rms
difference between the codes in units of ppxf's formal errors; each code's bias and
scatter against the truth in units of its own errors; and which code reached the lower
chi^2 where they differ.

Usage::

    python tests/benchmarks/bench_fit_vs_ppxf.py --n 256 --moments 4 --chunk-size 16

ppxf (the ``compare`` extra) must be installed; ../shared/data must be present.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # measure the cube3d of this checkout, not another installed one
SHARED = REPO.parent / "shared" / "data"
MUSE_Z = 0.0857  # Abell 478 BCG (cluster z 0.0881 minus ~650 km/s): the line masks sit on its lines


def gauss_hermite_kernel(x, v, sigma, h3, h4):
    """Gauss-Hermite LOSVD sampled at pixel lags ``x`` (van der Marel & Franx 1993, eq. 9-10).

    ``v``, ``sigma`` in pixels; normalised Hermite polynomials H3, H4 (Cappellari 2017 eq. 12).
    """
    y = (x - v) / sigma
    h3p = (2 * np.sqrt(2) * y**3 - 3 * np.sqrt(2) * y) / np.sqrt(6)
    h4p = (4 * y**4 - 12 * y**2 + 3) / np.sqrt(24)
    return np.exp(-0.5 * y**2) / (np.sqrt(2 * np.pi) * sigma) * (1 + h3 * h3p + h4 * h4p)


def prepare_templates(n_templates):
    """Real MUSE preparation: grid, mask, LSF-matched templates (cube3d.prepare)."""
    from cube3d.io import read_cube
    from cube3d.prepare import prepare_cube
    from cube3d.templates import load_templates

    cube = read_cube(SHARED / "cubes" / "muse_abell478_minicube.fits")
    lib = load_templates(sorted(glob.glob(str(SHARED / "templates" / "miles_ssp" / "*.fits"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_cube(cube, lib, MUSE_Z, target_sn=25, wave_range=(4800.0, 5800.0), n_basis=n_templates)
    good = prep.ivar[int(np.argmax(prep.snr))] > 0  # the real mask of the best bin
    return prep.templates, prep.template_offset, prep.velscale, good


def make_mocks(templates, offset, velscale, good, n, moments, sn, seed):
    """N mock spectra (truth in km/s), their inverse variances (0 where masked)."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    n_pix = good.size
    truth = np.c_[rng.uniform(-200, 200, n), rng.uniform(150, 350, n),
                  rng.uniform(-0.1, 0.1, n), rng.uniform(-0.1, 0.1, n)]
    if moments == 2:
        truth[:, 2:] = 0.0
    mix = rng.dirichlet(np.ones(len(templates)), n) @ templates  # (n, n_tpl_pix)
    half = offset - 1
    x = np.arange(-half, half + 1.0)
    kern = gauss_hermite_kernel(x[None, :], truth[:, :1] / velscale, truth[:, 1:2] / velscale,
                                truth[:, 2:3], truth[:, 3:4])
    # g_j = sum_x L(x) T(j + offset - x): a positive V moves features to the red
    conv = fftconvolve(mix, kern, mode="same", axes=1)
    gal = conv[:, offset : offset + n_pix]
    gal = gal / np.median(gal, axis=1, keepdims=True)
    noise = 1.0 / sn
    spectra = gal + rng.normal(size=gal.shape) * noise
    ivar = np.broadcast_to(np.where(good, 1.0 / noise**2, 0.0), spectra.shape).copy()
    return truth[:, :moments], spectra, ivar


def run_ppxf(spectra, ivar, templates, offset, velscale, moments):
    from ppxf.ppxf import ppxf

    n = len(spectra)
    sol, err, model = np.zeros((n, moments)), np.zeros((n, moments)), np.zeros_like(spectra)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(n):  # ppxf fits one spectrum per call: the serial loop users run
            good = ivar[i] > 0
            noise = np.where(good, 1.0 / np.sqrt(np.where(good, ivar[i], 1.0)), 1.0)
            pp = ppxf(templates.T, spectra[i], noise, velscale, start=[0.0, 200.0], moments=moments,
                      degree=4, mdegree=0, vsyst=-offset * velscale, mask=good, bias=0, quiet=True)
            sol[i], err[i], model[i] = pp.sol, pp.error, pp.bestfit
    return sol, err, model, time.perf_counter() - t0, time.process_time() - c0


def run_cube3d(spectra, ivar, templates, offset, velscale, moments, chunk_size, **settings):
    from cube3d.fit import FitConfig, FitInput, fit_spectra

    cfg = FitConfig(moments=moments, degree=4, mdegree=0, chunk_size=chunk_size, **settings)
    t0 = time.perf_counter()
    res = fit_spectra(FitInput(spectra, ivar, templates, offset, velscale), cfg)
    t1, c1 = time.perf_counter(), time.process_time()
    res = fit_spectra(FitInput(spectra, ivar, templates, offset, velscale), cfg)  # compiled: steady state
    t2, c2 = time.perf_counter(), time.process_time()
    return res, t1 - t0, t2 - t1, c2 - c1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="number of spectra (default 256)")
    ap.add_argument("--moments", type=int, default=4, choices=[2, 4], help="Gauss-Hermite moments (default 4)")
    ap.add_argument("--chunk-size", type=int, default=16, help="cube3d spectra per compiled batch (default 16)")
    ap.add_argument("--n-templates", type=int, default=15, help="MILES SSPs kept (default 15)")
    ap.add_argument("--sn", type=float, default=30.0, help="S/N per pixel of the mocks (default 30)")
    ap.add_argument("--n-ppxf", type=int, default=None,
                    help="fit only the first this many with ppxf (default all; rates are per spectrum)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gauss-newton", action="store_true",
                    help="also time the schedule before the Newton finish (12 iterations, Gauss-Newton steps "
                         "throughout: n_iter=12, newton_finish=False) in the same run")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    templates, offset, velscale, good = prepare_templates(args.n_templates)
    truth, spectra, ivar = make_mocks(templates, offset, velscale, good, args.n, args.moments, args.sn, args.seed)
    n_pp = args.n if args.n_ppxf is None else min(args.n_ppxf, args.n)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    print(f"spectra: {args.n} mocks x {good.size} pixels ({int(good.sum())} unmasked), velscale {velscale:.2f} km/s, "
          f"S/N {args.sn:g}, {len(templates)} MILES SSP templates x {templates.shape[1]} pixels, "
          f"moments {args.moments}, degree 4")

    res, t_first, t_steady, cpu_steady = run_cube3d(spectra, ivar, templates, offset, velscale, args.moments, args.chunk_size)
    sol, err, model, t_pp, cpu_pp = run_ppxf(spectra[:n_pp], ivar[:n_pp], templates, offset, velscale, args.moments)

    rate_pp = n_pp / t_pp
    rate_first = args.n / t_first
    rate_steady = args.n / t_steady
    print(f"ppxf   (serial loop, {n_pp} spectra): {t_pp:8.2f} s  {rate_pp:8.2f} spectra/s  "
          f"(CPU {1e3 * cpu_pp / n_pp:.1f} ms/spectrum)")
    print(f"cube3d (chunk {args.chunk_size}, incl. compile): {t_first:8.2f} s  {rate_first:8.2f} spectra/s  "
          f"ratio {rate_first / rate_pp:6.1f}x")
    print(f"cube3d (chunk {args.chunk_size}, compiled):      {t_steady:8.2f} s  {rate_steady:8.2f} spectra/s  "
          f"ratio {rate_steady / rate_pp:6.1f}x  (CPU {1e3 * cpu_steady / args.n:.1f} ms/spectrum, "
          f"CPU ratio {(cpu_pp / n_pp) / (cpu_steady / args.n):.1f}x); converged (FLAG bit 2 clear) "
          f"{res.converged.mean():.3f}")
    if args.gauss_newton:
        old, _, t_old, _ = run_cube3d(spectra, ivar, templates, offset, velscale, args.moments, args.chunk_size,
                                      n_iter=12, newton_finish=False)
        shift = np.abs(old.params - res.params) / res.errors
        print(f"cube3d, 12 Gauss-Newton iterations (compiled): {t_old:8.2f} s  {args.n / t_old:8.2f} spectra/s  "
              f"ratio {args.n / t_old / rate_pp:6.1f}x; converged {old.converged.mean():.3f}; median difference from "
              f"the default " + " ".join(f"{np.nanmedian(shift[:, j]):.3f}" for j in range(shift.shape[1]))
              + " of an error")

    names = res.param_names
    ours, our_err = res.params[:n_pp], res.errors[:n_pp]
    ok = res.ok[:n_pp] & np.all(np.isfinite(sol), axis=1) & np.all(err > 0, axis=1)
    chi2_ours = np.sum(ivar[:n_pp] * (spectra[:n_pp] - res.bestfit[:n_pp]) ** 2, axis=1)
    chi2_pp = np.sum(ivar[:n_pp] * (spectra[:n_pp] - model) ** 2, axis=1)
    same = ok & (np.abs(chi2_ours - chi2_pp) < 1.0)  # the same minimum
    print(f"fits usable in both: {int(ok.sum())}/{n_pp}; same minimum (|dchi2| < 1): {int(same.sum())}; "
          f"cube3d lower chi2 by > 1: {int(np.sum(ok & (chi2_ours < chi2_pp - 1)))}; "
          f"ppxf lower by > 1: {int(np.sum(ok & (chi2_pp < chi2_ours - 1)))}")
    diff = (ours - sol) / err
    print("rms (cube3d - ppxf) / ppxf error, all usable:   "
          + "  ".join(f"{k} {np.sqrt(np.mean(diff[ok, j] ** 2)):.3f}" for j, k in enumerate(names)))
    print("rms (cube3d - ppxf) / ppxf error, same minimum: "
          + "  ".join(f"{k} {np.sqrt(np.mean(diff[same, j] ** 2)):.3f}" for j, k in enumerate(names)))
    print("median |cube3d - ppxf| / ppxf error, all usable: "
          + "  ".join(f"{k} {np.median(np.abs(diff[ok, j])):.3f}" for j, k in enumerate(names))
          + f"; all parameters within 0.25 error: {int(np.sum(ok & np.all(np.abs(diff) < 0.25, axis=1)))}/{n_pp}")
    print("median cube3d error / ppxf error:                "
          + "  ".join(f"{k} {np.median(our_err[ok, j] / err[ok, j]):.3f}" for j, k in enumerate(names)))
    for label, p, e in (("ppxf  ", sol, err), ("cube3d", ours, our_err)):
        z = (p[ok] - truth[:n_pp][ok]) / e[ok]
        print(f"{label} vs truth, mean and std of (fit - truth) / error: "
              + "  ".join(f"{k} {z[:, j].mean():+.3f} {z[:, j].std():.3f}" for j, k in enumerate(names)))


if __name__ == "__main__":
    main()
