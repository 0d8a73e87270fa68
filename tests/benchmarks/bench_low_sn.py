"""Accuracy at low S/N: per-spectrum fits against ppxf, the bias of one spectrum's sigma, GP tiers.

Three measurements on mocks with known truth (cube3d.testing.make_mock_cube), printed as
tables (the figures quoted in README.md's accuracy section and in cube3d.flags):

1. ``disk``: a rotating disk (|V| <= 200 km/s) with a central sigma peak (100-250 km/s),
   random positive mixes of MILES SSPs (every tenth of the 150 in ../shared/data, else
   the 8 bundled MILES-HC stars), S/N 2-7 per pixel, every spaxel fitted alone (V, sigma)
   by cube3d and by ppxf (Cappellari 2017; started at V = 0, sigma = 200 km/s, the same
   arrays, additive degree 4): RMS errors, the fraction > 300 km/s off, and time.
2. ``bias``: median fitted sigma / true sigma per S/N (2-25) for sigma = 80, 150 and
   250 km/s, 50 spectra each, the 8 bundled MILES-HC stars; and the share of spectra
   with FLAG 128 (below ``cube3d.flags.RELIABLE_SN``).
3. ``tiers``: a 24 x 24 mock of nearly flat fields (V RMS 20 km/s, sigma 220 km/s
   +-6%) at S/N 3.5 per pixel: the GP tiers' RMS errors and 68% coverage.

Usage::

    python tests/benchmarks/bench_low_sn.py [--only disk|bias|tiers] [--n 30]
"""

from __future__ import annotations

import argparse
import glob
import time
import warnings
from pathlib import Path

import numpy as np

SHARED_SSP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "templates" / "miles_ssp"


def _library(ssp):
    from cube3d import datasets
    from cube3d.templates import load_templates

    files = sorted(glob.glob(str(SHARED_SSP / "*.fits")))[::10] if ssp else []
    return load_templates(files) if files else load_templates(datasets.demo_templates_dir())


def _errors(params, v, sigma):
    dv, ds = params[:, 0] - v.ravel(), params[:, 1] - sigma.ravel()
    return np.sqrt(np.mean(dv**2)), np.sqrt(np.mean(ds**2)), np.mean(np.abs(dv) > 300)


