"""Spatial Gaussian-process priors on the kinematic fields of a cube.

Per-spaxel fits (:mod:`cube3d.fit`) treat every spectrum alone; here the moment fields
V(x, y), ln sigma(x, y), h3, h4... get GP priors over the sky plane (Matern-3/2,
Matern-5/2, squared exponential, sums), with inferred amplitudes, length scales and
means (constant, or a rotating disk for V), so that low-S/N spaxels borrow strength from
their neighbours.  Three tiers share one API (:func:`run_gp`):

- ``two_step``: per-spaxel Gaussian posteriors + GP (:mod:`.twostep`),
- ``joint_map``: all spectra and the GP prior optimised together (:mod:`.joint`),
- ``nuts``: numpyro NUTS over fields and hyperparameters (:mod:`.nuts`).

Solvers: dense tinygp (exact, small N), Hilbert-space reduced rank (:mod:`.hsgp`,
memory ~ N) and Kronecker algebra for separable kernels (:mod:`.kronecker`).
"""

from .config import GPConfig, validate_gp_config
from .kernels import KernelSpec, parse_kernel
from .twostep import GPField, GPResult, gp_two_step
from .apply import gp_maps, run_gp, spaxel_estimates

__all__ = ["GPConfig", "validate_gp_config", "KernelSpec", "parse_kernel", "GPField", "GPResult", "gp_two_step",
           "run_gp", "gp_maps", "spaxel_estimates"]
