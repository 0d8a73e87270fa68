"""The ``cube3d`` command line: ``cube3d fit``, ``cube3d plot``, ``cube3d demo``.

User errors (a missing file, a bad option) print one line ``cube3d: error: ...`` on
standard error and exit with status 2, without a traceback; nothing is overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from . import __version__
from .errors import InputError, ResultWarning
from .flags import flags_in_use

#: settings of ``cube3d.spatial.GPConfig`` offered on the command line (kept equal to
#: ``cube3d.spatial.config.TIERS``/``SOLVERS``/``MEANS``; not imported here so that
#: ``cube3d --help`` does not load JAX)
GP_TIERS = ("two_step", "joint_map", "nuts")
GP_SOLVERS = ("auto", "dense", "hsgp", "kronecker")
GP_MEANS = ("constant", "disk")
GP_HYPER = ("ccd", "none")
#: GP options that only make sense with --gp (argparse dest -> option)
_GP_OPTIONS = {"gp_tier": "--gp-tier", "gp_solver": "--gp-solver", "gp_kernel": "--gp-kernel",
               "gp_separable": "--gp-separable", "gp_scale": "--gp-scale", "gp_v_mean": "--gp-v-mean",
               "gp_min_sn": "--gp-min-sn", "gp_hyper": "--gp-hyper"}
#: Voronoi target S/N of ``cube3d demo`` without --gp
DEMO_TARGET_SN = 15.0


def _add_gp_options(p):
    g = p.add_argument_group(
        "spatial prior (Gaussian process)",
        "Fit every spaxel alone, then put Gaussian-process priors over the sky on the kinematic fields "
        "(V, ln sigma, h3...) so that noisy spaxels borrow strength from their neighbours. The main maps "
        "become the GP posterior (V = mean, V_ERR = standard deviation, likewise SIGMA, H3...); the per-spaxel "
        "fits move to V_SPAXEL, V_SPAXEL_ERR, ...; hyperparameters go to the header (CUBE3D GP_* cards).")
    g.add_argument("--gp", action="store_true",
                   help="turn the spatial prior on (per-spaxel fit, so not with --target-sn)")
    g.add_argument("--gp-tier", choices=GP_TIERS, default=None,
                   help="default: joint_map when the median S/N per pixel is below 10, else two_step (the log "
                        "says which); two_step: per-spaxel Gaussian posteriors + GP, seconds; joint_map: spectra and "
                        "GP prior optimised together; nuts: numpyro sampling of fields and hyperparameters (small grids)")
    g.add_argument("--gp-solver", choices=GP_SOLVERS, default=None,
                   help="auto (default): dense up to 2500 observed spaxels, else hsgp; dense: exact, memory ~ N^2; "
                        "hsgp: Hilbert-space reduced rank, memory ~ N; kronecker: exact on the grid, needs "
                        "--gp-separable and a single kernel term")
    g.add_argument("--gp-kernel", default=None, metavar="KERNEL",
                   help="matern32, matern52 (default), expsquared, or a sum such as matern32+expsquared "
                        "(each term with its own amplitude and length scale)")
    g.add_argument("--gp-separable", action="store_true",
                   help="products of 1-D correlations along y and x instead of functions of the distance")
    g.add_argument("--gp-scale", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="prior range of the length scales in spaxels (default: 1 spaxel, or what the hsgp basis "
                        "resolves, to twice the field's size)")
    g.add_argument("--gp-v-mean", choices=GP_MEANS, default=None,
                   help="mean of the velocity field: constant (default) or disk (arctan rotation curve)")
    g.add_argument("--gp-min-sn", "--gp-min-snr", dest="gp_min_sn", type=float, default=None, metavar="SN",
                   help="spaxels below this S/N per pixel are unobserved for the GP, which still predicts there "
                        "(default 0; --gp-min-snr is its former name)")
    g.add_argument("--gp-hyper", choices=GP_HYPER, default=None,
                   help="two_step and joint_map errors: ccd (default) integrates over the hyperparameters' "
                        "posterior (amplitudes, length scales, error factor; a central composite design as in "
                        "INLA, ~15-25 GP solves per field), so the errors include what the data leave unknown "
                        "about them; none plugs in their most probable values (faster, overconfident where an "
                        "amplitude is poorly constrained)")


def gp_config_from_args(args):
    """The :class:`cube3d.spatial.GPConfig` asked for on the command line, or None without ``--gp``.

    Raises :class:`InputError` naming the option for a GP option given without ``--gp``
    and for bad values (checked before any file is read).
    """
    if not args.gp:
        given = [opt for dest, opt in _GP_OPTIONS.items() if getattr(args, dest) not in (None, False)]
        if given:
            raise InputError(f"{given[0]}: needs --gp (the spatial prior is off)")
        return None
    from .spatial import GPConfig, parse_kernel

    kernel = args.gp_kernel if args.gp_kernel is not None else GPConfig().kernel
    try:
        spec = parse_kernel(kernel, args.gp_separable)
    except InputError as exc:
        raise InputError(f"--gp-kernel: {exc}") from None
    solver = args.gp_solver or "auto"
    if solver == "kronecker" and (not args.gp_separable or spec.n_terms != 1):
        raise InputError("--gp-solver kronecker: needs --gp-separable and a single kernel term (no sums); "
                         "use --gp-solver hsgp (any kernel) or dense (small grids)")
    scale = None
    if args.gp_scale is not None:
        lo, hi = args.gp_scale
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise InputError(f"--gp-scale {lo:g} {hi:g}: need 0 < MIN < MAX (length scales in spaxels)")
        scale = (float(lo), float(hi))
    min_sn = 0.0 if args.gp_min_sn is None else args.gp_min_sn
    if not (math.isfinite(min_sn) and min_sn >= 0):
        raise InputError(f"--gp-min-sn {min_sn:g}: must be a finite number >= 0")
    return GPConfig(kernel=kernel, separable=bool(args.gp_separable), tier=args.gp_tier or "two_step",
                    solver=solver, v_mean=args.gp_v_mean or "constant", scale_range=scale, min_sn=float(min_sn),
                    hyper_integration=args.gp_hyper or "ccd")


def _add_fit_options(p, demo=False):
    g = p.add_argument_group("data")
    if not demo:
        g.add_argument("cube", help="input FITS datacube (MUSE DATA/STAT/DQ, MaNGA LOGCUBE, or a 3-D HDU with a spectral WCS)")
        g.add_argument("--templates", required=True, metavar="DIR",
                       help="directory (or FITS file) of 1-D template spectra with a linear or log wavelength WCS, e.g. MILES")
        g.add_argument("--redshift", "-z", type=float, required=True,
                       help="galaxy redshift; spectra are de-redshifted with it and V is relative to it (km/s)")
        g.add_argument("-o", "--output", required=True, metavar="MAPS.fits", help="output FITS file of kinematic maps")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the output files if they exist (default: refuse), and start afresh when "
                        "<output>.partial/ journals another run (a journal of this run is always resumed)")
    g.add_argument("--layout", default="auto", choices=["auto", "MUSE", "MANGA", "GENERIC"],
                   help="cube layout (default: detected from the HDU names)")
    g.add_argument("--model-cube", action="store_true",
                   help="also write the best-fit model cube to <output stem>_model.fits (implies --spectra)")
    g.add_argument("--spectra", action="store_true",
                   help="also write each bin's spectrum, best-fit model and weights (LOGLAM, SPEC, MODEL, WEIGHT "
                        "HDUs: 12 bytes per bin and pixel) for the spectrum panel of `cube3d plot`"
                        + (" (always on for the demo)" if demo else " (default: off)"))
    t = p.add_argument_group("templates and resolution")
    t.add_argument("--template-fwhm", type=float, default=2.51,
                   help="FWHM of the templates in Angstrom (default 2.51, MILES)")
    t.add_argument("--template-vacuum", action="store_true",
                   help="template wavelengths are in vacuum (default: air, as MILES)")
    t.add_argument("--lsf", metavar="FILE",
                   help="instrumental line-spread function: two-column table of wavelength and FWHM (Angstrom); "
                        "default: the cube's own (MaNGA) or the MUSE WFM formula for MUSE cubes")
    t.add_argument("--n-basis", type=int, default=None,
                   help="keep only this many templates, chosen by NNLS on the summed spectrum (default: all)")
    r = p.add_argument_group("preparation")
    r.add_argument("--velscale", type=float, default=None,
                   help="pixel size of the ln-lambda grid in km/s (default: the cube's smallest pixel)")
    r.add_argument("--wave-range", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="rest-frame wavelength range to fit, Angstrom (default: cube and templates overlap)")
    r.add_argument("--target-sn", type=float, default=None,
                   help="Voronoi-bin spaxels to this S/N per pixel (vorbin; default: no binning, every spaxel)")
    r.add_argument("--min-sn", type=float, default=0.0, help="skip spaxels below this median S/N per pixel (default 0)")
    r.add_argument("--no-emission-mask", action="store_true",
                   help="do not mask the standard emission and sky lines")
    r.add_argument("--emission-width", type=float, default=800.0, metavar="KMS",
                   help="full width of each masked emission/sky-line window, km/s (default 800; 1500 for gas with "
                        "broad wings, as the MaNGA DAP)")
    f = p.add_argument_group("fit")
    default_moments = 2 if demo else 4
    f.add_argument("--moments", type=int, default=default_moments, choices=[2, 3, 4, 5, 6],
                   help=f"Gauss-Hermite moments: 2 = V, sigma; 4 = V, sigma, h3, h4; up to 6 (default {default_moments})")
    f.add_argument("--losvd", default="gauss_hermite", choices=["gauss_hermite", "sanders_evans"],
                   help="LOSVD family (default gauss_hermite; sanders_evans is non-negative everywhere)")
    f.add_argument("--degree", type=int, default=4, help="additive Legendre polynomial degree, -1 for none (default 4)")
    f.add_argument("--mdegree", type=int, default=0, help="multiplicative Legendre polynomial degree (default 0)")
    f.add_argument("--clip", type=float, default=None, metavar="NSIGMA",
                   help="mask pixels deviating by more than NSIGMA after a first fit, then refit (default: off)")
    f.add_argument("--sigma-start", type=float, default=150.0, help="starting dispersion, km/s (default 150)")
    f.add_argument("--chunk-size", type=int, default=16,
                   help="spectra fitted per compiled batch; sets peak memory (default 16, fastest on CPU)")
    f.add_argument("--chunk-spectra", type=int, default=256, metavar="N",
                   help="spectra read, fitted and journalled together (default 256, rounded up to a multiple of "
                        "--chunk-size); with --chunk-size it sets the peak memory, and a rerun after a crash "
                        "resumes from the last whole chunk (kept in <output>.partial/)")
    f.add_argument("--workers", type=int, default=None, metavar="N",
                   help="fit the chunks in N worker processes (a Dask LocalCluster on this machine; default: one "
                        "after the other in this process); the maps are those of a serial run")
    f.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="fit the chunks on a running Dask cluster, e.g. tcp://host:8786 (one started by "
                        "dask-jobqueue on SLURM); its workers must reach the cube and the output's folder at the same "
                        "paths (a shared filesystem)")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines")
    _add_gp_options(p)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line ``cube3d: error: ...`` (status 2)."""

    def error(self, message):
        self.exit(2, f"cube3d: error: {message}; see '{self.prog} --help'\n")


