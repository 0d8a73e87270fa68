#!/usr/bin/env python
"""Cut the bundled demo data of cube3d out of the real data in ../shared/data.

Run from anywhere:  python data/make_demo_data.py [--shared PATH] [--out PATH]

Makes, in data/ (see data/README.md for provenance and licences; pyproject.toml installs this
folder as the package ``cube3d.demo_data``, which is where ``cube3d.datasets`` reads it):

* ``muse_a478_cutout.fits``: a 20 x 20 spaxel x 681 pixel cutout (observed
  5149.9-5999.9 A) of the MUSE cube of the Abell 478 BCG, centred on the brightest
  spaxel of the smoothed continuum image, with the MUSE layout kept
  (empty primary with the original header, DATA / STAT / DQ, AWAV), float32, the WCS
  re-referenced through astropy's WCS slicing, checksums recomputed;
* ``templates/MILESHC_NN.fits``: 8 MILES-HC stellar templates chosen by a non-negative
  least-squares fit to the stacked cutout spectrum (filled up from every 8th template),
  truncated to rest-frame 4499.9-6000.2 A, with their linear WCS updated;
* ``lsf/MUSE-WFM.lsf``: the MUSE WFM line-spread function table, copied.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.optimize import nnls

HERE = Path(__file__).resolve().parent
C_KMS = 299792.458
REDSHIFT = 0.0881
CUBE_NAME = "cubes/muse_abell478_minicube.fits"
TEMPLATE_DIR = "templates/mileshc_v2"
LSF_NAME = "lsf/MUSE-WFM.lsf"
SIZE = 20  # spaxels per side
WAVE_RANGE = (5150.0, 6000.0)  # observed, Angstrom (rest ~4733-5514 A at z = 0.0881)
TEMPLATE_RANGE = (4500.0, 6000.0)  # rest frame, Angstrom
N_TEMPLATES = 8
# rest-frame emission lines (Hbeta, [OIII], [NI]) and the observed 5577 A sky line, Angstrom
REST_MASK = [(4851.0, 4871.0), (4949.0, 4969.0), (4997.0, 5017.0), (5190.0, 5210.0)]
OBS_MASK = [(5567.0, 5587.0)]


def cut_cube(shared, out):
    """Cut the MUSE cube; return (stacked spectrum, its observed wavelengths, slices)."""
    src = shared / CUBE_NAME
    with fits.open(src) as hdul:
        data = hdul["DATA"].data
        hdr = hdul["DATA"].header
        wcs = WCS(hdr)
        n_wave = data.shape[0]
        crval3, cd33, crpix3 = hdr["CRVAL3"], hdr["CD3_3"], hdr["CRPIX3"]
        lam = crval3 + cd33 * (np.arange(n_wave) + 1 - crpix3)
        k0 = int(np.searchsorted(lam, WAVE_RANGE[0] - cd33 / 2))
        k1 = int(np.searchsorted(lam, WAVE_RANGE[1] + cd33 / 2))
        # centre: brightest spaxel of the smoothed median continuum image
        img = np.nanmedian(data[k0:k1], axis=0)
        smooth = gaussian_filter(np.nan_to_num(img), 2.0)
        yc, xc = np.unravel_index(np.argmax(smooth), smooth.shape)
        ny, nx = img.shape
        y0 = int(np.clip(yc - SIZE // 2, 0, ny - SIZE))
        x0 = int(np.clip(xc - SIZE // 2, 0, nx - SIZE))
        sl = (slice(k0, k1), slice(y0, y0 + SIZE), slice(x0, x0 + SIZE))
        sub = wcs.slice(sl)  # astropy shifts CRPIX for the cutout

        primary = fits.PrimaryHDU(header=hdul[0].header.copy())
        primary.header["HISTORY"] = f"cube3d data/make_demo_data.py: cutout of {Path(CUBE_NAME).name}"
        primary.header["HISTORY"] = (
            f"0-based, end-exclusive: x {x0}:{x0 + SIZE}, y {y0}:{y0 + SIZE}, wave {k0}:{k1}"
        )
        primary.header["HISTORY"] = f"observed {lam[k0]:.4f}-{lam[k1 - 1]:.4f} A; float32"
        hdus = [primary]
        for name in ("DATA", "STAT", "DQ"):
            h = hdul[name].header.copy()
            for key in ("CHECKSUM", "DATASUM"):
                h.remove(key, ignore_missing=True)
            if "CRPIX1" in h:
                h["CRPIX1"] = sub.wcs.crpix[0]
                h["CRPIX2"] = sub.wcs.crpix[1]
                # re-reference the spectral axis to the first pixel (same linear axis)
                h["CRVAL3"] = crval3 + cd33 * (k0 + 1 - crpix3)
                h["CRPIX3"] = 1.0
            arr = hdul[name].data[sl]
            arr = arr.astype(np.uint8 if name == "DQ" else np.float32)
            hdus.append(fits.ImageHDU(data=arr, header=h, name=name))
        cut = fits.HDUList(hdus)
        cut.writeto(out / "muse_a478_cutout.fits", overwrite=True, checksum=True)

        flux = cut["DATA"].data.astype(np.float64)
        good = np.isfinite(flux) & (cut["DQ"].data == 0)
        stack = np.where(good, flux, 0.0).sum(axis=(1, 2)) / np.maximum(good.sum(axis=(1, 2)), 1)
    return stack, lam[k0:k1], sl


def _continuum_normalise(y, x, mask, degree=4):
    """Divide by an iteratively (3-sigma) clipped Legendre continuum fit over mask."""
    t = 2 * (x - x[0]) / (x[-1] - x[0]) - 1
    use = mask.copy()
    for _ in range(5):
        coef = np.polynomial.legendre.legfit(t[use], y[use], degree)
        cont = np.polynomial.legendre.legval(t, coef)
        r = y / cont - 1
        s = np.std(r[use])
        use = mask & (r > -3 * s) & (r < 3 * s)
    return y / cont


def choose_templates(shared, stack, lam_obs):
    """Pick N_TEMPLATES MILES-HC spectra by NNLS on the stacked spectrum.

    The stacked spectrum and every template are moved to one ln-lambda rest-frame grid,
    continuum-normalised, the templates broadened by a Gaussian of sigma 280 km/s and
    shifted over a grid of velocities; the velocity with the lowest NNLS residual wins,
    and the templates with the largest weights are kept, filled up from every 8th.
    """
    files = sorted((shared / TEMPLATE_DIR).glob("MILESHC_*.fits"))
    velscale = 40.0  # km/s
    lam_rest = lam_obs / (1 + REDSHIFT)
    ln = np.arange(np.log(lam_rest[0]) + 0.01, np.log(lam_rest[-1]) - 0.01, velscale / C_KMS)
    gal = np.interp(np.exp(ln), lam_rest, stack)
    mask = np.ones(ln.size, bool)
    for a, b in REST_MASK:
        mask &= ~((np.exp(ln) > a) & (np.exp(ln) < b))
    for a, b in OBS_MASK:
        mask &= ~((np.exp(ln) * (1 + REDSHIFT) > a) & (np.exp(ln) * (1 + REDSHIFT) < b))
    gal = _continuum_normalise(gal, ln, mask)

    temps, tlam = [], None
    for f in files:
        with fits.open(f) as h:
            hd = h[0].header
            tlam = hd["CRVAL1"] + hd["CDELT1"] * (np.arange(hd["NAXIS1"]) + 1 - hd["CRPIX1"])
            temps.append(h[0].data.astype(np.float64))
    temps = np.array(temps)
    # broaden on a fine ln-lambda grid, then sample
    fine = np.arange(np.log(4400.0), np.log(6100.0), 10.0 / C_KMS)
    tfine = np.array([gaussian_filter1d(np.interp(np.exp(fine), tlam, t), 280.0 / 10.0) for t in temps])

    best = None
    for v in np.arange(-1500.0, 1501.0, 30.0):
        shifted = np.array([np.interp(ln - v / C_KMS, fine, t) for t in tfine])
        normed = np.array([_continuum_normalise(t, ln, mask) for t in shifted])
        a = np.vstack([normed, np.ones_like(ln)]).T[mask]
        w, rnorm = nnls(a, gal[mask])
        if best is None or rnorm < best[0]:
            best = (rnorm, v, w[:-1])
    rnorm, v, w = best
    order = [int(i) for i in np.argsort(w)[::-1] if w[i] > 0][:N_TEMPLATES]
    for i in range(0, len(files), 8):
        if len(order) >= N_TEMPLATES:
            break
        if i not in order:
            order.append(i)
    print(f"NNLS on stacked spectrum: best v = {v:+.0f} km/s, weights > 0 for "
          f"{[files[i].name for i in np.flatnonzero(w > 0)]}")
    return [files[i] for i in sorted(order)]


def cut_templates(files, out):
    tdir = out / "templates"
    if tdir.exists():
        shutil.rmtree(tdir)
    tdir.mkdir()
    for f in files:
        with fits.open(f) as h:
            hd = h[0].header
            lam = hd["CRVAL1"] + hd["CDELT1"] * (np.arange(hd["NAXIS1"]) + 1 - hd["CRPIX1"])
            i0 = int(np.searchsorted(lam, TEMPLATE_RANGE[0]) - 1)
            i1 = int(np.searchsorted(lam, TEMPLATE_RANGE[1]) + 1)
            hdus = []
            for hdu in h:
                hh = hdu.header.copy()
                if "CRVAL1" in hh:
                    hh["CRVAL1"] = float(lam[i0])
                    hh["CRPIX1"] = 1.0
                if isinstance(hdu, fits.PrimaryHDU):
                    hh["HISTORY"] = (
                        f"cube3d data/make_demo_data.py: pixels {i0}:{i1} (0-based), "
                        f"{lam[i0]:.1f}-{lam[i1 - 1]:.1f} A"
                    )
                    hdus.append(fits.PrimaryHDU(data=hdu.data[i0:i1], header=hh))
                else:
                    hdus.append(fits.ImageHDU(data=hdu.data[i0:i1], header=hh, name=hdu.name))
            fits.HDUList(hdus).writeto(tdir / f.name, overwrite=True)
    print(f"templates {[f.name for f in files]}: pixels {i0}:{i1}, {lam[i0]:.1f}-{lam[i1 - 1]:.1f} A")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data",
                   help="the shared data folder (default ../shared/data next to the repository)")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: this data/ folder)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stack, lam, sl = cut_cube(args.shared, args.out)
    print(f"cube cutout: wave {sl[0]}, y {sl[1]}, x {sl[2]}; observed {lam[0]:.4f}-{lam[-1]:.4f} A")
    cut_templates(choose_templates(args.shared, stack, lam), args.out)
    (args.out / "lsf").mkdir(exist_ok=True)
    shutil.copyfile(args.shared / LSF_NAME, args.out / "lsf" / Path(LSF_NAME).name)


if __name__ == "__main__":
    main()
