"""Wall time and peak memory of the whole real MUSE minicube, FITS cube in to FITS maps out.

Fits every spaxel of ../shared/data/cubes/muse_abell478_minicube.fits (40 x 40 = 1600
spaxels, no binning) with :func:`cube3d.pipeline.run_fit` and writes the maps with
:func:`cube3d.maps.write_maps`, once per chunk size, each in a *fresh* Python process so
that the times include importing JAX and compiling the fit.  Printed per run: wall time
of each stage (import, read cube, load templates, prepare, first chunk = compile + fit,
remaining chunks, write maps), the total, and the peak resident memory
(``resource.getrusage``) after preparation, after the first chunk (which includes the
XLA compilation) and at the end: the growth during the fit is set by the chunk size
(and the compiler), not by the number of spaxels.

With ``--cli`` the command line itself (``cube3d fit CUBE --templates DIR -z Z -o MAPS``,
this checkout, a fresh process) is timed first; with ``--ppxf N`` the same spectra, as
:func:`cube3d.prepare.prepare_cube` makes them (the command's streamed preparation gives
the same spectra to the last bit), are fitted by ppxf in a serial loop, N of them evenly
spaced over the cube, side by side in the same run: ppxf's time per spectrum, its time for
the whole cube (per-spectrum time x spectra fitted), the ratios, and how far the
command's maps are from ppxf in units of ppxf's errors.

Usage::

    python tests/benchmarks/bench_minicube.py                      # chunk sizes 16 and 256
    python tests/benchmarks/bench_minicube.py --chunk-sizes 8 32 128 --moments 2
    python tests/benchmarks/bench_minicube.py --templates ../shared/data/templates/mileshc_v2 \
        --cli --ppxf 100 --chunk-sizes                             # issue 12: all 63 MILES-HC

Targets: issue 2, under 60 s including compilation on a 2-core CPU; issue 12, all 63
MILES-HC templates through the command line in under 30 s including compilation and at
least 20 times faster than the ppxf loop on the same spectra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # measure the cube3d of this checkout, not another installed one
CUBE = REPO.parent / "shared" / "data" / "cubes" / "muse_abell478_minicube.fits"
TEMPLATES = REPO / "data" / "templates"  # the demo's 8 MILES-HC stars
REDSHIFT = 0.0857  # Abell 478 BCG (cluster 0.0881 minus ~650 km/s), so the line masks sit on its lines


def _peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(args):
    """One run in this process; prints one JSON line with the timings."""
    import numpy as np

    from cube3d.maps import write_maps
    from cube3d import FitConfig, PrepareConfig
    from cube3d.pipeline import run_fit

    t_import = time.perf_counter()
    marks = {}
    rss = {}

    def log(msg):
        word = msg.split()[0]
        marks[word] = time.perf_counter()
        rss[word] = _peak_rss_mib()

    chunk_times, chunk_rss = [], []

    def progress(done, total):
        chunk_times.append(time.perf_counter())
        chunk_rss.append(_peak_rss_mib())

    run = run_fit(
        args.cube, args.templates, args.redshift,
        PrepareConfig(wave_range=tuple(args.wave_range) if args.wave_range else None, n_basis=args.n_basis),
        FitConfig(moments=args.moments, chunk_size=args.chunk_size),
        keep_spectra=False, log=log, progress=progress,
    )
    maps, prepared, result = run.maps, run.prepared, run.result
    t_fit = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_maps(maps, os.path.join(tmp, "maps.fits"))
        t_write = time.perf_counter()
    ok = result.ok
    out = {
        "chunk_size": args.chunk_size,
        "n_spec": int(prepared.n_spec),
        "n_pix": int(prepared.n_pix),
        "n_templates": int(prepared.templates.shape[0]),
        "velscale": float(prepared.velscale),
        "n_ok": int(ok.sum()),
        "median_V": float(np.nanmedian(result.params[ok, 0])),
        "median_SIGMA": float(np.nanmedian(result.params[ok, 1])),
        "import": t_import - T_START,
        "read": marks["read"] - t_import,
        "templates": marks["loaded"] - marks["read"],
        "prepare": marks["prepared"] - marks["loaded"],
        "first_chunk": chunk_times[1] - chunk_times[0],
        "other_chunks": chunk_times[-1] - chunk_times[1],
        "n_chunks": len(chunk_times) - 1,
        "write": t_write - t_fit,
        "total": t_write - T_START,
        "rss_prepared_mib": rss["prepared"],
        "rss_first_chunk_mib": chunk_rss[1],
        "rss_peak_mib": _peak_rss_mib(),
    }
    print("RESULT " + json.dumps(out))


def _timed_run(cmd, args, env=None):
    """Run ``cmd`` (with the options ``--wave-range`` / ``--n-basis`` of ``args``) in a fresh
    process, with ``env`` added to the environment: ``(CompletedProcess, wall seconds)``."""
    if args.wave_range:
        cmd = cmd + ["--wave-range", *map(str, args.wave_range)]
    if args.n_basis:
        cmd = cmd + ["--n-basis", str(args.n_basis)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return proc, time.perf_counter() - t0


def run_cli(args):
    """Time ``cube3d fit`` (this checkout) on the cube in a fresh process; returns the
    wall time and the maps (V, SIGMA, H3, H4 and errors, FLAG)."""
    import numpy as np
    from astropy.io import fits

    tmp = tempfile.mkdtemp()
    out = os.path.join(tmp, "maps.fits")
    cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); from cube3d.cli import main; "
           "raise SystemExit(main(sys.argv[1:]))", "fit", args.cube, "--templates", args.templates,
           "-z", str(args.redshift), "-o", out, "--moments", str(args.moments), "--quiet"]
    # the first run compiles (an empty compile cache); the second loads its programs from it
    cache = {"CUBE3D_CACHE_DIR": os.path.join(tmp, "xla")}
    walls = []
    for _ in range(2):
        proc, wall = _timed_run(cmd + ["--overwrite"], args, cache)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:])
            raise SystemExit(f"cube3d fit failed (exit {proc.returncode})")
        walls.append(wall)
    wall, warm = walls
    with fits.open(out) as hdul:
        names = [h.name for h in hdul]
        maps = {h.name: np.asarray(h.data, dtype=float) for h in hdul if h.data is not None and h.data.ndim == 2}
    print(f"cube3d fit (command line, fresh process, compilation included): {wall:.1f} s; "
          f"HDUs {', '.join(n for n in names if n in maps)}")
    print(f"cube3d fit again, its programs loaded from the compile cache of the first run: {warm:.1f} s")
    return dict(wall=wall, warm=warm, maps=maps)


def compare_ppxf(args, cli):
    """ppxf on N of the spectra the command fits (same preparation, mask, templates,
    moments, additive degree 4, no multiplicative polynomial, bias 0), side by side."""
    import warnings

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from ppxf.ppxf import ppxf

    from cube3d.io import read_cube
    from cube3d.prepare import prepare_cube
    from cube3d.templates import load_templates

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_cube(read_cube(args.cube), load_templates(args.templates), args.redshift,
                            wave_range=tuple(args.wave_range) if args.wave_range else None, n_basis=args.n_basis)
    n_spec = prep.spectra.shape[0]
    idx = np.unique(np.linspace(0, n_spec - 1, min(args.ppxf, n_spec)).astype(int))
    sol, err = np.zeros((idx.size, args.moments)), np.zeros((idx.size, args.moments))
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, k in enumerate(idx):
            good = prep.ivar[k] > 0
            noise = np.where(good, 1.0 / np.sqrt(np.where(good, prep.ivar[k], 1.0)), 1.0)
            pp = ppxf(prep.templates.T, prep.spectra[k], noise, prep.velscale, start=[0.0, 150.0],
                      moments=args.moments, degree=4, mdegree=0, vsyst=-prep.template_offset * prep.velscale,
                      mask=good, bias=0, quiet=True)
            sol[i], err[i] = pp.sol[: args.moments], pp.error[: args.moments]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    per = wall / idx.size
    print(f"ppxf (serial loop, {idx.size} of the {n_spec} spectra, {prep.templates.shape[0]} templates, "
          f"{prep.spectra.shape[1]} pixels): {1e3 * per:.1f} ms per spectrum (CPU {1e3 * cpu / idx.size:.1f} ms), "
          f"{per * n_spec:.0f} s for the cube")
    if cli is None:
        return
    print(f"ratio, ppxf loop for the cube / cube3d fit command (compilation included): "
          f"{per * n_spec / cli['wall']:.1f}x; with the compile cache of an earlier run: "
          f"{per * n_spec / cli['warm']:.1f}x")
    names = ["V", "SIGMA", "H3", "H4"][: args.moments]
    if not all(n in cli["maps"] for n in names):
        return
    yx = [np.argwhere(prep.bin_id == k)[0] for k in idx]
    ours = np.array([[cli["maps"][n][y, x] for n in names] for y, x in yx])
    ours_err = np.array([[cli["maps"].get(n + "_ERR", np.full_like(cli["maps"][n], np.nan))[y, x] for n in names]
                         for y, x in yx])
    ok = np.all(np.isfinite(ours), axis=1) & np.all(np.isfinite(sol), axis=1) & np.all(err > 0, axis=1)
    d = (ours - sol)[ok] / err[ok]
    print(f"cube3d maps vs ppxf on these {int(ok.sum())} spectra, |cube3d - ppxf| / ppxf error: median "
          + "  ".join(f"{n} {np.median(np.abs(d[:, j])):.3f}" for j, n in enumerate(names))
          + "; within 0.25 error (all parameters): " + f"{int(np.sum(np.all(np.abs(d) < 0.25, axis=1)))}/{int(ok.sum())}"
          + "; median error ratio cube3d / ppxf: "
          + "  ".join(f"{n} {np.nanmedian(ours_err[ok, j] / err[ok, j]):.3f}" for j, n in enumerate(names)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk-sizes", type=int, nargs="*", default=[16, 256],
                    help="one fresh run of run_fit each (default 16 256; none: skip)")
    ap.add_argument("--cli", action="store_true", help="time `cube3d fit` of this checkout on the cube (fresh process)")
    ap.add_argument("--ppxf", type=int, default=0, metavar="N",
                    help="fit N of the same spectra with ppxf (serial loop) side by side and compare")
    ap.add_argument("--moments", type=int, default=4, help="Gauss-Hermite moments (default 4)")
    ap.add_argument("--templates", default=str(TEMPLATES), help="template directory (default: the demo's 8 MILES-HC)")
    ap.add_argument("--redshift", type=float, default=REDSHIFT)
    ap.add_argument("--wave-range", type=float, nargs=2, default=None, help="rest-frame range, A (default: all)")
    ap.add_argument("--n-basis", type=int, default=None)
    ap.add_argument("--cube", default=str(CUBE))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--chunk-size", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; cube {args.cube}; templates {args.templates}")
    cli = run_cli(args) if args.cli else None
    if args.ppxf:
        compare_ppxf(args, cli)
    rows = []
    for cs in args.chunk_sizes:
        cmd = [sys.executable, __file__, "--worker", "--chunk-size", str(cs), "--moments", str(args.moments),
               "--templates", args.templates, "--redshift", str(args.redshift), "--cube", args.cube]
        proc, wall = _timed_run(cmd, args)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(proc.stdout[-2000:], proc.stderr[-4000:])
            raise SystemExit(f"chunk size {cs}: worker failed (exit {proc.returncode})")
        r = json.loads(line[0][7:])
        r["process_wall"] = wall
        rows.append(r)
        print(f"chunk {cs:4d}: {r['n_spec']} spectra x {r['n_pix']} pixels ({r['velscale']:.1f} km/s), "
              f"{r['n_templates']} templates, moments {args.moments}, {r['n_ok']} fitted "
              f"(median V {r['median_V']:.0f}, sigma {r['median_SIGMA']:.0f} km/s)")
        print(f"   import {r['import']:.1f} s | read {r['read']:.1f} s | templates {r['templates']:.1f} s | "
              f"prepare {r['prepare']:.1f} s | first chunk (compile + fit) {r['first_chunk']:.1f} s | "
              f"other {r['n_chunks'] - 1} chunks {r['other_chunks']:.1f} s | write {r['write']:.1f} s")
        print(f"   total in process {r['total']:.1f} s (process wall {wall:.1f} s); peak RSS after prepare "
              f"{r['rss_prepared_mib']:.0f} MiB, after the first chunk (compile) {r['rss_first_chunk_mib']:.0f} MiB, "
              f"at end {r['rss_peak_mib']:.0f} MiB (fit added {r['rss_peak_mib'] - r['rss_prepared_mib']:.0f} MiB)")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