def build_parser():
    parser = _Parser(
        prog="cube3d",
        description="Fit the line-of-sight velocity distribution of every spaxel of an IFU datacube "
                    "and write FITS kinematic maps.",
    )
    parser.add_argument("--version", action="version", version=f"cube3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    pf = sub.add_parser("fit", help="fit a FITS cube and write kinematic maps",
                        description="Fit every spaxel (or Voronoi bin) of a cube and write one FITS file of maps "
                                    "(V, SIGMA, H3, H4, errors, CHI2, SNR, BINID, FLAG) with the cube's sky WCS; "
                                    "with --gp, Gaussian-process spatial priors smooth the kinematic fields.")
    _add_fit_options(pf)

    pp = sub.add_parser("plot", help="plot a maps file", description="Draw the maps and a spectrum-plus-fit panel.")
    pp.add_argument("maps", help="FITS file written by `cube3d fit`")
    pp.add_argument("-o", "--output", required=True, metavar="PNG",
                    help="output image; the spectrum panel goes to <stem>_spectrum<suffix>")
    pp.add_argument("--bin", type=int, default=None, help="bin index for the spectrum panel (default: highest S/N)")
    pp.add_argument("--errors", action="store_true", help="also draw the error maps")
    pp.add_argument("--overwrite", action="store_true", help="replace the images if they exist (default: refuse)")

    pd = sub.add_parser("demo", help="fit the bundled real MUSE cutout (Abell 478 BCG) end to end",
                        description="Fit the bundled MUSE cutout of the Abell 478 brightest cluster galaxy with the "
                                    "bundled MILES-HC templates, write maps and plots to --outdir. Voronoi bins to "
                                    f"S/N {DEMO_TARGET_SN:g} by default; with --gp every spaxel is fitted and a "
                                    "Gaussian-process spatial prior gives the maps.")
    pd.add_argument("--outdir", default="cube3d_demo", help="output directory (default ./cube3d_demo)")
    from .datasets import CLUSTER_REDSHIFT, DEMO_REDSHIFT

    pd.add_argument("--redshift", "-z", type=float, default=DEMO_REDSHIFT,
                    help=f"redshift (default {DEMO_REDSHIFT}, the galaxy's own; the cluster's catalogue value "
                         f"{CLUSTER_REDSHIFT} puts the galaxy at about -650 km/s)")
    _add_fit_options(pd, demo=True)
    # target S/N: DEMO_TARGET_SN unless --gp (_cmd_demo)
    from .dynamics_cli import add_dynamics_parser

    add_dynamics_parser(sub)
    return parser


