"""Paths to the bundled demo data (a real MUSE cutout, MILES-HC templates, the MUSE LSF).

The files are kept in the repository's top-level ``data/`` folder (see ``data/README.md``
for provenance, licences and the script that cut them), which ``pyproject.toml`` maps into
the package ``cube3d.demo_data``: a wheel or ``pip install .`` copies them into
``site-packages/cube3d/demo_data/``, an editable install (``pip install -e .``) reads them
from ``data/`` itself.  They are read through :func:`importlib.resources.files`, so the demo
works wherever cube3d is installed, whatever the current directory.

The environment variable ``CUBE3D_DATA``, when set, names a folder that replaces the
bundled one (same layout: ``muse_a478_cutout.fits``, ``templates/``, ``lsf/MUSE-WFM.lsf``).
A missing file raises :class:`~cube3d.errors.InputError` naming the path looked for.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from importlib import resources
from pathlib import Path

from cube3d.errors import InputError

__all__ = ["data_dir", "demo_cube_path", "demo_templates_dir", "demo_lsf_path", "DEMO_REDSHIFT"]

#: redshift of the Abell 478 BCG used for the demo: the galaxy's own, from its stellar
#: absorption lines (ppxf and cube3d agree on V = -670 +- 40 km/s relative to the
#: cluster's catalogue z = 0.0881, i.e. z = 0.0857).  With 0.0881 the galaxy sits at
#: about -650 km/s and the emission-line masks miss its gas lines.
DEMO_REDSHIFT = 0.0857
CLUSTER_REDSHIFT = 0.0881

#: the package that holds the demo data (the top-level ``data/`` folder of the source tree)
DATA_PACKAGE = "cube3d.demo_data"
CUBE_NAME = "muse_a478_cutout.fits"
TEMPLATES_NAME = "templates"
LSF_NAME = "lsf/MUSE-WFM.lsf"

# keeps files extracted by importlib.resources.as_file (zipped installs only) until exit
_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


def data_dir():
    """Return the folder holding the demo data.

    Returns
    -------
    pathlib.Path
        ``$CUBE3D_DATA`` when set, else the folder of the installed package
        ``cube3d.demo_data`` (``data/`` of the source tree in an editable install).

    Raises
    ------
    cube3d.errors.InputError
        When the folder does not exist or the package is not installed.
    """
    env = os.environ.get("CUBE3D_DATA")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise InputError(f"{path}: demo data folder (from CUBE3D_DATA) not found")
        return path
    return _package_data_dir()


def _package_data_dir():
    try:
        root = resources.files(DATA_PACKAGE)
    except ModuleNotFoundError:
        raise InputError(
            f"{DATA_PACKAGE}: demo data package not installed (reinstall cube3d, e.g. pip install -e ., "
            "or set CUBE3D_DATA)"
        ) from None
    if isinstance(root, Path):  # a regular install: the data are plain files
        return root
    try:  # a zipped install: extract (directories need Python >= 3.12)
        return _EXTRACTED.enter_context(resources.as_file(root))
    except (TypeError, NotImplementedError, OSError) as exc:
        raise InputError(f"{DATA_PACKAGE}: demo data are not plain files ({exc}); set CUBE3D_DATA") from None


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
