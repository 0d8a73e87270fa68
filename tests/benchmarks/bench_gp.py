"""Wall time, peak memory and accuracy of the Gaussian-process spatial priors (cube3d.spatial).

Every case runs in a *fresh* Python process (so JAX import and XLA compilation are
included, and each peak memory is its own).  Printed per case: wall time and process CPU
time (user + system, all threads: less sensitive than the wall time to other processes
on a shared machine) of each stage, the peak resident memory of the process
(``VmHWM`` of ``/proc/self/status``, which unlike ``tracemalloc`` sees XLA's buffers)
and its growth during the measured stage (the peak is reset before it by writing ``5``
to ``/proc/self/clear_refs``), and the RMS error against the known truth.

Tier ``two_step`` (:func:`cube3d.spatial.twostep.two_step_fields`) needs no spectra: the per-spaxel
"estimates" are a smooth truth plus Gaussian noise of known error,

* V: one Matern-5/2 GP draw (amplitude ``--v-amp`` km/s, length scale ``--scale-frac``
  times the grid width), observed with error ``--v-err`` km/s in every spaxel;
* sigma: ``exp`` of a GP draw about ln(150 km/s) (amplitude ``--lnsig-amp``, same
  scale), observed log-normally, ``sigma_obs = sigma exp(e)`` with ``e ~ N(0,
  --lnsig-err**2)``, and reported error ``--lnsig-err * sigma_obs`` (so the error of
  ln sigma, which is what the tier models, is the same everywhere).

Equal errors everywhere let the Kronecker solver use its exact evidence (it falls back
to the Hilbert-space evidence otherwise).  The draws are made by spectral synthesis on a
periodic grid padded by six length scales beyond the field (white noise filtered by the
square root of the Matern-5/2 spectral density, Rasmussen & Williams 2006 eq. 4.15;
the periodic covariance differs from the Matern one by below 1e-3 of the variance at
that padding), because a dense Cholesky draw does not scale to 300 x 300.

Tier ``joint_map`` (:func:`cube3d.spatial.joint.gp_joint_map`) runs on a mock cube
(:func:`cube3d.testing.make_mock_cube`: the 8 bundled MILES-HC stars, a rotating disk
``V`` with ``v_max`` 150 km/s, ``r_turn`` = grid/6, PA 30 deg, inclination 60 deg, and a
central dispersion peak ``sigma = 100 + 80 exp(-r^2 / (2 (grid/4)^2))`` km/s, Gaussian
LOSVDs, S/N ``--snr`` per pixel over ``--wave-range``): ``prepare_cube`` (no binning),
``fit_spectra`` (2 moments), then the GP, each timed separately.

BLAS threads.  numpy, scipy and JAX's CPU Cholesky/triangular solves call the same
OpenBLAS.  On a loaded 2-core machine (other processes using both cores) its
multi-threaded Cholesky slows down by up to two orders of magnitude (measured here: a
400 x 400 Cholesky 6 ms with one thread, 1.1 s with two), and the GP stages, which are
sequences of such factorisations, with it.  ``--blas-threads 1`` sets
``OPENBLAS_NUM_THREADS`` (and the OMP/MKL equivalents) in the workers; run both ways to
see which applies to a machine.

Usage::

    python tests/benchmarks/bench_gp.py --blas-threads 1    # every case below (about 10-20 min)
    python tests/benchmarks/bench_gp.py --only two_step --hsgp-sizes 100 --kron-sizes --dense-sizes 30
    python tests/benchmarks/bench_gp.py --only joint_map --joint-sizes 30 60 100 --snr 8

Targets (issue on the spatial prior): two-step tier on 100 x 100 spaxels in under 30 s;
joint-MAP tier on a 100 x 100 cube in under 5 minutes and 4 GB, per-spaxel fit included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # measure the cube3d of this checkout, not another installed one
RESULT = "RESULT "
# threads of the BLAS/LAPACK behind numpy, scipy and JAX's CPU linear algebra
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------- measurement


def _status_mib(field):
    """``VmHWM`` (peak) or ``VmRSS`` (current) resident memory of this process, MiB."""
    with open("/proc/self/status") as fh:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
    return int(m.group(1)) / 1024.0 if m else float("nan")


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpu():
    t = os.times()
    return t.user + t.system


class Stages:
    """Wall time, CPU time and memory of consecutive stages of one run."""

    def __init__(self):
        self.rows = []
        self.t, self.c = time.perf_counter(), _cpu()

    def start(self):
        """Begin a measured stage: peak memory reset to the current RSS."""
        self.rss0 = _status_mib("VmRSS")
        self.reset = _reset_peak()
        self.hwm0 = _status_mib("VmHWM")
        self.t, self.c = time.perf_counter(), _cpu()

    def stop(self, name):
        t, c = time.perf_counter(), _cpu()
        hwm = _status_mib("VmHWM")
        base = self.rss0 if self.reset else self.hwm0
        self.rows.append({"stage": name, "wall": t - self.t, "cpu": c - self.c, "peak": hwm, "delta": hwm - base,
                          "exact_delta": self.reset})
        self.t, self.c = t, c


# ----------------------------------------------------------------------------- fields


def smooth_field(shape, scale, amp, seed, mean=0.0):
    """Matern-5/2 GP draw on a grid by spectral synthesis on a padded periodic grid.

    ``f = IDFT(sqrt(S(omega_k)) DFT(z))`` with ``z`` white noise has the periodic
    covariance ``(1 / P) sum_k S(omega_k) exp(i omega_k d)`` (``P`` grid points); ``S`` is
    the two-dimensional Matern-5/2 spectral density (Rasmussen & Williams 2006,
    eq. 4.15), rescaled so that this covariance is exactly ``amp**2`` at lag 0.

    Parameters
    ----------
    shape : (int, int)
        (ny, nx) spaxels.
    scale : float
        Length scale, spaxels.
    amp : float
        Standard deviation, units of the field.
    seed : int
    mean : float

    Returns
    -------
    ndarray (ny, nx)
    """
    import numpy as np
    import scipy.fft

    from cube3d.spatial.kernels import spectral_density

    pad = int(np.ceil(6.0 * scale))
    py, px = (scipy.fft.next_fast_len(n + pad) for n in shape)
    wy = 2 * np.pi * scipy.fft.fftfreq(py)
    wx = 2 * np.pi * scipy.fft.rfftfreq(px)
    omega2 = wy[:, None] ** 2 + wx[None, :] ** 2
    dens = np.asarray(spectral_density("matern52", omega2, scale, 2))
    # variance at lag 0 of the periodic covariance (rfft half-plane: count the mirrored columns twice)
    mult = np.full(wx.size, 2.0)
    mult[0] = 1.0
    if px % 2 == 0:
        mult[-1] = 1.0
    var0 = np.sum(dens * mult[None, :]) / (py * px)
    z = np.random.default_rng(seed).standard_normal((py, px))
    f = scipy.fft.irfft2(np.sqrt(dens / var0) * scipy.fft.rfft2(z), s=(py, px))
    return mean + amp * f[: shape[0], : shape[1]]


def _rms(a, b):
    import numpy as np

    d = np.asarray(a, float) - b
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d**2)))


def _mad(a, b):
    """Median absolute error (robust to the catastrophic single-spaxel fits that dominate an RMS)."""
    import numpy as np

    d = np.asarray(a, float) - b
    return float(np.median(np.abs(d[np.isfinite(d)])))


def _coverage(mean, std, truth):
    import numpy as np

    ok = np.isfinite(mean) & np.isfinite(std)
    return float(np.mean(np.abs(mean[ok] - truth[ok]) <= std[ok]))


# ----------------------------------------------------------------------------- workers


def worker_two_step(case):
    """Tier two_step on synthetic per-spaxel estimates; returns the record of the run."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from cube3d.spatial import GPConfig
    from cube3d.spatial.twostep import two_step_fields

    t_import = time.perf_counter() - T_START
    n = case["size"]
    shape = (n, n)
    scale = case["scale_frac"] * n
    st = Stages()
    st.start()
    v_true = smooth_field(shape, scale, case["v_amp"], case["seed"])
    s_true = np.exp(smooth_field(shape, scale, case["lnsig_amp"], case["seed"] + 1, mean=np.log(150.0)))
    rng = np.random.default_rng(case["seed"] + 2)
    v_err = np.full(shape, case["v_err"])
    v_obs = v_true + v_err * rng.standard_normal(shape)
    s_obs = s_true * np.exp(case["lnsig_err"] * rng.standard_normal(shape))
    s_err = case["lnsig_err"] * s_obs
    st.stop("data")
    config = GPConfig(solver=case["solver"], separable=case["solver"] == "kronecker",
                      max_dense=max(2500, n * n), max_basis=case["max_basis"])
    st.start()
    res = two_step_fields({"V": v_obs, "SIGMA": s_obs}, {"V": v_err, "SIGMA": s_err}, np.ones(shape, bool), config)
    for f in res.fields.values():
        np.asarray(f.mean), np.asarray(f.std)
    st.stop("gp")
    acc = {}
    for name, truth, obs in (("V", v_true, v_obs), ("SIGMA", s_true, s_obs)):
        f = res.fields[name]
        acc[name] = {"spaxel": _rms(obs, truth), "gp": _rms(f.mean, truth), "cover": _coverage(f.mean, f.std, truth),
                     "scale": float(f.hyper.scale[0]), "noise": float(f.hyper.noise_scale), "solver": f.solver}
    return {"case": case, "import_s": t_import, "stages": st.rows, "acc": acc, "true_scale": scale}


