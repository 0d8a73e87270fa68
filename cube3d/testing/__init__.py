"""Mock data with known kinematics, for testing fits and spatial priors.

Three pieces:

* :func:`gp_field` draws a smooth random map from a Gaussian process with one of the
  kernels of :mod:`cube3d.spatial.kernels` (the same covariance the spatial priors use);
* :func:`rotating_disk_field` is a thin-disk arctan rotation field (Courteau 1997);
* :func:`make_mock_cube` turns maps of V, sigma (and optionally h3, h4) into a
  :class:`cube3d.io.Cube` built from real stellar templates, with Gaussian noise of
  exactly the variance its ``ivar`` says; :func:`write_mock_cube` saves it as a
  MUSE-like FITS file (``DATA``/``STAT``/``DQ``) for the command line.

Modules: :mod:`.fields` (the maps), :mod:`.mockcube` (the cube and its FITS file),
:mod:`._spectra` (the convolution behind the cube), :mod:`._checks` (argument checks
and the random source).

Conventions
-----------
* Randomness is explicit: every random function takes ``key``, a non-negative integer
  seed, a ``numpy.random.Generator`` or a JAX PRNG key.  The same integer seed always
  gives the same numbers (``numpy.random.default_rng(seed)``).
* Maps are ``(ny, nx)`` arrays: numpy axis 0 is the sky y (rows, FITS axis 2, North
  up), axis 1 is x (columns, FITS axis 1).  The mock WCS has North along +y and East
  along -x (``CD1_1 < 0``), 0.2 arcsec spaxels, as MUSE WFM.
* Velocities are km/s, relative to the cube's ``redshift`` in the ln(lambda) sense
  used by the fitter (Cappellari 2017, MNRAS 466, 798, Sec. 2): a spaxel with
  velocity ``v`` has its rest-frame spectrum shifted by ``ln(1 + z) + v / c`` in
  ln(lambda).
* What "truth" means: the observed spectrum of a spaxel is the template mix, taken
  as the piecewise-constant flux density per Angstrom of its pixels (as
  :mod:`cube3d.rebin` takes every spectrum), convolved in ln(lambda) with the LOSVD
  (the fitter's model, like ppxf's: the per-Angstrom density is shifted without
  the ``1 + v/c`` Jacobian), redshifted by ``1 + z`` and averaged over the cube's
  linear wavelength pixels.  So V, sigma, h3, h4 are exactly the parameters that
  :func:`cube3d.fit.fit_spectra` estimates.  The spectra keep the templates'
  resolution (FWHM 2.51 Angstrom for MILES; Falcon-Barroso et al. 2011), times
  ``1 + z`` in the observed frame, unless a broader ``lsf_fwhm`` is asked for.

Examples
--------
>>> from cube3d.testing import gp_field, rotating_disk_field
>>> v = rotating_disk_field((16, 16), 150.0, 3.0, 30.0, 60.0) + gp_field((16, 16), 4.0, 10.0, key=0)
>>> v.shape
(16, 16)
"""

from .fields import gp_field, rotating_disk_field
from .mockcube import FLUX_UNIT, make_mock_cube, write_mock_cube

__all__ = ["FLUX_UNIT", "gp_field", "make_mock_cube", "rotating_disk_field", "write_mock_cube"]