def _ppxf_all(prep):
    from ppxf.ppxf import ppxf

    sol = []
    for i in range(prep.n_spec):
        good = prep.ivar[i] > 0
        noise = np.where(good, 1 / np.sqrt(np.where(good, prep.ivar[i], 1.0)), 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp = ppxf(prep.templates.T, prep.spectra[i], noise, prep.velscale, start=[0.0, 200.0], moments=2, degree=4,
                      mdegree=0, vsyst=-prep.template_offset * prep.velscale, mask=good, quiet=True)
        sol.append(pp.sol[:2])
    return np.array(sol)


def disk(n):
    from cube3d.fit import FitConfig, fit_spectra
    from cube3d.flags import FLAG_BELOW_RELIABLE_SN, spectrum_flags
    from cube3d.prepare import prepare_cube
    from cube3d.testing import make_mock_cube, rotating_disk_field

    lib = _library(ssp=True)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    v = rotating_disk_field((n, n), 200.0, 2.0, n / 10, 60.0)
    sigma = 100 + 150 * np.exp(-(xx**2 + yy**2) / (2 * (n / 6) ** 2))
    rng = np.random.default_rng(1)
    snr = rng.uniform(2, 7, (n, n))
    cube, _ = make_mock_cube(v, sigma, lib, snr=snr, redshift=0.01, weights=rng.uniform(0, 1, (n, n, lib.n_templates)),
                             key=3)
    prep = prepare_cube(cube, lib, 0.01)
    config = FitConfig(moments=2)
    t0 = time.perf_counter()
    res = fit_spectra(prep, config)
    t_c3 = time.perf_counter() - t0
    print(f"\n[disk] {n} x {n} spaxels, {lib.n_templates} templates, S/N 2-7 per pixel, {prep.n_pix} pixels")
    print(f"{'':8s} {'V RMS':>7s} {'sig RMS':>8s} {'>300':>6s} {'time s':>7s}")
    print("%-8s %7.0f %8.0f %6.2f %7.1f" % ("cube3d", *_errors(res.params, v, sigma), t_c3))
    flags = spectrum_flags(res, config, prep.velscale, prep.snr)
    good = flags == 0
    print(f"cube3d FLAG 0: {good.mean():.2f} of the spaxels (FLAG 128 on {np.mean(flags & FLAG_BELOW_RELIABLE_SN > 0):.2f})")
    try:
        t0 = time.perf_counter()
        sol = _ppxf_all(prep)
        print("%-8s %7.0f %8.0f %6.2f %7.1f" % ("ppxf", *_errors(sol, v, sigma), time.perf_counter() - t0))
    except ImportError:
        print("ppxf not installed: no comparison")


def bias():
    from cube3d.fit import FitConfig, fit_spectra
    from cube3d.flags import RELIABLE_SN
    from cube3d.prepare import prepare_cube
    from cube3d.testing import make_mock_cube

    lib = _library(ssp=False)
    snrs = np.array([2, 3, 5, 7, 10, 15, 25])
    rng = np.random.default_rng(0)
    print("\n[bias] median fitted / true sigma against S/N per pixel (50 spectra each, 8 MILES-HC stars)")
    print("S/N per pixel   " + "".join(f"{s:6g}" for s in snrs) + f"   (FLAG 128 below S/N {RELIABLE_SN:g})")
    for sig0 in (80.0, 150.0, 250.0):
        snr = np.repeat(snrs, 50).reshape(len(snrs), 50)
        v = rng.uniform(-150, 150, snr.shape)
        w = rng.uniform(0, 1, snr.shape + (lib.n_templates,))
        cube, _ = make_mock_cube(v, sig0 + 0 * v, lib, snr=snr, redshift=0.01, weights=w, key=5)
        res = fit_spectra(prepare_cube(cube, lib, 0.01), FitConfig(moments=2))
        s = res.params[:, 1].reshape(snr.shape)
        print(f"sigma {sig0:3.0f} km/s  " + "".join(f"{np.median(s[k]) / sig0:6.2f}" for k in range(len(snrs))))


def tiers():
    from cube3d.fit import FitConfig, fit_spectra
    from cube3d.prepare import prepare_cube
    from cube3d.spatial import GPConfig, run_gp
    from cube3d.testing import gp_field, make_mock_cube

    lib = _library(ssp=False)
    n = 24
    v = gp_field((n, n), 6.0, 20.0, key=7)
    sigma = 220.0 * np.exp(gp_field((n, n), 6.0, 0.06, key=8))
    cube, _ = make_mock_cube(v, sigma, lib, snr=3.5, redshift=0.01, key=9)
    prep = prepare_cube(cube, lib, 0.01)
    config = FitConfig(moments=2)
    res = fit_spectra(prep, config)
    print(f"\n[tiers] {n} x {n} nearly flat fields (V RMS 20 km/s, sigma 220 km/s +-6%), S/N 3.5 per pixel")
    print(f"{'':10s} {'V RMS':>7s} {'V cov68':>8s} {'sig RMS':>8s} {'sig cov68':>10s} {'time s':>7s}")
    vs, ss = res.params[:, 0].reshape(n, n), res.params[:, 1].reshape(n, n)
    print("%-10s %7.0f %8s %8.0f %10s" % ("spaxel", np.sqrt(np.mean((vs - v) ** 2)), "", np.sqrt(np.mean((ss - sigma) ** 2)), ""))
    for tier in ("two_step", "joint_map"):
        t0 = time.perf_counter()
        gp = run_gp(prep, res, config, GPConfig(tier=tier))
        dt = time.perf_counter() - t0
        row = []
        for name, truth in (("V", v), ("SIGMA", sigma)):
            f = gp.fields[name]
            row += [np.sqrt(np.mean((f.mean - truth) ** 2)), np.mean(np.abs(f.mean - truth) < f.std)]
        print("%-10s %7.0f %8.2f %8.0f %10.2f %7.1f" % (tier, *row, dt))


def main():
    import jax

    jax.config.update("jax_enable_x64", True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("disk", "bias", "tiers"), default=None)
    ap.add_argument("--n", type=int, default=30, help="disk mock: spaxels per side (default 30)")
    args = ap.parse_args()
    if args.only in (None, "disk"):
        disk(args.n)
    if args.only in (None, "bias"):
        bias()
    if args.only in (None, "tiers"):
        tiers()


if __name__ == "__main__":
    main()
