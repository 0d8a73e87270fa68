"""Air <-> vacuum wavelength conversion (IAU standard, Morton 2000 eq. 8 after Ciddor 1996)."""

import numpy as np

__all__ = ["air_to_vacuum", "vacuum_to_air"]


def _refractive_index_vac(wave_vac):
    """Refractive index of standard air at vacuum wavelength ``wave_vac`` (Angstrom).

    Morton 2000, ApJS 130, 403, eq. 8 (the IAU standard, from Ciddor 1996,
    Appl. Opt. 35, 1566): with s = 10^4 / lambda_vac [micron^-1],
    n - 1 = 8.34254e-5 + 2.406147e-2 / (130 - s^2) + 1.5998e-4 / (38.9 - s^2).
    """
    s2 = (1.0e4 / wave_vac) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


_IAU_VACUUM_LIMIT = 2000.0  # Angstrom: shorter wavelengths are quoted in vacuum (IAU)


def vacuum_to_air(wave):
    """Convert vacuum wavelengths to air (standard air, 15 C, 101325 Pa).

    Parameters
    ----------
    wave : array_like
        Vacuum wavelengths in Angstrom.

    Returns
    -------
    ndarray
        Air wavelengths in Angstrom, ``lambda_vac / n(lambda_vac)``; wavelengths below
        2000 A are returned unchanged (IAU convention: they are quoted in vacuum).

    References
    ----------
    Morton, D. C. 2000, ApJS 130, 403, eq. 8 (IAU standard, after Ciddor 1996).

    Examples
    --------
    >>> round(float(vacuum_to_air(5891.583)), 3)  # Na I D2
    5889.951
    """
    w = np.asarray(wave, dtype=np.float64)
    out = np.where(w >= _IAU_VACUUM_LIMIT, w / _refractive_index_vac(np.maximum(w, 1.0)), w)
    return out[()] if out.ndim == 0 else out


def air_to_vacuum(wave):
    """Convert air wavelengths to vacuum, the exact inverse of :func:`vacuum_to_air`.

    Solves ``lambda_air = lambda_vac / n(lambda_vac)`` (Morton 2000 eq. 8) by fixed-point
    iteration ``lambda_vac <- lambda_air * n(lambda_vac)``; since
    ``|d ln n / d ln lambda| < 1e-5`` in the optical, four iterations reach double precision.

    Parameters
    ----------
    wave : array_like
        Air wavelengths in Angstrom.

    Returns
    -------
    ndarray
        Vacuum wavelengths in Angstrom; air wavelengths below ``vacuum_to_air(2000 A)``
        are returned unchanged (IAU convention).

    References
    ----------
    Morton, D. C. 2000, ApJS 130, 403, eq. 8; Ciddor, P. E. 1996, Appl. Opt. 35, 1566.

    Examples
    --------
    >>> round(float(air_to_vacuum(5889.951)), 3)  # Na I D2
    5891.583
    """
    w = np.asarray(wave, dtype=np.float64)
    limit = _IAU_VACUUM_LIMIT / _refractive_index_vac(_IAU_VACUUM_LIMIT)
    use = w >= limit
    safe = np.where(use, w, _IAU_VACUUM_LIMIT)
    vac = safe * _refractive_index_vac(safe)
    for _ in range(4):
        vac = safe * _refractive_index_vac(vac)
    out = np.where(use, vac, w)
    return out[()] if out.ndim == 0 else out
