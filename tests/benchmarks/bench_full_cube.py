"""Peak memory and wall time of ``cube3d fit`` on a full-size MUSE cube made here.

Makes an N x N x 3681 MUSE-format cube (``DATA``, ``STAT``, ``DQ``, the minicube's headers)
by tiling the real 40 x 40 minicube (../shared/data/cubes/muse_abell478_minicube.fits) and
adding fresh Gaussian noise of its own variance to every tile (so ``STAT`` is doubled and
no two tiles are alike), written plane by plane so that making it needs little memory.
Then runs ``cube3d fit`` on the real minicube and on each made cube, each in a fresh
process (so import and compilation are included), and prints the wall time, the peak
resident memory (``ru_maxrss`` of that process: it counts every page it touched, file
pages included) and its ratio to the minicube's.

Usage::

    python tests/benchmarks/bench_full_cube.py                       # 40 (the real one) and 300
    python tests/benchmarks/bench_full_cube.py --sizes 40 120 --moments 2
    python tests/benchmarks/bench_full_cube.py --sizes 120 --repo /path/to/other/checkout  # before/after

Goal (issue 12): the full 300 x 300 cube under 3 GB peak and within 30% of the minicube's.
Disk: a made cube takes 9 bytes per voxel (3.0 GB at 300 x 300), kept in ``--workdir``
for the next run unless ``--clean``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MINICUBE = REPO.parent / "shared" / "data" / "cubes" / "muse_abell478_minicube.fits"
TEMPLATES = REPO / "data" / "templates"  # the demo's 8 MILES-HC stars
REDSHIFT = 0.0857  # Abell 478 BCG


def make_cube(path: Path, size: int, source: Path = MINICUBE, seed: int = 12) -> Path:
    """Write a ``size`` x ``size`` MUSE-format cube tiled from ``source`` with fresh noise.

    Every tile of ``DATA`` is the source's flux plus Gaussian noise of the source's
    variance (``STAT``), so ``STAT`` is written doubled; ``DQ`` is tiled.  Headers are the
    source's with the new ``NAXIS1``/``NAXIS2``.  One wavelength plane at a time.
    """
    import numpy as np
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".writing")
    with fits.open(source, memmap=True) as src, open(tmp, "wb") as out:
        out.write(src[0].header.tostring().encode("ascii"))
        n_wave, sy, sx = src["DATA"].shape
        reps = (int(np.ceil(size / sy)), int(np.ceil(size / sx)))
        for name in ("DATA", "STAT", "DQ"):
            header = src[name].header.copy()
            header["NAXIS1"], header["NAXIS2"] = size, size
            out.write(header.tostring().encode("ascii"))
            dtype = np.dtype(src[name].data.dtype).newbyteorder(">")
            n_bytes = 0
            for k in range(n_wave):
                plane = np.tile(np.asarray(src[name].data[k], dtype=np.float64), reps)[:size, :size]
                if name == "DATA":
                    var = np.tile(np.asarray(src["STAT"].data[k], dtype=np.float64), reps)[:size, :size]
                    plane = plane + rng.normal(0.0, 1.0, plane.shape) * np.sqrt(np.where(var > 0, var, 0.0))
                elif name == "STAT":
                    plane = 2.0 * plane
                data = plane.astype(dtype)
                out.write(data.tobytes())
                n_bytes += data.nbytes
            out.write(b"\0" * ((-n_bytes) % 2880))
    os.replace(tmp, path)
    return path


def worker(argv):
    """Run ``cube3d fit argv`` in this process; print its status, wall time and peak RSS."""
    t0 = time.perf_counter()
    from cube3d.cli import main

    code = main(argv)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print("RESULT " + json.dumps({"code": code, "wall_s": wall, "peak_rss_mib": rss}))


def run_fit(cube: Path, out: Path, args) -> dict:
    argv = ["fit", str(cube), "--templates", str(args.templates), "--redshift", str(args.redshift), "-o", str(out),
            "--moments", str(args.moments), "--chunk-size", str(args.chunk_size), "--quiet", "--overwrite"]
    if args.n_basis:
        argv += ["--n-basis", str(args.n_basis)]
    if args.chunk_spectra:
        argv += ["--chunk-spectra", str(args.chunk_spectra)]
    env = dict(os.environ, PYTHONPATH=str(args.repo), JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], capture_output=True, text=True, env=env,
                          cwd=args.repo)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        print(proc.stdout[-2000:], proc.stderr[-4000:])
        raise SystemExit(f"{cube}: the fit failed (exit {proc.returncode})")
    result = json.loads(line[0][7:])
    result["process_wall_s"] = time.perf_counter() - t0
    if result["code"] != 0:
        raise SystemExit(f"{cube}: cube3d fit exited with {result['code']}: {proc.stderr[-2000:]}")
    return result


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(REPO)))
        worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[40, 300],
                    help="cube sizes in spaxels per side; 40 is the real minicube (default 40 300)")
    ap.add_argument("--moments", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--templates", type=Path, default=TEMPLATES, help="default: the demo's 8 MILES-HC stars")
    ap.add_argument("--n-basis", type=int, default=None, help="keep this many templates (cube3d fit --n-basis)")
    ap.add_argument("--chunk-spectra", type=int, default=None, help="cube3d fit --chunk-spectra (default its own)")
    ap.add_argument("--redshift", type=float, default=REDSHIFT)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cube3d_bench_full_cube"))
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose cube3d runs (default: this one)")
    ap.add_argument("--clean", action="store_true", help="remove the made cubes afterwards")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; cube3d from {args.repo}; "
          f"templates {args.templates} (n_basis {args.n_basis}), moments {args.moments}, chunk size {args.chunk_size}"
          + (f", chunk spectra {args.chunk_spectra}" if args.chunk_spectra else ""))
    base = None
    for size in args.sizes:
        if size == 40:
            cube = MINICUBE
        else:
            cube = args.workdir / f"muse_tiled_{size}x{size}.fits"
            if not cube.exists():
                t0 = time.perf_counter()
                make_cube(cube, size)
                print(f"made {cube} ({cube.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        r = run_fit(cube, args.workdir / f"maps_{size}.fits", args)
        base = r["peak_rss_mib"] if size == 40 else base
        ratio = f", {r['peak_rss_mib'] / base:.2f} x the minicube's" if base and size != 40 else ""
        print(f"{size:4d} x {size:<4d} ({size * size:6d} spaxels): wall {r['wall_s']:7.1f} s, "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB{ratio}   [load {os.getloadavg()[0]:.1f}]", flush=True)
        if args.clean and cube != MINICUBE:
            cube.unlink()


if __name__ == "__main__":
    main()
