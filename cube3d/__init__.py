"""cube3d: 3D modelling of integral-field spectroscopy of galaxies with JAX.

The names a user needs are available from the package itself; they mirror the
command line (``cube3d fit``)::

    import cube3d
    run = cube3d.run_fit("cube.fits", "templates_dir/", redshift=0.0881,
                         prepare=cube3d.PrepareConfig(target_sn=20), fit=cube3d.FitConfig(moments=2))
    cube3d.write_maps(run.maps, "maps.fits")

Step by step: :func:`read_cube` -> :func:`load_templates` -> :func:`prepare_cube` ->
:func:`fit_spectra` -> :func:`cube3d.pipeline.result_to_maps` -> :func:`write_maps`;
with a spatial prior, :func:`run_gp` and :class:`GPConfig` (:mod:`cube3d.spatial`).
Names are imported on first use, so ``import cube3d`` (and ``cube3d --help``) does not
load JAX.
"""

from importlib import import_module

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "read_cube": "cube3d.io",
    "Cube": "cube3d.io",
    "load_templates": "cube3d.templates",
    "PrepareConfig": "cube3d.prepare",
    "PreparedData": "cube3d.prepare",
    "prepare_cube": "cube3d.prepare",
    "FitConfig": "cube3d.fit",
    "FitInput": "cube3d.fit",
    "FitResult": "cube3d.fit",
    "fit_spectra": "cube3d.fit",
    "FitRun": "cube3d.pipeline",
    "run_fit": "cube3d.pipeline",
    "KinematicMaps": "cube3d.maps",
    "write_maps": "cube3d.maps",
    "read_maps": "cube3d.maps",
    "GPConfig": "cube3d.spatial",
    "run_gp": "cube3d.spatial",
    "InputError": "cube3d.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    """Import a public name from its module on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cube3d' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
