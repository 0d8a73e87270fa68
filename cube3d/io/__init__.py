"""Read IFU datacubes (MUSE, SDSS-MaNGA LOGCUBE, generic 3-D FITS) into one container.

This is the only package of the fitting path that reads FITS files and WCS: it turns a
file into a :class:`Cube` of plain float64 NumPy arrays (flux, inverse variance,
wavelengths) plus the celestial WCS and header kept for provenance.  Masked, flagged or
non-finite pixels become zero inverse variance, and the flux is set to 0 wherever the
weight is 0, so ``flux`` never holds NaN.

Conventions
-----------
* Arrays are in FITS axis order, ``(n_wave, ny, nx)``; wavelengths increase along
  axis 0 (a cube stored with decreasing wavelength is flipped on reading).
* ``wave`` is in Angstrom, exactly as the file defines it: air wavelengths when the
  spectral WCS says ``AWAV`` (``air=True``), vacuum otherwise (``WAVE``, ``WAVE-LOG``,
  frequency or energy axes).  Convert with :func:`air_to_vacuum` / :func:`vacuum_to_air`.
* Without a noise HDU (``STAT``, ``IVAR``, ...) each spaxel gets one constant inverse
  variance from the DER_SNR noise of its own spectrum (Stoehr et al. 2008,
  :func:`cube3d.io.noise.der_snr_noise`), with a warning naming the file and the missing HDU.
* The cube must have a celestial WCS on its two spatial axes (the maps are written with it)
  and a non-degenerate spectral WCS (non-zero finite step, positive strictly monotonic
  wavelengths).

Layouts
-------
``MUSE``
    ``DATA`` (flux), ``STAT`` (variance), ``DQ`` (data quality; any non-zero value gives
    zero weight), air wavelengths (``CTYPE3 = 'AWAV'``).
``MANGA``
    SDSS-MaNGA DRP LOGCUBE: ``FLUX``, ``IVAR``, ``MASK`` (``MANGA_DRP3PIXMASK``), ``WAVE``
    (vacuum Angstrom, the spectral WCS is ``WAVE-LOG``) and the spectral resolution
    extensions ``LSFPRE``/``PREDISP``/``LSFPOST``/``DISP`` (per-spaxel 1-sigma LSF in
    Angstrom) or ``PRESPECRES``/``SPECRES`` (median resolution R = lambda / FWHM).
``GENERIC``
    One 3-D image HDU with a spectral WCS and an optional noise HDU: ``STAT``, ``VAR``,
    ``VARIANCE`` (variance), ``IVAR`` (inverse variance) or ``ERR``, ``ERROR``,
    ``SIGMA``, ``NOISE`` (1-sigma error).

A cube too large for memory is opened with :func:`open_cube` instead: headers checked
the same way, spectra read a block of spaxels at a time (:class:`CubeSource`).

Modules: :mod:`.reader` (:func:`read_cube`), :mod:`.source` (:func:`open_cube`), :mod:`.container` (:class:`Cube`),
:mod:`.spectral` (wavelengths from the WCS), :mod:`.manga` (bitmask, LSF),
:mod:`.airvac` (air/vacuum), :mod:`.noise` (DER_SNR), :mod:`.fitsutil` (HDU helpers).

References
----------
Greisen, E. W. et al. 2006, A&A 446, 747 (FITS WCS paper III: spectral axes, ``WAVE-LOG``).
Law, D. R. et al. 2016, AJ 152, 83; Law et al. 2021, AJ 161, 52 (MaNGA DRP data model,
pixel mask and line-spread function).
Stoehr, F. et al. 2008, ADASS XVII, ASP Conf. Ser. 394, 505 (DER_SNR noise estimate).
Weilbacher, P. M. et al. 2020, A&A 641, A28 (MUSE pipeline: DATA/STAT/DQ cubes).
"""

from .airvac import air_to_vacuum, vacuum_to_air
from .container import Cube
from .manga import MANGA_BAD_BITS
from .reader import LAYOUTS, read_cube
from .source import CubeSource, open_cube

__all__ = ["Cube", "CubeSource", "read_cube", "open_cube", "air_to_vacuum", "vacuum_to_air", "LAYOUTS",
           "MANGA_BAD_BITS"]
