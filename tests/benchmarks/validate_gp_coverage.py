"""Coverage of the GP tiers' error maps on mocks with small and larger field amplitudes.

Issue 11 (point 3): with the hyperparameters plugged in at their type-II MAP, a field
whose amplitude the data cannot pin down (small amplitude, S/N 2-5 per pixel) came out
nearly flat with errors far too small.  This script measures the fraction of spaxels
whose true value lies within the reported posterior mean +- 1 standard deviation (the
68% coverage) of V and sigma:

* ``small`` (default 10 seeds): spectral mock cubes (:func:`cube3d.testing.make_mock_cube`,
  real MILES templates) of ``--size`` x ``--size`` spaxels, V and ln sigma drawn from a
  Matern-5/2 GP of scale ``--scale`` spaxels, V amplitude uniform in 10-30 km/s, ln sigma
  amplitude uniform in 0.03-0.1 around sigma = 150 km/s, S/N per pixel uniform in 2-5 per
  spaxel; fitted per spaxel (moments 2, degree 4), then the two-step and joint-MAP tiers;
* ``large`` (default 3 seeds): the mock of ``tests/cube3d/spatial/test_gp_mock.py``
  (28 x 28 spaxels, scale 5, V amplitude 60 km/s, ln sigma 0.2, S/N 5; its first seed is
  the test's cube);
* ``fields`` (default 10 + 3 seeds): no spectra, per-spaxel values = truth + Gaussian
  noise of the stated error (V errors 40-100 km/s, ln sigma errors 0.2-0.5 for the small
  amplitudes; 10-30 km/s with V 40 km/s and ln sigma 0.25 for the large ones, as
  ``test_twostep.py``): the GP's errors without the per-spaxel fitter's.

At S/N 2-5 some per-spaxel fits land in wrong minima (V off by hundreds of km/s) and the
per-spaxel sigma is biased (ln of a noisy, bounded estimate): the two-step tier inherits
both, so its coverage is also given over the spaxels whose per-spaxel fit is sane (usable
and V within 3 stated errors of the truth; ``sane``).  The joint-MAP tier re-fits the
spectra and is the fair test at low S/N.

Usage (2 cores: about 1.5 min per spectral seed)::

    python tests/benchmarks/validate_gp_coverage.py                 # all sets
    python tests/benchmarks/validate_gp_coverage.py --sets fields    # seconds
    python tests/benchmarks/validate_gp_coverage.py --plugin         # type-II MAP errors

``--plugin`` sets ``GPConfig.hyper_integration = "none"`` (the errors before issue 11);
``--laplace-v`` sets ``GPConfig.v_likelihood_grid = 0`` (the joint tier's V data from the
quadratic at the mode, as before the likelihood's moments were used).
The numbers measured with and without it are in ``tests/benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
import warnings

import numpy as np


def _setup():
    import jax

    jax.config.update("jax_enable_x64", True)


#: ``--laplace-v``: the joint tier's V data from the quadratic at the mode (set by main)
LAPLACE_V = False


def _config(plugin, **kw):
    from cube3d.spatial import GPConfig

    if plugin and "hyper_integration" in GPConfig._fields:
        kw["hyper_integration"] = "none"
    if LAPLACE_V and "v_likelihood_grid" in GPConfig._fields:
        kw["v_likelihood_grid"] = 0
    return GPConfig(**kw)


def _coverage(field, truth, where=None):
    inside = np.abs(field.mean - truth) < field.std
    return float(np.mean(inside if where is None else inside[where]))


def small_amplitudes(seed):
    """Amplitudes of the small-amplitude set: (V km/s, ln sigma)."""
    rng = np.random.default_rng(seed)
    return float(rng.uniform(10.0, 30.0)), float(rng.uniform(0.03, 0.1))


def truth_fields(seed, size, scale, v_amp, lns_amp, sigma0=150.0, keys=None):
    """V and sigma maps; ``keys`` (V, sigma) default to ``1000 + seed``, ``2000 + seed``."""
    from cube3d.testing import gp_field

    kv, ks = keys or (1000 + seed, 2000 + seed)
    v = gp_field((size, size), scale, v_amp, "matern52", kv)
    sigma = np.exp(gp_field((size, size), scale, lns_amp, "matern52", ks, mean=np.log(sigma0)))
    return v, sigma


def spectral_case(seed, size, scale, v_amp, lns_amp, snr_range, tiers, plugin, keys=None, n_outer=3, cache=None):
    """One spectral mock: per-spaxel fit, then the GP tiers; a list of result rows.
    ``keys``: (V field, sigma field, noise) seeds, default from ``seed``; ``n_outer``: the
    joint tier's hyperparameter rounds; ``cache``: a folder keeping the per-spaxel fits
    (pickled), so that runs with other GP settings see the same fits."""
    from cube3d.datasets import demo_templates_dir
    from cube3d.fit import FitConfig, fit_spectra
    from cube3d.prepare import prepare_cube
    from cube3d.spatial import spaxel_estimates
    from cube3d.spatial.joint import gp_joint_map
    from cube3d.spatial.twostep import two_step_fields
    from cube3d.templates import load_templates
    from cube3d.testing import make_mock_cube

    z = 0.01
    v, sigma = truth_fields(seed, size, scale, v_amp, lns_amp, keys=None if keys is None else keys[:2])
    snr = np.random.default_rng(500 + seed).uniform(*snr_range, size=v.shape)
    if snr_range[0] == snr_range[1]:
        snr = float(snr_range[0])
    lib = load_templates(demo_templates_dir())
    noise_key = 3000 + seed if keys is None else keys[2]
    cube, _ = make_mock_cube(v, sigma, templates_dir=lib, snr=snr, redshift=z, key=noise_key,
                             wave_range=(4800.0, 5400.0))
    cfg = FitConfig(moments=2, degree=4)
    path = None
    if cache is not None:
        os.makedirs(cache, exist_ok=True)
        name = f"fit_{seed}_{size}_{scale:g}_{v_amp:.6g}_{lns_amp:.6g}_{snr_range[0]:g}-{snr_range[1]:g}.pkl"
        path = os.path.join(cache, name)
    if path is not None and os.path.exists(path):
        with open(path, "rb") as fh:
            prep, res = pickle.load(fh)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prep = prepare_cube(cube, lib, z)
            res = fit_spectra(prep, cfg)
        if path is not None:
            with open(path, "wb") as fh:
                pickle.dump((prep, res), fh)
    values, errors, ok = spaxel_estimates(prep, res, cfg)
    sane = ok & (np.abs(values["V"] - v) < 3.0 * errors["V"])
    truth = {"V": v, "SIGMA": sigma}
    rows = []
    for tier in tiers:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if tier == "two_step":
                out = two_step_fields(values, errors, ok, _config(plugin))
            else:
                out = gp_joint_map(prep, res, cfg, _config(plugin, tier="joint_map", n_outer=n_outer))
        seconds = time.perf_counter() - t0
        for name in ("V", "SIGMA"):
            f = out.fields[name]
            rows.append(dict(seed=seed, tier=tier, field=name, cover=_coverage(f, truth[name]),
                             cover_sane=_coverage(f, truth[name], sane),
                             rms=float(np.sqrt(np.mean((f.mean - truth[name]) ** 2))),
                             median_std=float(np.median(f.std)), amp=float(f.hyper.amp[0]),
                             amp_true=v_amp if name == "V" else lns_amp, scale=float(f.hyper.scale[0]),
                             n_ok=int(ok.sum()), n_sane=int(sane.sum()), seconds=seconds))
    return rows


def field_case(seed, size, scale, v_amp, lns_amp, v_err, lns_err, plugin):
    """Per-spaxel values = truth + noise of the stated error; the two-step tier."""
    from cube3d.spatial.twostep import two_step_fields

    v, sigma = truth_fields(seed, size, scale, v_amp, lns_amp)
    rng = np.random.default_rng(700 + seed)
    ev = rng.uniform(*v_err, size=v.shape)
    es = rng.uniform(*lns_err, size=v.shape)  # error of ln sigma
    s_obs = sigma * np.exp(es * rng.normal(size=v.shape))
    values = {"V": v + ev * rng.normal(size=v.shape), "SIGMA": s_obs}
    errors = {"V": ev, "SIGMA": es * s_obs}
    t0 = time.perf_counter()
    out = two_step_fields(values, errors, np.ones(v.shape, bool), _config(plugin))
    seconds = time.perf_counter() - t0
    truth = {"V": v, "SIGMA": sigma}
    rows = []
    for name in ("V", "SIGMA"):
        f = out.fields[name]
        rows.append(dict(seed=seed, tier="two_step", field=name, cover=_coverage(f, truth[name]),
                         cover_sane=float("nan"), rms=float(np.sqrt(np.mean((f.mean - truth[name]) ** 2))),
                         median_std=float(np.median(f.std)), amp=float(f.hyper.amp[0]),
                         amp_true=v_amp if name == "V" else lns_amp, scale=float(f.hyper.scale[0]),
                         n_ok=v.size, n_sane=v.size, seconds=seconds))
    return rows


def summarise(label, rows):
    print(f"\n== {label}")
    print(f"{'seed':>4} {'tier':>9} {'field':>5} {'cover':>6} {'sane':>6} {'rms':>8} {'med std':>8} "
          f"{'amp':>8} {'true':>7} {'scale':>6} {'ok':>4} {'sane':>4} {'s':>5}")
    for r in rows:
        print(f"{r['seed']:>4} {r['tier']:>9} {r['field']:>5} {r['cover']:6.3f} {r['cover_sane']:6.3f} "
              f"{r['rms']:8.3g} {r['median_std']:8.3g} {r['amp']:8.3g} {r['amp_true']:7.3g} {r['scale']:6.2f} "
              f"{r['n_ok']:>4} {r['n_sane']:>4} {r['seconds']:5.1f}")
    for tier in sorted({r["tier"] for r in rows}):
        for name in ("V", "SIGMA"):
            c = np.array([r["cover"] for r in rows if r["tier"] == tier and r["field"] == name])
            cs = np.array([r["cover_sane"] for r in rows if r["tier"] == tier and r["field"] == name])
            if c.size:
                sane = f", sane spaxels {np.nanmean(cs):.3f}" if np.any(np.isfinite(cs)) else ""
                print(f"{label}: {tier:>9} {name:>5}: mean 68% coverage {c.mean():.3f} "
                      f"(seeds {c.min():.2f}-{c.max():.2f}, n={c.size}){sane}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", default=["small", "large", "fields"], choices=["small", "large", "fields"])
    p.add_argument("--seeds", type=int, default=10, help="seeds of the small-amplitude sets")
    p.add_argument("--first-seed", type=int, default=0, help="first seed of the small-amplitude sets")
    p.add_argument("--large-seeds", type=int, default=3, help="seeds of the larger-amplitude sets")
    p.add_argument("--size", type=int, default=16, help="spaxels per side")
    p.add_argument("--scale", type=float, default=4.0, help="true length scale of the small set (spaxels)")
    p.add_argument("--size-large", type=int, default=28, help="spaxels per side of the large set")
    p.add_argument("--scale-large", type=float, default=5.0, help="true length scale of the large set (spaxels)")
    p.add_argument("--tiers", nargs="+", default=["two_step", "joint_map"], choices=["two_step", "joint_map"])
    p.add_argument("--plugin", action="store_true", help="type-II MAP errors (hyper_integration='none')")
    p.add_argument("--laplace-v", action="store_true",
                   help="joint tier: V data from the Laplace quadratic at the mode (v_likelihood_grid=0)")
    p.add_argument("--json", help="write every row to this file")
    p.add_argument("--cache", help="folder for the per-spaxel fits (reused when present)")
    args = p.parse_args(argv)
    global LAPLACE_V
    LAPLACE_V = args.laplace_v
    _setup()
    all_rows = {}
    t0 = time.perf_counter()
    if "fields" in args.sets:
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            va, la = small_amplitudes(seed)
            rows += field_case(seed, args.size, args.scale, va, la, (40.0, 100.0), (0.2, 0.5), args.plugin)
        summarise("fields, small amplitudes", rows)
        all_rows["fields_small"] = rows
        rows = []
        for seed in range(args.large_seeds):
            rows += field_case(100 + seed, args.size, args.scale, 40.0, 0.25, (10.0, 30.0), (0.07, 0.2), args.plugin)
        summarise("fields, larger amplitudes", rows)
        all_rows["fields_large"] = rows
    if "small" in args.sets:
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            va, la = small_amplitudes(seed)
            rows += spectral_case(seed, args.size, args.scale, va, la, (2.0, 5.0), args.tiers, args.plugin,
                                  cache=args.cache)
            print(f"  small seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)
        summarise("spectral mocks, small amplitudes, S/N 2-5", rows)
        all_rows["small"] = rows
    if "large" in args.sets:
        rows = []
        for seed in range(args.large_seeds):
            # seed 0 is test_gp_mock.py's cube (field keys 11, 12, noise key 13)
            keys = (11 + 100 * seed, 12 + 100 * seed, 13 + 100 * seed)
            rows += spectral_case(100 + seed, args.size_large, args.scale_large, 60.0, 0.2, (5.0, 5.0), args.tiers,
                                  args.plugin, keys=keys, n_outer=3, cache=args.cache)  # as the test
            print(f"  large seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)
        summarise("spectral mocks, larger amplitudes, S/N 5", rows)
        all_rows["large"] = rows
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(all_rows, fh, indent=1)


if __name__ == "__main__":
    main()
