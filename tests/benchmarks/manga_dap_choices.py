"""Which of cube3d's choices move sigma away from the MaNGA DAP's, by how much, and what chi^2 says.

The five high-S/N spectra of the MaNGA DAP's own kinematics test (``data/manga_dap``; see
``tests/cube3d/test_manga_dap.py``, which reproduces the DAP's numbers with the DAP's choices)
are fitted by cube3d with the DAP's choices, then with one choice at a time replaced by
cube3d's default, then with all of them:

* template rebinning: cube3d's overlap rebinning (flux constant within each 0.9 A MILES pixel)
  instead of the DAP's integral of the linear interpolation;
* resolution: templates broadened to the instrument's LSF before the fit (cube3d; FWHM 2.51 A,
  the LSF as cube3d's MaNGA reader gives it) instead of native templates and the DAP's
  quadrature correction afterwards.  The test file's ``SRES`` is the DRP's pre-pixelisation
  ``PREDISP`` (the DAP's ``data/tests/compile_test_spectra``), so the cubes written here carry
  it as ``PRESPECRES``;
* mask: cube3d's emission- and sky-line mask (``cube3d.linemask``, 800 km/s windows) instead of
  the DAP's (ELPSCMSK lines +-750 km/s, BADSKY);
* no outlier clipping (cube3d's default) instead of the DAP's running 3-sigma clip;
* additive degree 4 (cube3d's default) instead of 8;
* wavelength range: the overlap of spectrum and templates less 2000 km/s at each end (cube3d)
  instead of the DAP's (template range less its 2400 km/s alias window);
* library: the 63-template ``mileshc_v2`` set of ../shared/data instead of the DAP's 42 MILESHC;
  not a cube3d default, but what cube3d was run with when the issue was found.

For every case the table gives sigma (instrument-corrected) relative to the DAP's corrected
sigma, and ``dchi2``: the chi^2 of the DAP's (cz, sigma) minus that of cube3d's solution, both
profiled (template weights and polynomials re-solved) on the same pixels with the same
templates (:func:`cube3d.fit.local_quadratic`).  A large ``dchi2`` means the data, given that
choice, really prefer cube3d's sigma: the choice moves the minimum, the fit finds it.
Finally the whole pipeline (``cube3d.run_fit`` on one-spaxel MaNGA-format cubes, default
settings, moments 2) is run with both libraries.

Usage::

    python tests/benchmarks/manga_dap_choices.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's cube3d and its test of the DAP's choices

MANGA_BAD = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 10)  # cube3d's MaNGA bits: NOCOV DEADFIBER FORESTAR DONOTUSE
MARGIN_KMS = 2000.0  # cube3d's template margin at each end of the range


def _library(name, shared):
    """(air wavelengths, flux (n_tpl, n_pix)) of a MILES-HC library."""
    from astropy.io import fits

    from tests.cube3d.test_manga_dap import TEMPLATE_FILE

    if name == "MILESHC":
        with fits.open(TEMPLATE_FILE) as hdul:
            flux = np.asarray(hdul[0].data, float)
            h = hdul[0].header
        return h["CRVAL1"] + h["CDELT1"] * np.arange(flux.shape[1]), flux
    files = sorted((shared / "templates" / "mileshc_v2").glob("MILESHC_*.fits"))
    flux = np.array([fits.getdata(f).astype(float) for f in files])
    h = fits.getheader(files[0])
    return h["CRVAL1"] + h["CDELT1"] * np.arange(flux.shape[1]), flux


class Case:
    """The spectra, pixels and templates of one set of choices (see the module docstring)."""

    def __init__(self, spectra, lsf_fwhm, libraries, *, rebin="linear", resolution="native", mask="dap",
                 clip=True, degree=8, wave_range="dap", library="MILESHC", moments=2):
        from cube3d.constants import C_KMS
        from cube3d.io import air_to_vacuum
        from cube3d.linemask import emission_line_mask
        from tests.cube3d import test_manga_dap as dap

        self.dap = dap
        self.rebin, self.resolution, self.clip = rebin, resolution, clip
        self.moments, self.degree = moments, degree
        wave, flux, ivar, drp, self.sres, self.z = spectra
        self.wave = wave
        step = dap.STEP
        cz = self.z * C_KMS
        self.shift = np.rint(np.log1p(self.z) / step).astype(int)
        self.v_start = C_KMS * np.log1p(self.z) - self.shift * dap.VELSCALE
        t_air, t_flux = libraries[library]
        t_vac = air_to_vacuum(t_air)
        if wave_range == "dap":
            tpl = dap._dap_template_wave()
            half = 0.5 * step / dap.VELSCALE_RATIO
            tpl_lo, tpl_hi = np.log(tpl[0]) - half, np.log(tpl[-1]) + half
            ranges = np.array([dap._fitted_range(wave, c) for c in cz])
        else:  # cube3d: overlap of spectrum and templates, less the margin at each end
            tpl_lo, tpl_hi = np.log(air_to_vacuum(t_air[0] - 0.45)), np.log(air_to_vacuum(t_air[-1] + 0.45))
            n_ext = int(np.ceil(MARGIN_KMS / dap.VELSCALE - 1e-9))
            ranges = []
            for k in range(self.z.size):
                rest = np.log(wave) - np.log1p(self.z[k])
                inside = (rest - step / 2 >= tpl_lo + n_ext * step) & (rest + step / 2 <= tpl_hi - n_ext * step)
                idx = np.flatnonzero(inside)
                ranges.append((idx[0], idx[-1] + 1))
            ranges = np.array(ranges)
        self.start, self.end = ranges[:, 0], ranges[:, 1]
        lo, hi = np.min(self.start - self.shift), np.max(self.end - self.shift)
        self.rest_lo, n_pix = lo, hi - lo
        ln_edges = np.log(wave[0]) - 0.5 * step + step * np.arange(lo, hi + 1)
        ln_rest = 0.5 * (ln_edges[1:] + ln_edges[:-1])  # rest frame of exp(shift * step) - 1
        self.spectra = np.zeros((self.z.size, n_pix))
        self.ivar = np.zeros((self.z.size, n_pix))
        for k in range(self.z.size):
            obs = np.arange(self.start[k], self.end[k])
            cols = obs - self.shift[k] - lo
            if mask == "dap":
                bad = dap._pixel_mask(wave, cz[k], drp[k], ivar[k])[obs]
            else:
                z_grid = np.expm1(self.shift[k] * step)
                bad = emission_line_mask(ln_rest[cols], z_grid, 800.0, air=False)
                bad |= ((drp[k, obs] & MANGA_BAD) != 0) | ~(ivar[k, obs] > 0)
            med = np.median(flux[k, obs][~bad])
            self.spectra[k, cols] = flux[k, obs] / med
            self.ivar[k, cols] = np.where(bad, 0.0, ivar[k, obs] * med**2)
        n_blue = int(np.floor((ln_edges[0] - tpl_lo) / step))
        n_red = int(np.floor((tpl_hi - ln_edges[-1]) / step))
        self.offset = n_blue
        self.t_edges = ln_edges[0] + step * np.arange(-n_blue, n_pix + n_red + 1)
        self.t_air, self.t_vac, self.t_flux = t_air, t_vac, t_flux
        self.lsf_fwhm = lsf_fwhm
        self.templates = self._templates(t_flux) if resolution == "native" else None

    def _templates(self, t_flux):
        from cube3d.io import air_to_vacuum
        from cube3d.rebin import log_rebin

        if self.rebin == "linear":
            t = self.dap._resample_linear(self.t_vac, t_flux, np.exp(self.t_edges))
        else:
            a = self.t_air
            edges = np.concatenate([[a[0] - 0.45], 0.5 * (a[1:] + a[:-1]), [a[-1] + 0.45]])
            t = log_rebin(air_to_vacuum(edges), t_flux, ln_edges=self.t_edges).flux
        return t / np.median(t, axis=1, keepdims=True)

    def matched_templates(self, k):
        """Templates broadened to spectrum k's LSF (cube3d's default), on the rest grid."""
        from cube3d.lsf import match_resolution

        z_grid = np.expm1(self.shift[k] * self.dap.STEP)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # template broader than the LSF at the blue end
            broad = match_resolution(self.t_vac, self.t_flux, 2.51, (self.wave, self.lsf_fwhm[k]), z_grid)
        return self._templates(broad)

    def config(self):
        from cube3d.fit import FitConfig

        return FitConfig(moments=self.moments, degree=self.degree, mdegree=0, sigma_start=100.0, chunk_size=8)

    def _fit(self, ivar):
        from cube3d.fit import FitInput, fit_spectra

        if self.templates is not None:
            data = FitInput(self.spectra, ivar, self.templates, self.offset, self.dap.VELSCALE)
            return fit_spectra(data, self.config(), v_start=self.v_start)
        rows = []
        for k in range(self.z.size):
            data = FitInput(self.spectra[k:k + 1], ivar[k:k + 1], self.matched_templates(k), self.offset,
                            self.dap.VELSCALE)
            rows.append(fit_spectra(data, self.config(), v_start=self.v_start[k:k + 1]))
        fields = {f: [getattr(r, f) for r in rows] for f in rows[0]._fields}
        return type(rows[0])(**{f: v[0] if f == "param_names" else np.concatenate(v) for f, v in fields.items()})

    def run(self):
        """Fit (and clip and refit, as the DAP, when ``clip``); returns (result, final ivar)."""
        result = self._fit(self.ivar)
        if not self.clip:
            return result, self.ivar
        rejected = self.dap._clip(self.spectra - result.bestfit, self.ivar > 0)
        ivar = np.where(rejected, 0.0, self.ivar)
        return self._fit(ivar), ivar

    def corrected_sigma(self, result, ivar):
        """sigma corrected for the instrument: as fitted for LSF-matched templates, else by the
        DAP's quadrature correction (its own pixel convention)."""
        from cube3d.constants import C_KMS

        sigma = result.params[:, 1]
        if self.resolution != "native":
            return sigma
        cz = C_KMS * np.expm1(result.params[:, 0] / C_KMS + self.shift * self.dap.STEP)
        corr = np.array([self.dap._sigma_correction(self.wave, self.sres[k],
                                                    np.flatnonzero(ivar[k] > 0) + self.rest_lo + self.shift[k]
                                                    - self.start[k], cz[k]) for k in range(self.z.size)])
        return np.sqrt(sigma**2 - corr**2)

    def dchi2(self, result, ivar):
        """chi^2 at the DAP's (cz, sigma) minus chi^2 at cube3d's, profiled, same pixels and templates."""
        from cube3d.constants import C_KMS
        from cube3d.fit import FitInput, local_quadratic

        dap = self.dap
        sigma_dap = dap.DAP_KIN[:, 1] if self.resolution == "native" else \
            np.sqrt(dap.DAP_KIN[:, 1] ** 2 - dap.DAP_SIGMACORR_SRES**2)
        v_dap = C_KMS * np.log1p(dap.DAP_KIN[:, 0] / C_KMS) - self.shift * dap.VELSCALE
        kin_dap = np.zeros_like(result.params)
        kin_dap[:, 0], kin_dap[:, 1] = v_dap, sigma_dap
        out = np.empty(self.z.size)
        for k in range(self.z.size):
            tpl = self.templates if self.templates is not None else self.matched_templates(k)
            data = FitInput(np.repeat(self.spectra[k:k + 1], 2, 0), np.repeat(ivar[k:k + 1], 2, 0), tpl,
                            self.offset, dap.VELSCALE)
            chi2 = local_quadratic(data, np.stack([result.params[k], kin_dap[k]]), self.config())["chi2"]
            out[k] = chi2[1] - chi2[0]
        return out


