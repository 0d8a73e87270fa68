"""Emission-, interstellar- and sky-line masks on a rest-frame ln-lambda grid.

The default lists are air wavelengths (Angstrom); they are converted to vacuum for a
vacuum grid with :func:`cube3d.io.air_to_vacuum`.
"""

from __future__ import annotations

import numpy as np

from .constants import C_KMS

__all__ = ["EMISSION_LINES_AIR", "SKY_LINES_AIR", "emission_line_mask"]

#: Galaxy-frame emission (and interstellar) lines masked by default, air wavelengths
#: in Angstrom (NIST / SDSS line lists; NaD is interstellar absorption).
EMISSION_LINES_AIR = {
    "[OII]3726": 3726.03,
    "[OII]3729": 3728.82,
    "[NeIII]3869": 3868.76,
    "Hepsilon": 3970.07,
    "Hdelta": 4101.74,
    "Hgamma": 4340.47,
    "Hbeta": 4861.33,
    "[OIII]4959": 4958.92,
    "[OIII]5007": 5006.84,
    "[NI]5198": 5197.90,
    "[NI]5200": 5200.26,
    "HeI5876": 5875.62,
    "NaD5890": 5889.95,
    "NaD5896": 5895.92,
    "[OI]6300": 6300.30,
    "[OI]6364": 6363.78,
    "[NII]6548": 6548.05,
    "Halpha": 6562.80,
    "[NII]6583": 6583.45,
    "[SII]6716": 6716.44,
    "[SII]6731": 6730.82,
}

#: Night-sky emission and Galactic NaD absorption, observed-frame air wavelengths (Angstrom).
SKY_LINES_AIR = {
    "sky[OI]5577": 5577.34,
    "NaD5890": 5889.95,
    "NaD5896": 5895.92,
    "sky[OI]6300": 6300.30,
    "sky[OI]6364": 6363.78,
}

def emission_line_mask(
    ln_wave: np.ndarray,
    redshift: float,
    width_kms: float = 800.0,
    *,
    air: bool = True,
    lines: dict | None = None,
    sky_lines: dict | None = None,
) -> np.ndarray:
    """Pixels within +-width/2 of emission lines (galaxy frame) and sky lines.

    Parameters
    ----------
    ln_wave : ndarray, shape (n_pix,)
        ln(rest-frame wavelength / Angstrom) of the pixel centres.
    redshift : float
        Galaxy redshift; observed-frame sky lines appear at ``lambda / (1 + z)``.
    width_kms : float
        Full width of each masked window, km/s.
    air : bool
        Convention of ``ln_wave``; the air line lists are converted to vacuum
        when False.
    lines, sky_lines : dict, optional
        Name -> air wavelength (Angstrom); defaults :data:`EMISSION_LINES_AIR`
        and :data:`SKY_LINES_AIR`.  Pass ``{}`` to skip either set.

    Returns
    -------
    ndarray of bool, shape (n_pix,)
        True where masked.
    """
    lines = EMISSION_LINES_AIR if lines is None else lines
    sky_lines = SKY_LINES_AIR if sky_lines is None else sky_lines
    rest = np.array(list(lines.values()), dtype=np.float64)
    sky = np.array(list(sky_lines.values()), dtype=np.float64)
    centres = np.concatenate([rest, sky / (1.0 + redshift)])
    if centres.size == 0 or width_kms <= 0:
        return np.zeros(np.shape(ln_wave), dtype=bool)
    if not air:
        from .io import air_to_vacuum  # the conversions live with the reader

        centres = np.concatenate(
            [air_to_vacuum(rest), air_to_vacuum(sky) / (1.0 + redshift)]
        )
    half = 0.5 * width_kms / C_KMS
    dist = np.abs(np.asarray(ln_wave)[:, None] - np.log(centres)[None, :])
    return np.any(dist <= half, axis=1)
