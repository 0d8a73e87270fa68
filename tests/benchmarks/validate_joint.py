"""Simulate and recover with the joint model: 95% coverage on repeated mocks, and the joint
dark mass narrower than either data set's alone (issue 10).

Each mock: an 8 x 8 IFU map of 0.1 kpc spaxels at 25 deg to the galaxy's axes (PSF 0.07 kpc,
V and V_rms errors 5 km/s), and 100 discrete tracers (Plummer scale 3 kpc, within 15 kpc,
5% contaminants of dispersion 600 km/s, 20 km/s errors), from JAM at dense settings
(:mod:`dynamics.joint_mocks`).  Truth: 4-Gaussian MGE x M/L 3, NFW halo log10 M200 = 12.5,
c = 8, inclination 60, beta_z 0.1, kappa 0.8, beta_z_discrete 0.  Every mock is fitted three
times (IFU only, stars only, joint) by the Laplace approximation; the script prints, per
fit type and parameter, the fraction of mocks whose 95% interval holds the truth, and the
median posterior sd of log10 M_dark(<10 kpc).

    python tests/benchmarks/validate_joint.py [--n-mocks 10] [--first-seed 0]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from dynamics import MGE  # noqa: E402
from dynamics.halos import nfw_from_m200  # noqa: E402
from dynamics.joint_fit import fit_laplace  # noqa: E402
from dynamics.joint_mocks import mock_discrete, mock_ifu  # noqa: E402
from dynamics.joint_model import JointConfig  # noqa: E402
from dynamics.tracer_density import plummer_mge  # noqa: E402

TRACER = MGE.from_observed([2e4, 5e3, 8e2, 60.0], [0.4, 2.0, 8.0, 30.0], [0.85, 0.75, 0.7, 0.65], 20.0)
TRUTH = dict(ml=3.0, inclination=60.0, beta_z=0.1, kappa=0.8, log10_m200=12.5, concentration=8.0,
             beta_z_discrete=0.0, f_out=0.05)
DARK = "log10_mass_dark_10kpc"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-mocks", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args()
    cfg = JointConfig(tracer=TRACER, halo="nfw", discrete_tracer=plummer_mge(3.0), outlier_sigma=600.0)
    truth = dict(TRUTH)
    dark = float(nfw_from_m200(10 ** TRUTH["log10_m200"], TRUTH["concentration"]).enclosed_mass(10.0))
    stars_mass = float(TRACER.scaled(TRUTH["ml"]).mass_in_sphere(10.0, TRUTH["inclination"]))
    truth.update({DARK: np.log10(dark), "log10_mass_stars_10kpc": np.log10(stars_mass),
                  "log10_mass_total_10kpc": np.log10(dark + stars_mass)})
    hits = {kind: {} for kind in ("ifu", "stars", "joint")}
    sds = {kind: [] for kind in hits}
    failed = {kind: 0 for kind in hits}
    t0 = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.n_mocks):
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1000 + seed), 3)
        ifu, _ = mock_ifu(k1, TRUTH, cfg, n_side=8, pixel_size=0.1, angle=25.0, psf_sigma=0.07)
        stars = mock_discrete(k2, TRUTH, cfg, n=100, a=3.0, r_max=15.0, outlier_fraction=0.05).data
        for kind, data in (("ifu", (ifu, None)), ("stars", (None, stars)), ("joint", (ifu, stars))):
            res = fit_laplace(k3, *data, cfg, radii=(10.0,), n_starts=2, predict=False)
            if not res.converged:
                failed[kind] += 1
            rows = {r["name"]: r for r in res.summary}
            for name, draws in res.samples_by_chain.items():
                lo, hi = np.percentile(np.asarray(draws).reshape(-1), [2.5, 97.5])
                hits[kind].setdefault(name, []).append(lo <= truth[name] <= hi)
            sds[kind].append(rows[DARK]["sd"])
            print(f"seed {seed} {kind:>5}: {DARK} {rows[DARK]['p50']:.3f} +- {rows[DARK]['sd']:.3f} "
                  f"(truth {truth[DARK]:.3f}); converged {res.converged} {res.problems}; {res.info['seconds']:.0f} s",
                  flush=True)
    print(f"\n{args.n_mocks} mocks in {time.perf_counter() - t0:.0f} s; fraction of mocks whose 95% interval "
          "holds the truth (goal >= 0.9):")
    for kind in hits:
        cover = ", ".join(f"{n} {np.mean(v):.2f}" for n, v in hits[kind].items())
        print(f"  {kind:>5}: {cover}; not converged: {failed[kind]}")
    print("median posterior sd of " + DARK + ": " + ", ".join(f"{k} {np.nanmedian(v):.3f}" for k, v in sds.items()))
    narrower = np.mean(np.array(sds["joint"]) < np.minimum(sds["ifu"], sds["stars"]))
    print(f"joint narrower than both single data sets in {narrower:.2f} of the mocks")


if __name__ == "__main__":
    main()
