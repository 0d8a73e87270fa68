"""Paths to the bundled demo data (a real MUSE cutout, MILES-HC templates, the MUSE LSF).

The files live in the repository's top-level ``data/`` folder (see ``data/README.md``
for provenance, licences and the script that cut them).  They are found, in order:

1. in the folder named by the environment variable ``CUBE3D_DATA``, if set;
2. in ``data/`` next to the ``cube3d`` package (a source checkout or an editable install);
3. in ``data/`` of the current directory (a regular install run from the repository root).

A missing file raises :class:`~cube3d.errors.InputError` naming the path looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from cube3d.errors import InputError

__all__ = ["data_dir", "demo_cube_path", "demo_templates_dir", "demo_lsf_path", "DEMO_REDSHIFT"]

#: redshift of the Abell 478 BCG used for the demo: the galaxy's own, from its stellar
#: absorption lines (ppxf and cube3d agree on V = -670 +- 40 km/s relative to the
#: cluster's catalogue z = 0.0881, i.e. z = 0.0857).  With 0.0881 the galaxy sits at
#: about -650 km/s and the emission-line masks miss its gas lines.
DEMO_REDSHIFT = 0.0857
CLUSTER_REDSHIFT = 0.0881

CUBE_NAME = "muse_a478_cutout.fits"
TEMPLATES_NAME = "templates"
LSF_NAME = "lsf/MUSE-WFM.lsf"


def data_dir():
    """Return the folder holding the demo data.

    Returns
    -------
    pathlib.Path
        ``$CUBE3D_DATA`` when set, else ``data/`` beside the ``cube3d`` package, else
        ``./data`` when it holds the demo cube.

    Raises
    ------
    cube3d.errors.InputError
        When no such folder exists.
    """
    env = os.environ.get("CUBE3D_DATA")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise InputError(f"{path}: demo data folder (from CUBE3D_DATA) not found")
        return path
    path = _package_data_dir()
    if path.is_dir():
        return path
    here = Path.cwd() / "data"
    if (here / CUBE_NAME).is_file():
        return here
    raise InputError(
        f"{path}: demo data folder not found (use a source checkout, run from the repository root "
        "or set CUBE3D_DATA)"
    )


def _package_data_dir():
    return Path(__file__).resolve().parent.parent / "data"


def _existing(path, kind):
    if (kind == "dir" and not path.is_dir()) or (kind == "file" and not path.is_file()):
        raise InputError(f"{path}: demo data missing (run data/make_demo_data.py)")
    return path


def demo_cube_path():
    """Path of the MUSE cutout of the Abell 478 BCG (20 x 20 spaxels x 681 pixels).

    Examples
    --------
    >>> from astropy.io import fits
    >>> fits.getdata(demo_cube_path(), "DATA").shape  # doctest: +SKIP
    (681, 20, 20)
    """
    return _existing(data_dir() / CUBE_NAME, "file")


def demo_templates_dir():
    """Folder of the 8 bundled MILES-HC templates (rest frame 4499.9-6000.2 A, FWHM 2.5 A)."""
    return _existing(data_dir() / TEMPLATES_NAME, "dir")


def demo_lsf_path():
    """Path of the MUSE WFM line-spread function table (wavelength, FWHM, both Angstrom)."""
    return _existing(data_dir() / LSF_NAME, "file")