def _progress(quiet):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = {"bar": None}

    def update(done, total):
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, unit="spec", desc="fit", file=sys.stderr)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:  # finished: closed now, so that the next stage's lines (GP, writing) come below it
            close()

    def close():
        if bar["bar"] is not None:
            bar["bar"].close()
            bar["bar"] = None

    return update, close


def _same_file(a, b):
    """True when the paths name one file, however reached (``..``, symlinks, hard links)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _input_files(inputs):
    """The files among ``inputs`` (a templates folder counts with every file in it)."""
    files = []
    for item in inputs:
        if item is None or not isinstance(item, (str, os.PathLike)):
            continue
        p = Path(item)
        files.extend(sorted(p.iterdir()) if p.is_dir() else [p])
    return files


def _check_outputs(targets, overwrite, inputs=()):
    """Refuse, before any work, an output that exists (without --overwrite), has no
    directory, is a directory, or is one of the inputs (never overwrite the data)."""
    sources = _input_files(inputs)
    for target in map(Path, targets):
        for source in sources:
            if _same_file(target, source):
                raise InputError(f"output {target} is the input {source}; choose another output name")
        if target.is_dir():
            raise InputError(f"output {target} is a directory")
        if target.exists() and not overwrite:
            raise InputError(f"output {target} exists; pass --overwrite to replace it")
        if not target.parent.is_dir():
            raise InputError(f"output directory {target.parent} does not exist")


def _check_output(path, overwrite, model_cube=False, inputs=()):
    """:func:`_check_outputs` for a maps file (and its model cube)."""
    from .maps import model_path_for

    path = Path(path)
    if path.name.lower().endswith(".gz") and not path.name.lower().endswith(".fits.gz"):
        raise InputError(f"output {path}: a compressed maps file must end in .fits.gz")
    _check_outputs([path] + ([model_path_for(path)] if model_cube else []), overwrite, inputs)


def configs_from_args(args, lsf):
    """The :class:`~cube3d.prepare.PrepareConfig` and :class:`~cube3d.fit.FitConfig` that
    the options of ``cube3d fit`` (or ``demo``) ask for."""
    from .fit import FitConfig
    from .prepare import PrepareConfig

    prepare = PrepareConfig(
        layout=args.layout, template_fwhm=args.template_fwhm, template_air=not args.template_vacuum, lsf=lsf,
        velscale=args.velscale, wave_range=tuple(args.wave_range) if args.wave_range else None,
        target_sn=args.target_sn, min_sn=args.min_sn, mask_emission=not args.no_emission_mask,
        emission_width=args.emission_width, n_basis=args.n_basis,
    )
    fit = FitConfig(moments=args.moments, losvd=args.losvd, degree=args.degree, mdegree=args.mdegree,
                    clip=args.clip, sigma_start=args.sigma_start, chunk_size=args.chunk_size)
    return prepare, fit


def _run_fit(args, cube, templates, output, lsf):
    from .pipeline import check_gp_request
    from .runlock import output_lock

    gp = gp_config_from_args(args)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be a positive number of worker processes")
    prepare, fit = configs_from_args(args, lsf)
    check_gp_request(gp, prepare.target_sn)
    with output_lock(output):  # one run per output (cube3d.runlock)
        return _run_fit_locked(args, cube, templates, output, lsf, gp, prepare, fit)


def _run_fit_locked(args, cube, templates, output, lsf, gp, prepare, fit):
    from .journal import journal_path_for
    from .pipeline import run_fit, write_run

    _check_output(output, args.overwrite, args.model_cube, inputs=(cube, templates, lsf))
    update, close = _progress(args.quiet)
    log = None if args.quiet else (lambda msg: print(f"cube3d: {msg}", file=sys.stderr))
    keep = bool(args.spectra or args.model_cube)
    try:
        run = run_fit(cube, templates, args.redshift, prepare, fit, gp, auto_tier=gp is not None and args.gp_tier is None,
                      keep_spectra=keep, journal=journal_path_for(output), overwrite=args.overwrite,
                      chunk_spectra=args.chunk_spectra, workers=args.workers or 0, scheduler=args.scheduler,
                      progress=update, log=log)
    finally:
        close()
    try:
        written = write_run(run, output, overwrite=args.overwrite, spectra=keep, model_cube=args.model_cube)
    except OSError as exc:  # permissions, full disk: nothing was replaced (atomic write), the journal is kept
        raise InputError(f"output {output}: cannot write ({exc.strerror or exc}); the fitted chunks are kept in "
                         f"{journal_path_for(output)}: run the same command again to write the maps") from None
    if log:
        log(f"wrote {written}")
    return run.maps


def _cmd_plot(args):
    from .maps import read_maps
    from .plot import plot_maps, plot_spectrum_fit

    path = Path(args.maps)
    if not path.is_file():
        raise InputError(f"maps file {path} not found")
    out = Path(args.output)
    fmt = out.suffix.lower().lstrip(".")
    if fmt:
        from matplotlib.backend_bases import FigureCanvasBase

        if fmt not in FigureCanvasBase.get_supported_filetypes():
            raise InputError(f"--output: unsupported image format {out.suffix!r} in {out} (use .png, .pdf or .svg)")
    maps = read_maps(path)
    spec_out = out.with_name(f"{out.stem}_spectrum{out.suffix or '.png'}")
    _check_outputs([out] + ([spec_out] if maps.spectra is not None else []), args.overwrite, inputs=(path,))
    if maps.spectra is not None and args.bin is not None:
        n_bin = maps.spectra["SPEC"].shape[0]
        if not 0 <= args.bin < n_bin:
            raise InputError(f"--bin: must be a bin index from 0 to {n_bin - 1} in {path}, got {args.bin}")
    plot_maps(maps, out, errors=args.errors)
    print(f"cube3d: wrote {out}", file=sys.stderr)
    if maps.spectra is not None:
        plot_spectrum_fit(maps, spec_out, bin_index=args.bin)
        print(f"cube3d: wrote {spec_out}", file=sys.stderr)


def _cmd_demo(args):
    import numpy as np

    from . import datasets
    from .maps import read_maps
    from .plot import plot_maps, plot_spectrum_fit

    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"--outdir: {outdir} exists and is not a directory")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--outdir: cannot create {outdir} ({exc.strerror or exc})") from None
    output = outdir / "maps.fits"
    _check_outputs([outdir / "maps.png", outdir / "spectrum.png"], args.overwrite)
    if args.target_sn is None and not args.gp:
        args.target_sn = DEMO_TARGET_SN
    args.spectra = True  # the demo draws the spectrum panel
    _run_fit(args, datasets.demo_cube_path(), datasets.demo_templates_dir(), output,
             args.lsf or datasets.demo_lsf_path())
    maps = read_maps(output)  # with the spectra, which went from the journal to the file a chunk at a time
    plot_maps(maps, outdir / "maps.png")
    plot_spectrum_fit(maps, outdir / "spectrum.png")
    v, s = maps.maps["V"], maps.maps["SIGMA"]
    # joint_map's values are not single spectra's: their S/N floor does not apply (cube3d.flags)
    good = flags_in_use(maps.maps["FLAG"], maps.meta.get("gp_tier")) == 0
    fitted = f"{int((maps.maps['BINID'] >= 0).sum())} spaxels in {int(maps.maps['BINID'].max()) + 1} bins"
    if args.gp:
        fitted = (f"{int((maps.maps['BINID'] >= 0).sum())} spaxels fitted one by one, then a GP spatial prior "
                  f"({maps.meta.get('gp_tier')}, {maps.meta.get('gp_kernel')}); GP maps")
    values = (f"median V = {np.nanmedian(v[good]):.0f} km/s, median sigma = {np.nanmedian(s[good]):.0f} km/s "
              f"(relative to z = {args.redshift})" if good.any() else "no spaxel has FLAG 0 (see the FLAG map)")
    print(f"cube3d demo: {fitted}; {values}; wrote {output}, {outdir / 'maps.png'}, {outdir / 'spectrum.png'}")


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success (and for ``--help``, ``--version``), 2 for a user error (one line on
    standard error, no traceback), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    quiet = bool(getattr(args, "quiet", False))
    with warnings.catch_warnings(), _terminate_on_sigterm():
        # every warning reaches _show_warning, which prints each distinct message once per
        # command (Python's per-location registry would hide a repeat across runs in one process)
        warnings.simplefilter("always")
        warnings.showwarning = functools.partial(_show_warning, quiet=quiet, seen=set())
        return _dispatch(args)


class Terminated(BaseException):
    """SIGTERM received: unwinds like Ctrl-C, so temporary files are removed."""


@contextlib.contextmanager
def _terminate_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(message, category, filename, lineno, file=None, line=None, *, quiet=False, seen=None):
    """Python warnings as one plain line, ``cube3d: warning: ...`` (no source path or code),
    each distinct message once (``seen`` holds those printed).

    With ``--quiet`` only :class:`cube3d.errors.ResultWarning` (the results are affected:
    see the FLAG map) is printed.
    """
    if quiet and not issubclass(category, ResultWarning):
        return
    text = " ".join(str(message).split())
    if seen is not None:
        if text in seen:
            return
        seen.add(text)
    print(f"cube3d: warning: {text}", file=sys.stderr)


def _dispatch(args):
    """Run the parsed command; user errors become one line and status 2."""
    try:
        if args.command in ("fit", "demo", "dynamics"):
            from .compile_cache import enable_compile_cache

            enable_compile_cache()  # programs compiled by earlier runs are loaded, not compiled again
        if args.command == "fit":
            if not Path(args.cube).exists():
                raise InputError(f"cube file {args.cube} not found")
            _run_fit(args, args.cube, args.templates, args.output, args.lsf)
        elif args.command == "plot":
            _cmd_plot(args)
        elif args.command == "demo":
            _cmd_demo(args)
        elif args.command == "dynamics":
            from .dynamics_cli import run_dynamics

            return run_dynamics(args)
    except InputError as exc:
        print(f"cube3d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cube3d: interrupted; no output written{_kept(args)}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"cube3d: terminated; no output written{_kept(args)}", file=sys.stderr)
        return 143
    return 0


def _kept(args):
    """Where an interrupted fit's finished chunks are, for its last line ('' when none are)."""
    if args.command not in ("fit", "demo"):
        return ""
    from .journal import journal_path_for

    journal = journal_path_for(args.output if args.command == "fit" else Path(args.outdir) / "maps.fits")
    return f"; the finished chunks are kept in {journal}: the same command resumes" if journal.is_dir() else ""


if __name__ == "__main__":
    sys.exit(main())
