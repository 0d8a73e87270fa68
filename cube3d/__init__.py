"""cube3d: 3D modelling of integral-field spectroscopy of galaxies with JAX.

The public API mirrors the command line: read a cube (:func:`cube3d.io.read_cube`),
load templates (:func:`cube3d.templates.load_templates`), prepare the spectra
(:func:`cube3d.prepare.prepare_cube`), fit them (:func:`cube3d.fit.fit_spectra`) and
write the maps (:func:`cube3d.maps.write_maps`).  :func:`cube3d.pipeline.run_fit`
does all of it in one call.
"""

__version__ = "0.1.0"