def _mock_fields(n):
    import numpy as np

    from cube3d.testing import rotating_disk_field

    v = rotating_disk_field((n, n), 150.0, n / 6.0, 30.0, 60.0)
    yy, xx = np.mgrid[:n, :n]
    r2 = ((xx - (n - 1) / 2.0) ** 2 + (yy - (n - 1) / 2.0) ** 2) / (n / 4.0) ** 2
    return v, 100.0 + 80.0 * np.exp(-0.5 * r2)


def worker_joint(case):
    """Tier joint_map on a mock cube: mock, prepare, per-spaxel fit, GP, each measured."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from cube3d.datasets import demo_templates_dir
    from cube3d.fit import FitConfig, fit_spectra
    from cube3d.testing import make_mock_cube
    from cube3d.prepare import prepare_cube
    from cube3d.spatial import GPConfig, run_gp, spaxel_estimates
    from cube3d.templates import load_templates

    t_import = time.perf_counter() - T_START
    n, z = case["size"], 0.01
    st = Stages()
    st.start()
    library = load_templates(demo_templates_dir())
    v_true, s_true = _mock_fields(n)
    cube, _ = make_mock_cube(v_true, s_true, library, snr=case["snr"], redshift=z,
                             wave_range=tuple(case["wave_range"]), key=case["seed"])
    st.stop("mock")
    st.start()
    prep = prepare_cube(cube, library, z, target_sn=None)
    del cube
    st.stop("prepare")
    fit_config = FitConfig(moments=2)
    st.start()
    fit = fit_spectra(prep, fit_config)
    st.stop("fit")
    log = []
    st.start()
    gp = run_gp(prep, fit, fit_config, GPConfig(tier="joint_map", solver=case["solver"]), log=log.append)
    st.stop("gp")
    values, errors, ok = spaxel_estimates(prep, fit, fit_config)
    two_s = next((float(m.split(" in ")[1].split()[0]) for m in log if "two-step start" in m), float("nan"))
    acc = {}
    for name, truth in (("V", v_true), ("SIGMA", s_true)):
        f = gp.fields[name]
        good = ok & np.isfinite(values[name])
        val, err, true = values[name][good], errors[name][good], truth[good]
        acc[name] = {"spaxel": _rms(val, true), "spaxel_mad": _mad(val, true),
                     "spaxel_cover": _coverage(val, err, true), "gp": _rms(f.mean, truth), "gp_mad": _mad(f.mean, truth),
                     "cover": _coverage(f.mean, f.std, truth), "solver": f.solver}
    return {"case": case, "import_s": t_import, "stages": st.rows, "acc": acc, "n_pix": int(prep.n_pix),
            "velscale": float(prep.velscale), "snr_med": float(np.nanmedian(prep.snr)), "n_ok": int(ok.sum()),
            "n_spec": int(prep.n_spec), "two_step_s": two_s, "steps": gp.diagnostics.get("gp_steps"),
            "last_step": gp.diagnostics.get("gp_last_step")}


# ----------------------------------------------------------------------------- driver


def _load():
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _revision():
    """Commit of the checkout, with a note when cube3d/ has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "cube3d"], capture_output=True,
                               text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (sha or "?") + (" + uncommitted changes in cube3d/" if dirty else "")