def _pipeline(spectra, library, libraries, tmp):
    """cube3d.run_fit with its defaults (moments 2) on one-spaxel MaNGA-format cubes."""
    from astropy.io import fits

    from cube3d import FitConfig, pipeline

    wave, flux, ivar, drp, sres, z = spectra
    tdir = tmp / library
    tdir.mkdir(exist_ok=True)
    t_air, t_flux = libraries[library]
    for i, t in enumerate(t_flux):
        hdr = fits.Header({"CRVAL1": t_air[0], "CDELT1": t_air[1] - t_air[0], "CRPIX1": 1.0, "CTYPE1": "AWAV"})
        fits.PrimaryHDU(t, hdr).writeto(tdir / f"T{i:03d}.fits", overwrite=True)
    sigma = []
    for k in range(z.size):
        path = tmp / f"spec{k}.fits"
        hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                           "CRPIX1": 1.0, "CRPIX2": 1.0, "CDELT1": -1.4e-4, "CDELT2": 1.4e-4,
                           "CTYPE3": "WAVE-LOG", "CRVAL3": wave[0], "CDELT3": wave[0] * 1e-4 * np.log(10.0),
                           "CRPIX3": 1.0, "CUNIT3": "Angstrom"})
        cube = lambda a, dt: np.asarray(a[k], dt)[:, None, None]  # noqa: E731
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube(flux, np.float32), hdr, name="FLUX"),
                      fits.ImageHDU(cube(ivar, np.float32), hdr, name="IVAR"),
                      fits.ImageHDU(cube(drp, np.int32), hdr, name="MASK"), fits.ImageHDU(wave, name="WAVE"),
                      fits.ImageHDU(sres[k], name="PRESPECRES")]).writeto(path, overwrite=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = pipeline.run_fit(path, tdir, redshift=float(z[k]), fit=FitConfig(moments=2))
        sigma.append(run.result.params[0, 1])
    return np.array(sigma)


def _lsf_from_reader(spectra, tmp):
    """The instrumental FWHM (observed Angstrom) cube3d's MaNGA reader derives from each SPECRES."""
    from astropy.io import fits

    from cube3d.io import read_cube

    wave, flux, ivar, drp, sres, z = spectra
    out = []
    for k in range(z.size):
        path = tmp / f"lsf{k}.fits"
        hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                           "CRPIX1": 1.0, "CRPIX2": 1.0, "CDELT1": -1.4e-4, "CDELT2": 1.4e-4,
                           "CTYPE3": "WAVE-LOG", "CRVAL3": wave[0], "CDELT3": wave[0] * 1e-4 * np.log(10.0),
                           "CRPIX3": 1.0, "CUNIT3": "Angstrom"})
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux[k][:, None, None].astype(np.float32), hdr, name="FLUX"),
                      fits.ImageHDU(ivar[k][:, None, None].astype(np.float32), hdr, name="IVAR"),
                      fits.ImageHDU(wave, name="WAVE"), fits.ImageHDU(sres[k], name="PRESPECRES")]).writeto(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(np.asarray(read_cube(path).lsf_fwhm, float))
    return np.array(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"), help="../shared/data")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    from astropy.io import fits

    from tests.cube3d import test_manga_dap as dap

    with fits.open(dap.SPECTRA_FILE) as hdul:
        spectra = tuple(np.asarray(hdul[n].data)[dap.SPECTRA] if n != "WAVE" else np.asarray(hdul[n].data, float)
                        for n in ("WAVE", "FLUX", "IVAR", "MASK", "SRES", "Z"))
    spectra = (spectra[0], spectra[1].astype(float), spectra[2].astype(float), spectra[3],
               spectra[4].astype(float), spectra[5].astype(float))
    shared = Path(args.shared)
    libraries = {"MILESHC": _library("MILESHC", shared)}
    have_v2 = (shared / "templates" / "mileshc_v2").is_dir()
    if have_v2:
        libraries["mileshc_v2"] = _library("mileshc_v2", shared)
    dap_corrected = np.sqrt(dap.DAP_KIN[:, 1] ** 2 - dap.DAP_SIGMACORR_SRES**2)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lsf = _lsf_from_reader(spectra, tmp)
        cube3d_defaults = dict(rebin="step", resolution="matched", mask="cube3d", clip=False, degree=4,
                               wave_range="cube3d")
        cases = [
            ("DAP's choices (the test)", {}),
            ("cube3d's template rebinning", dict(rebin="step")),
            ("LSF-matched templates (+ rebinning)", dict(rebin="step", resolution="matched")),
            ("cube3d's line mask", dict(mask="cube3d")),
            ("no clipping", dict(clip=False)),
            ("additive degree 4", dict(degree=4)),
            ("cube3d's wavelength range", dict(wave_range="cube3d")),
            ("moments 4 (Gauss-Hermite sigma)", dict(moments=4)),
            ("all cube3d defaults, MILESHC", cube3d_defaults),
            ("all cube3d defaults but degree 8", dict(cube3d_defaults, degree=8)),
        ]
        if have_v2:
            cases += [("mileshc_v2 library (63)", dict(library="mileshc_v2")),
                      ("all cube3d defaults, mileshc_v2", dict(cube3d_defaults, library="mileshc_v2"))]
        print("sigma relative to the DAP's corrected sigma (%), and dchi2 = chi2(DAP's solution) - "
              "chi2(cube3d's) on the same pixels")
        print(f"{'case':38s} " + " ".join(f"{'spec ' + str(k):>17s}" for k in dap.SPECTRA))
        for name, choices in cases:
            case = Case(spectra, lsf, libraries, **choices)
            result, ivar = case.run()
            sigma = case.corrected_sigma(result, ivar)
            rel = 100 * (sigma / dap_corrected - 1)
            dchi2 = case.dchi2(result, ivar) if case.moments == 2 else np.full(rel.size, np.nan)
            rchi2 = result.chi2
            print(f"{name:38s} " + " ".join(f"{r:+5.1f}% {d:6.1f} {c:4.2f}" for r, d, c in zip(rel, dchi2, rchi2)),
                  flush=True)
        print("(columns per spectrum: sigma change, dchi2, reduced chi2 of cube3d's fit)")
        for library in libraries:
            sigma = _pipeline(spectra, library, libraries, tmp)
            print(f"{'run_fit defaults, ' + library:38s} " +
                  " ".join(f"{100 * (s / c - 1):+5.1f}% ({s:5.1f})" for s, c in zip(sigma, dap_corrected)), flush=True)


if __name__ == "__main__":
    main()
