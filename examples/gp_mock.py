"""Mock IFU cube at low S/N: per-spaxel, Voronoi-binned and GP-prior kinematic maps against the truth.

The mock (:func:`cube3d.testing.make_mock_cube`): the 8 bundled MILES-HC stars, Gaussian
LOSVDs, a thin rotating disk in ``V`` (arctan rotation curve, ``v_max`` 150 km/s,
turn-over radius size/6 spaxels, PA 30 deg, inclination 60 deg;
:func:`cube3d.testing.rotating_disk_field`) and a central dispersion peak
``sigma = 100 + 80 exp(-r^2 / (2 (size/4)^2))`` km/s, white noise at ``--snr`` per pixel
(5 by default: single spaxels then constrain V to tens of km/s at best).

Four ways to map the kinematics, each compared with the truth in every spaxel:

1. per spaxel: :func:`cube3d.prepare.prepare_cube` without binning, then
   :func:`cube3d.fit.fit_spectra` (V, sigma);
2. Voronoi binning to ``--target-sn`` (Cappellari & Copin 2003, as ``cube3d fit
   --target-sn``): one fit per bin, its values and errors given to every spaxel of the bin;
3. GP two-step tier (:func:`cube3d.spatial.gp_two_step` via :func:`cube3d.spatial.run_gp`):
   the per-spaxel estimates as noisy data of fields with Matern-5/2 GP priors;
4. GP joint-MAP tier (:mod:`cube3d.spatial.joint`): the spectra and the GP priors
   optimised together.

Printed: RMS and median absolute error against the truth (km/s; at low S/N the RMS of the
single-spaxel fits is dominated by a few catastrophic ones) and the 68% coverage
(fraction of spaxels whose truth lies within the reported 1-sigma error) for V and sigma.  The figure has
one row per quantity: truth | per spaxel | Voronoi | GP two-step | GP joint.

Run ``python examples/gp_mock.py --help``; small settings run in the test suite.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")

TIERS = ("spaxel", "voronoi", "two_step", "joint_map")
TITLES = {"truth": "truth", "spaxel": "per spaxel", "voronoi": "Voronoi", "two_step": "GP two-step",
          "joint_map": "GP joint"}
REDSHIFT = 0.01


def _tiers(text):
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in names if t not in TIERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown tier(s) {bad}: use a comma list of {','.join(TIERS)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=24, help="spaxels per side (default 24)")
    p.add_argument("--snr", type=float, default=5.0, help="S/N per pixel of every spaxel (default 5)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--output", type=Path, default=Path("gp_mock.png"), help="output figure (PNG)")
    p.add_argument("--tiers", type=_tiers, default=TIERS,
                   help=f"comma list of {','.join(TIERS)} (default all); 'spaxel' is always run")
    p.add_argument("--target-sn", type=float, default=15.0, help="Voronoi target S/N per pixel (default 15)")
    p.add_argument("--wave-range", type=float, nargs=2, default=(4800.0, 5300.0),
                   help="observed wavelength range of the mock, Angstrom (default 4800 5300)")
    p.add_argument("--n-outer", type=int, default=3, help="joint tier: hyperparameter rounds (default 3)")
    p.add_argument("--n-inner", type=int, default=4, help="joint tier: Gauss-Newton steps per round (default 4)")
    args = p.parse_args(argv)
    if args.size < 4:
        p.error("--size: need at least 4 spaxels per side")
    if not args.snr > 0 or not args.target_sn > 0:
        p.error("--snr and --target-sn must be positive")
    return args


def true_fields(size):
    """Smooth truth on a ``size`` x ``size`` grid: disk V and central sigma peak, km/s."""
    from cube3d.testing import rotating_disk_field

    v = rotating_disk_field((size, size), 150.0, size / 6.0, 30.0, 60.0)
    yy, xx = np.mgrid[:size, :size]
    r2 = ((xx - (size - 1) / 2.0) ** 2 + (yy - (size - 1) / 2.0) ** 2) / (size / 4.0) ** 2
    return {"V": v, "SIGMA": 100.0 + 80.0 * np.exp(-0.5 * r2)}


def scores(value, error, usable, truth):
    """RMS and median absolute error vs truth over the usable spaxels, 68% coverage, number."""
    ok = usable & np.isfinite(value) & np.isfinite(error)
    if not ok.any():
        return {"rms": np.nan, "mad": np.nan, "cover": np.nan, "n": 0}
    d = value[ok] - truth[ok]
    return {"rms": float(np.sqrt(np.mean(d**2))), "mad": float(np.median(np.abs(d))),
            "cover": float(np.mean(np.abs(d) <= error[ok])), "n": int(ok.sum())}


def _fit_maps(cube, library, target_sn, fit_config):
    """prepare_cube + fit_spectra + the maps on the spaxel grid (as cube3d.pipeline.run_fit)."""
    from cube3d.fit import fit_spectra
    from cube3d.flags import FLAG_BELOW_RELIABLE_SN
    from cube3d.pipeline import result_to_maps
    from cube3d.prepare import prepare_cube

    prep = prepare_cube(cube, library, REDSHIFT, target_sn=target_sn)
    fit = fit_spectra(prep, fit_config)
    maps = result_to_maps(prep, fit, fit_config, cube.wcs, {}, keep_spectra=False)
    # usable: no flag but the low-S/N advisory (fitted, finite, not at a fit bound): what the GP
    # tiers take as data too (FLAG_BELOW_RELIABLE_SN marks a biased sigma, not a failed fit)
    usable = (maps.maps["FLAG"] & ~FLAG_BELOW_RELIABLE_SN) == 0
    return prep, fit, maps, usable


def main(argv=None):
    args = parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cube3d.datasets import demo_templates_dir
    from cube3d.fit import FitConfig
    from cube3d.testing import make_mock_cube
    from cube3d.plot import map_limits
    from cube3d.spatial import GPConfig, run_gp
    from cube3d.templates import load_templates

    n = args.size
    truth = true_fields(n)
    library = load_templates(demo_templates_dir())
    t0 = time.perf_counter()
    cube, _ = make_mock_cube(truth["V"], truth["SIGMA"], library, snr=args.snr, redshift=REDSHIFT,
                             wave_range=tuple(args.wave_range), key=args.seed)
    print(f"mock cube: {n} x {n} spaxels x {cube.n_wave} pixels, S/N {args.snr:g} per pixel "
          f"[{time.perf_counter() - t0:.1f} s]")
    fit_config = FitConfig(moments=2)
    estimates, times = {}, {}

    t = time.perf_counter()
    prep, fit, maps, usable = _fit_maps(cube, library, None, fit_config)
    times["spaxel"] = time.perf_counter() - t
    estimates["spaxel"] = ({q: maps.maps[q] for q in truth}, {q: maps.maps[f"{q}_ERR"] for q in truth}, usable)
    print(f"per spaxel: {prep.n_spec} spectra x {prep.n_pix} pixels ({prep.velscale:.1f} km/s), median S/N "
          f"{np.nanmedian(prep.snr):.1f}; {int(usable.sum())} usable fits [{times['spaxel']:.1f} s]")

    if "voronoi" in args.tiers:
        t = time.perf_counter()
        prep_b, _, maps_b, usable_b = _fit_maps(cube, library, args.target_sn, fit_config)
        times["voronoi"] = time.perf_counter() - t
        estimates["voronoi"] = ({q: maps_b.maps[q] for q in truth}, {q: maps_b.maps[f"{q}_ERR"] for q in truth},
                                usable_b)
        print(f"Voronoi: {prep_b.n_spec} bins at target S/N {args.target_sn:g} (median S/N "
              f"{np.nanmedian(prep_b.snr):.1f}) [{times['voronoi']:.1f} s]")

    for tier in ("two_step", "joint_map"):
        if tier not in args.tiers:
            continue
        t = time.perf_counter()
        gp = run_gp(prep, fit, fit_config, GPConfig(tier=tier, n_outer=args.n_outer, n_inner=args.n_inner))
        times[tier] = time.perf_counter() - t
        estimates[tier] = ({q: gp.fields[q].mean for q in truth}, {q: gp.fields[q].std for q in truth},
                           np.ones((n, n), bool))
        desc = "; ".join(f"{q} {f.solver}, scale {f.hyper.scale[0]:.1f} spaxels" for q, f in gp.fields.items())
        print(f"GP {tier}: {desc} [{times[tier]:.1f} s]")

    table = {name: {q: scores(val[q], err[q], ok, truth[q]) for q in truth}
             for name, (val, err, ok) in estimates.items()}
    print()
    print("errors vs truth in km/s: rms, median |error|, fraction within the reported 1-sigma error")
    print(f"{'method':<14}{'V rms':>8}{'V med':>8}{'V cov68':>9}{'sig rms':>9}{'sig med':>9}{'sig cov68':>11}"
          f"{'spaxels':>9}")
    for name, row in table.items():
        v, s = row["V"], row["SIGMA"]
        print(f"{TITLES[name]:<14}{v['rms']:8.1f}{v['mad']:8.1f}{v['cover']:9.2f}{s['rms']:9.1f}{s['mad']:9.1f}"
              f"{s['cover']:11.2f}{v['n']:9d}")
    print(f"(per spaxel and Voronoi: usable fits only ({n * n - int(usable.sum())} of {n * n} spaxels have no "
          "usable per-spaxel fit); GP: every spaxel)")

    # figure: truth | per spaxel | Voronoi | GP two-step | GP joint, one row per quantity
    cols = ["truth"] + list(estimates)
    fig = Figure(figsize=(2.2 * len(cols) + 1.0, 2.3 * len(truth) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(truth), len(cols), squeeze=False)
    for r, q in enumerate(truth):
        cmap, lo, hi = map_limits(q, truth[q])
        if q == "SIGMA":  # a margin so that noisy estimates are not all saturated
            pad = 0.25 * (hi - lo)
            lo, hi = lo - pad, hi + pad
        for c, name in enumerate(cols):
            ax = axes[r, c]
            if name == "truth":
                img = truth[q]
            else:
                val, _, ok = estimates[name]
                img = np.where(ok, val[q], np.nan)
            im = ax.imshow(img, origin="lower", cmap=colormaps[cmap].with_extremes(bad="0.85"), vmin=lo, vmax=hi,
                           interpolation="nearest")
            title = TITLES[name]
            if name != "truth":
                title += f"\nrms {table[name][q]['rms']:.1f} km/s"
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=list(axes[r]), label=f"{q} [km/s]", shrink=0.9)
    fig.suptitle(f"{n} x {n} mock, S/N {args.snr:g} per pixel", fontsize=10)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")
    return {"table": table, "truth": truth, "estimates": estimates, "times": times, "output": args.output}


if __name__ == "__main__":
    main(sys.argv[1:])