def run_case(case, timeout, blas_threads=None):
    """Run one case in a fresh process; the record it printed, or why there is none."""
    env = dict(os.environ)
    if blas_threads:
        for var in BLAS_VARS:
            env[var] = str(blas_threads)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return None, f"killed after {timeout} s (--timeout)", time.perf_counter() - t0
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):]), None, wall
    return None, f"exit status {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or '?'}", wall


def _stage_text(rows):
    return " | ".join(f"{r['stage']} {r['wall']:.1f} s (cpu {r['cpu']:.1f})" for r in rows)


def _mem_text(row):
    approx = "" if row["exact_delta"] else " (peak not resettable: growth over the earlier peak)"
    return f"peak RSS {row['peak']:.0f} MiB, +{row['delta']:.0f} MiB during {row['stage']}{approx}"


def report_two_step(rec, err, wall, case):
    basis = f", max_basis {case['max_basis']}" if case["solver"] == "hsgp" else ""
    head = f"two_step {case['solver']:>9} {case['size']:>4} x {case['size']:<4} ({case['size'] ** 2:>6} spaxels{basis})"
    if rec is None:
        print(f"{head}: no result, {err} [process {wall:.0f} s]")
        return
    gp = rec["stages"][-1]
    print(f"{head}: GP {gp['wall']:6.1f} s (cpu {gp['cpu']:.1f} s), {_mem_text(gp)}; "
          f"process {wall:.1f} s (import {rec['import_s']:.1f} s, data {rec['stages'][0]['wall']:.1f} s)")
    for name, a in rec["acc"].items():
        print(f"    {name:5s} rms vs truth: per-spaxel {a['spaxel']:7.3f}  GP {a['gp']:7.3f}  "
              f"(68% coverage {a['cover']:.2f}; scale {a['scale']:.1f} spaxels, truth {rec['true_scale']:.1f}; "
              f"error factor {a['noise']:.2f}; solver {a['solver']})")


