"""``cube3d dynamics``: one mass model for a maps file and discrete tracers (JAM + numpyro).

A thin layer over :mod:`dynamics.joint_model` and :mod:`dynamics.joint_fit`: read and check
every input (:mod:`cube3d.dynamics_io`) before anything is written, fit by Laplace or NUTS,
write ``posterior.nc`` (ArviZ), ``summary.ecsv`` and the figures into the output folder.
Exit status 0, 2 for bad input (one line, nothing written), 3 when the fit did not converge
(outputs written, one line naming the parameters).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["add_dynamics_parser", "run_dynamics", "OUTPUT_FILES"]

OUTPUT_FILES = ("posterior.nc", "summary.ecsv", "ifu_maps.png", "discrete.png", "enclosed_mass.png", "corner.png")

PRIORS_HELP = ("Priors (uniform): ml 0.1-20 Msun/Lsun; inclination from arccos(q_min) + 0.5 to 90 deg; "
               "beta_z -1-0.9; kappa -2-2; log10_m_bh 5-11; log10_m200 9-15.5 (M200 at 200 x rho_crit, "
               "H0 = 70); concentration 2-40; gamma (gnfw) 0-2; beta_z_discrete -1-0.9; f_out 0-0.5.")


def add_dynamics_parser(sub):
    """Register the ``dynamics`` subcommand on an argparse subparsers object."""
    p = sub.add_parser(
        "dynamics", help="fit one JAM mass model to a maps file and/or discrete tracers",
        description="Fit a mass model (stars x M/L + dark halo + black hole) to the V and V_rms maps of a cube3d "
                    "maps file (JAM, PSF-convolved) and/or to discrete line-of-sight velocities (Watkins et al. "
                    "2013, with a contamination mixture), by NUTS or a Laplace approximation. "
                    + PRIORS_HELP)
    p.add_argument("--maps", help="cube3d maps FITS file (V, V_ERR, SIGMA, SIGMA_ERR, BINID, FLAG)")
    p.add_argument("--mge", required=True, help="tracer MGE table (ECSV/CSV: surf Lsun/pc^2, sigma arcsec, q)")
    p.add_argument("--stars", help="discrete tracers table (ECSV/CSV: ra, dec deg, v, v_err km/s [, p_member])")
    p.add_argument("--distance", type=float, required=True, metavar="MPC", help="distance in Mpc")
    p.add_argument("--centre", type=float, nargs=2, required=True, metavar=("RA", "DEC"),
                   help="galaxy centre (degrees)")
    p.add_argument("--pa", type=float, required=True, metavar="DEG",
                   help="position angle of the projected major axis, degrees east of north (receding side)")
    p.add_argument("--halo", choices=("nfw", "gnfw", "none"), default="nfw", help="dark halo (default nfw)")
    p.add_argument("--black-hole", action="store_true", help="add a central black hole (log10_m_bh free)")
    p.add_argument("--method", choices=("nuts", "laplace"), default="nuts", help="posterior (default nuts)")
    p.add_argument("--mass-radii", type=float, nargs="+", default=[10.0], metavar="KPC",
                   help="radii (kpc) of the derived enclosed masses (default 10)")
    p.add_argument("--psf-sigma", type=float, default=None, metavar="ARCSEC",
                   help="Gaussian PSF dispersion (default: the maps header's PSF_SIGMA_ARCSEC)")
    p.add_argument("--stars-scale", type=float, default=None, metavar="KPC",
                   help="Plummer scale of the discrete tracer (default: fitted to the positions)")
    p.add_argument("--outlier-sigma", type=float, default=None, metavar="KMS",
                   help="dispersion of the contaminants (default 3x the stars' velocity dispersion)")
    p.add_argument("--num-warmup", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--num-chains", type=int, default=2)
    p.add_argument("--max-tree-depth", type=int, default=10,
                   help="NUTS tree depth limit (at most 2^depth - 1 gradients per draw; default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs in OUTDIR")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the final line")
    return p


def _positive_int(value, option):
    if value < 1:
        raise InputError(f"{option}: must be >= 1, got {value}")


def _load(args):
    """Every input, checked: (ifu, ifu_info, discrete, config, radii)."""
    from dynamics.joint_model import JointConfig, default_outlier_sigma, prior_bounds
    from dynamics.tracer_density import fit_plummer_scale, plummer_mge

    from .dynamics_io import check_frame, read_ifu, read_mge, read_stars

    if args.maps is None and args.stars is None:
        raise InputError("give --maps, --stars or both")
    ra, dec, pa, distance = check_frame(args.centre, args.pa, args.distance)
    for option, value in (("--num-warmup", args.num_warmup), ("--num-samples", args.num_samples),
                          ("--num-chains", args.num_chains), ("--max-tree-depth", args.max_tree_depth)):
        _positive_int(value, option)
    radii = tuple(float(r) for r in args.mass_radii)
    if not all(np.isfinite(r) and r > 0 for r in radii):
        raise InputError(f"--mass-radii: radii must be finite and > 0 kpc, got {list(args.mass_radii)}")
    tracer = read_mge(args.mge, distance)
    ifu = info = discrete = None
    if args.maps is not None:
        ifu, info = read_ifu(args.maps, (ra, dec), pa, distance, args.psf_sigma, tracer)
    dtr = None
    outlier = None
    if args.stars is not None:
        discrete = read_stars(args.stars, (ra, dec), pa, distance)
        if args.stars_scale is not None:
            if not (np.isfinite(args.stars_scale) and args.stars_scale > 0):
                raise InputError(f"--stars-scale: must be > 0 kpc, got {args.stars_scale}")
            scale = float(args.stars_scale)
        else:
            scale = fit_plummer_scale(np.hypot(discrete.x, discrete.y))
        dtr = plummer_mge(scale)
        outlier = default_outlier_sigma(discrete.v) if args.outlier_sigma is None else float(args.outlier_sigma)
        if not (np.isfinite(outlier) and outlier > 0):
            raise InputError(f"--outlier-sigma: must be > 0 km/s, got {outlier}")
        info_stars = dict(plummer_scale_kpc=scale, outlier_sigma=outlier)
    else:
        info_stars = {}
    config = JointConfig(tracer=tracer, halo=args.halo, black_hole=args.black_hole, discrete_tracer=dtr,
                         outlier_sigma=outlier)
    try:
        prior_bounds(config, ifu is not None, discrete is not None)
    except ValueError as exc:
        raise InputError(f"--mge {args.mge}: {exc}") from None
    return ifu, info, discrete, config, radii, info_stars


def _prepare_outdir(outdir, overwrite):
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"--outdir {outdir}: exists and is not a folder")
    if outdir.is_dir() and not overwrite:
        present = [f for f in OUTPUT_FILES if (outdir / f).exists()]
        if present:
            raise InputError(f"--outdir {outdir}: holds {', '.join(present)} from an earlier run; "
                             "pass --overwrite to replace them")
    return outdir


def _atomic(path, write):
    """Write through a temporary file in the same folder, then rename (no partial file left)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _inference_data(result, ifu, discrete):
    """ArviZ InferenceData: posterior, sample stats, observed and constant data, predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    posterior = {k: np.asarray(v) for k, v in result.samples_by_chain.items()}
    observed, constant, dims = {}, {}, {}
    if ifu is not None:
        observed.update(v=np.asarray(ifu.v), vrms=np.asarray(ifu.vrms))
        constant.update(v_err=np.asarray(ifu.v_err), vrms_err=np.asarray(ifu.vrms_err), spaxel_x_kpc=ifu.x,
                        spaxel_y_kpc=ifu.y, spaxel_bin=np.asarray(ifu.binid), spaxel_weight=np.asarray(ifu.weight))
        dims.update(v=["bin"], vrms=["bin"], v_err=["bin"], vrms_err=["bin"], spaxel_x_kpc=["spaxel"],
                    spaxel_y_kpc=["spaxel"], spaxel_bin=["spaxel"], spaxel_weight=["spaxel"],
                    v_model=["bin"], vrms_model=["bin"])
    if discrete is not None:
        observed.update(v_discrete=np.asarray(discrete.v))
        constant.update(v_err_discrete=np.asarray(discrete.v_err), x_discrete_kpc=discrete.x,
                        y_discrete_kpc=discrete.y, p_member_prior=np.asarray(discrete.p_member))
        for k in ("v_discrete", "v_err_discrete", "x_discrete_kpc", "y_discrete_kpc", "p_member_prior",
                  "vrms_discrete"):
            dims[k] = ["star"]
    if "predictions_draws" in result.info:
        preds = result.info["predictions_draws"]
    else:
        preds = {k: np.asarray(v)[None, None] for k, v in result.info.get("predictions", {}).items()}
    stats = {}
    if result.method == "nuts":
        stats = dict(diverging=np.asarray(result.info["diverging"]), n_steps=np.asarray(result.info["num_steps"]))
    idata = az.from_dict(posterior=posterior, sample_stats=stats or None, observed_data=observed or None,
                         constant_data=constant or None, predictions=preds or None, dims=dims,
                         pred_dims={k: dims[k] for k in preds if k in dims},
                         attrs=dict(method=result.method, converged=int(result.converged),
                                    problems="; ".join(result.problems)))
    return idata


def _write_summary(path, result, meta):
    from astropy.table import Table

    from dynamics.joint_fit import SUMMARY_COLUMNS

    table = Table(rows=[[row[c] for c in SUMMARY_COLUMNS] for row in result.summary], names=SUMMARY_COLUMNS,
                  dtype=[str] + [float] * (len(SUMMARY_COLUMNS) - 1))
    table.meta.update(meta)
    _atomic(path, lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True))


def _plots(outdir, result, ifu, info, discrete, config):
    import jax

    from dynamics.joint_model import derived_masses, membership_probability

    from .dynamics_plot import plot_corner, plot_discrete, plot_enclosed_mass, plot_ifu_maps

    preds = result.info.get("predictions", {})
    written = []
    if ifu is not None:
        written.append(_atomic(outdir / "ifu_maps.png", lambda t: plot_ifu_maps(t, ifu, info, preds["v_model"],
                                                                                  preds["vrms_model"])))
    if discrete is not None:
        draws = result.info.get("predictions_draws", {}).get("vrms_discrete")
        draws = preds["vrms_discrete"][None] if draws is None else np.asarray(draws).reshape(-1, discrete.v.size)
        prob = None
        if config.outlier_sigma is not None:
            point = {k: jax.numpy.asarray(v) for k, v in result.point.items()}
            prob = np.asarray(jax.jit(lambda q: membership_probability(q, discrete, config))(point))
        written.append(_atomic(outdir / "discrete.png", lambda t: plot_discrete(t, discrete, draws, prob)))
    # enclosed mass on 24 radii, for up to 200 draws
    flat = {n: np.asarray(result.samples_by_chain[n]).reshape(-1) for n in result.names}
    n = flat[result.names[0]].size
    idx = np.linspace(0, n - 1, min(200, n)).astype(int)
    r_hi = 2.0 * max(np.max(np.hypot(d.x, d.y)) for d in (ifu, discrete) if d is not None)
    radii = np.geomspace(r_hi / 300.0, r_hi, 24)
    sub = {k: v[idx] for k, v in flat.items()}
    masses = jax.jit(jax.vmap(lambda p: derived_masses(p, config, tuple(float(r) for r in radii))))(sub)

    def stack(kind):
        keys = [f"log10_mass_{kind}_{float(r):g}kpc" for r in radii]
        return np.stack([np.asarray(masses[k]) for k in keys], axis=1) if keys[0] in masses else None

    written.append(_atomic(outdir / "enclosed_mass.png",
                           lambda t: plot_enclosed_mass(t, radii, stack("total"), stack("stars"), stack("dark"))))
    written.append(_atomic(outdir / "corner.png", lambda t: plot_corner(t, result.samples_by_chain, result.names)))
    return written


def run_dynamics(args):
    """Run ``cube3d dynamics``; return the exit status (0, or 3 when not converged)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from dynamics.convergence import ConvergenceWarning
    from dynamics.joint_fit import fit_laplace, fit_nuts

    t0 = time.perf_counter()
    ifu, info, discrete, config, radii, info_stars = _load(args)
    outdir = _prepare_outdir(args.outdir, args.overwrite)
    say = (lambda *a: None) if args.quiet else (lambda msg: print(f"cube3d dynamics: {msg}", file=sys.stderr))
    parts = []
    if ifu is not None:
        parts.append(f"{ifu.n_bins} bins ({ifu.x.size} spaxels)")
    if discrete is not None:
        parts.append(f"{discrete.v.size} discrete tracers (Plummer scale {info_stars['plummer_scale_kpc']:.3g} kpc, "
                     f"contaminants sigma {info_stars['outlier_sigma']:.0f} km/s)")
    say(" + ".join(parts) + f"; halo {config.halo}{' + black hole' if config.black_hole else ''}; {args.method}")
    key = jax.random.PRNGKey(args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Laplace fit did not converge")
        if args.method == "laplace":
            result = fit_laplace(key, ifu, discrete, config, radii=radii, n_starts=2)
        else:
            result = fit_nuts(key, ifu, discrete, config, num_warmup=args.num_warmup, num_samples=args.num_samples,
                              num_chains=args.num_chains, radii=radii, progress_bar=not args.quiet,
                              max_tree_depth=args.max_tree_depth)
    outdir.mkdir(parents=True, exist_ok=True)
    idata = _inference_data(result, ifu, discrete)
    _atomic(outdir / "posterior.nc", lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf"))
    meta = dict(method=result.method, converged=bool(result.converged), problems=list(result.problems),
                seconds=round(time.perf_counter() - t0, 2), halo=config.halo, black_hole=bool(config.black_hole),
                maps=str(args.maps), stars=str(args.stars), mge=str(args.mge), distance_mpc=args.distance,
                centre_deg=list(args.centre), pa_deg=args.pa, **info_stars)
    if info is not None:
        meta["psf_sigma_arcsec"] = info["psf_sigma_arcsec"]
        meta["pixel_arcsec"] = info["pixel_arcsec"]
    _write_summary(outdir / "summary.ecsv", result, meta)
    if not args.no_plots:
        _plots(outdir, result, ifu, info, discrete, config)
    if not args.quiet:
        print(f"{'name':>26} {'p50':>10} {'p16':>10} {'p84':>10} {'r_hat':>7} {'ess':>7}", file=sys.stderr)
        for row in result.summary:
            print(f"{row['name']:>26} {row['p50']:10.4g} {row['p16']:10.4g} {row['p84']:10.4g} "
                  f"{row['r_hat']:7.3f} {row['ess']:7.0f}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    if not result.converged:
        print(f"cube3d: error: {result.method} did not converge ({'; '.join(result.problems)}); "
              f"outputs in {outdir} are not to be trusted", file=sys.stderr)
        return 3
    print(f"cube3d dynamics: {result.method} converged in {elapsed:.0f} s; wrote {outdir / 'summary.ecsv'}, "
          f"{outdir / 'posterior.nc'}" + ("" if args.no_plots else " and figures"))
    return 0