def report_joint(rec, err, wall, case):
    head = f"joint_map {case['size']:>4} x {case['size']:<4} ({case['size'] ** 2:>6} spaxels)"
    if rec is None:
        print(f"{head}: no result, {err} [process {wall:.0f} s]")
        return
    by = {r["stage"]: r for r in rec["stages"]}
    print(f"{head}: {rec['n_spec']} spectra x {rec['n_pix']} pixels ({rec['velscale']:.1f} km/s), "
          f"median S/N {rec['snr_med']:.1f}, {rec['n_ok']} usable per-spaxel fits")
    print(f"    {_stage_text(rec['stages'])}; import {rec['import_s']:.1f} s, process {wall:.1f} s")
    print(f"    fit + GP {by['fit']['wall'] + by['gp']['wall']:.1f} s (GP: two-step start {rec['two_step_s']:.1f} s, "
          f"{rec['steps']} Gauss-Newton steps, last change {rec['last_step']:.3f} sigma)")
    top = max(rec["stages"], key=lambda r: r["peak"])
    print(f"    fit: {_mem_text(by['fit'])}; GP: {_mem_text(by['gp'])}; "
          f"process peak {top['peak']:.0f} MiB (during {top['stage']})")
    for name, a in rec["acc"].items():
        print(f"    {name:5s} error vs truth (km/s), rms / median |error| / 68% coverage: per-spaxel (usable fits) "
              f"{a['spaxel']:.1f} / {a['spaxel_mad']:.1f} / {a['spaxel_cover']:.2f}; GP joint (all spaxels) "
              f"{a['gp']:.1f} / {a['gp_mad']:.1f} / {a['cover']:.2f} (solver {a['solver']})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("two_step", "joint_map"), help="run one tier only")
    p.add_argument("--hsgp-sizes", type=int, nargs="*", default=[100, 300], help="grid widths, hsgp solver")
    p.add_argument("--kron-sizes", type=int, nargs="*", default=[100], help="grid widths, kronecker solver")
    p.add_argument("--max-basis", type=int, nargs="+", default=[36],
                   help="GPConfig.max_basis values to run the hsgp cases with (36 is the default)")
    p.add_argument("--dense-sizes", type=int, nargs="*", default=[20, 30, 40], help="grid widths, dense solver")
    p.add_argument("--joint-sizes", type=int, nargs="*", default=[100], help="mock cube widths, joint_map tier")
    p.add_argument("--joint-solver", default="auto", help="GP solver of the joint tier (default auto)")
    p.add_argument("--scale-frac", type=float, default=0.125, help="true length scale / grid width")
    p.add_argument("--v-amp", type=float, default=50.0, help="V field standard deviation, km/s")
    p.add_argument("--v-err", type=float, default=25.0, help="per-spaxel V error, km/s")
    p.add_argument("--lnsig-amp", type=float, default=0.2, help="ln sigma field standard deviation")
    p.add_argument("--lnsig-err", type=float, default=0.15, help="per-spaxel error of ln sigma")
    p.add_argument("--snr", type=float, default=8.0, help="joint tier: S/N per pixel of the mock cube")
    p.add_argument("--wave-range", type=float, nargs=2, default=(4800.0, 5250.0),
                   help="joint tier: observed range of the mock cube, Angstrom")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blas-threads", type=int,
                   help="set OPENBLAS/OMP/MKL_NUM_THREADS in the workers (default: inherit the environment)")
    p.add_argument("--timeout", type=int, default=1200, help="seconds before a case is killed")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        rec = worker_two_step(case) if case["tier"] == "two_step" else worker_joint(case)
        print(RESULT + json.dumps(rec), flush=True)
        return
    import jax

    print(f"machine: {os.cpu_count()} CPUs, load average {_load()}; jax {jax.__version__} on "
          f"{jax.default_backend()}; cube3d at {_revision()}; one fresh process per case (import and "
          "compilation included)")
    blas = {v: os.environ.get(v) for v in BLAS_VARS if os.environ.get(v)}
    print("BLAS threads: " + (f"{args.blas_threads} (set for the workers)" if args.blas_threads else
                              (", ".join(f"{k}={v}" for k, v in blas.items()) or "library default (all cores)")))
    common = {"scale_frac": args.scale_frac, "v_amp": args.v_amp, "v_err": args.v_err, "lnsig_amp": args.lnsig_amp,
              "lnsig_err": args.lnsig_err, "seed": args.seed}
    if args.only in (None, "two_step"):
        print(f"tier two_step: V ~ Matern-5/2 GP (amp {args.v_amp:g} km/s), error {args.v_err:g} km/s; "
              f"ln sigma ~ GP (amp {args.lnsig_amp:g}) about ln 150, error {args.lnsig_err:g}; "
              f"length scale {args.scale_frac:g} x width; kernel matern52, 2 fields")
        cases = ([("hsgp", n, m) for n in args.hsgp_sizes for m in args.max_basis]
                 + [("kronecker", n, 36) for n in args.kron_sizes] + [("dense", n, 36) for n in args.dense_sizes])
        for solver, n, m in cases:
            case = dict(common, tier="two_step", solver=solver, size=n, max_basis=m)
            report_two_step(*run_case(case, args.timeout, args.blas_threads), case)
            sys.stdout.flush()
    if args.only in (None, "joint_map"):
        print(f"tier joint_map: mock cube, 8 MILES-HC stars, disk V (v_max 150 km/s) and central sigma peak "
              f"(100-180 km/s), S/N {args.snr:g} per pixel, {args.wave_range[0]:g}-{args.wave_range[1]:g} A; "
              f"2 moments, kernel matern52, solver {args.joint_solver}")
        for n in args.joint_sizes:
            case = dict(common, tier="joint_map", solver=args.joint_solver, size=n, snr=args.snr,
                        wave_range=list(args.wave_range))
            report_joint(*run_case(case, args.timeout, args.blas_threads), case)
            sys.stdout.flush()
    print(f"load average now {_load()}; total {time.perf_counter() - T_START:.0f} s")


if __name__ == "__main__":
    main()
