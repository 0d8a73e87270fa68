"""Spatial Gaussian-process priors on the kinematic fields of a cube.

Per-spaxel fits (:mod:`cube3d.fit`) treat every spectrum alone; here the moment fields
V(x, y), ln sigma(x, y), h3, h4... get GP priors over the sky plane (Matern-3/2,
Matern-5/2, squared exponential, sums), with inferred amplitudes, length scales and
means (constant, or a rotating disk for V), so that low-S/N spaxels borrow strength from
their neighbours.  Three tiers share one signature
``tier(prepared, fit_result, fit_config, gp_config, log=None) -> GPResult``, dispatched by
:func:`run_gp`:

- ``two_step``: per-spaxel Gaussian posteriors + GP (:func:`gp_two_step`, :mod:`.twostep`),
- ``joint_map``: all spectra and the GP prior optimised together (:func:`gp_joint_map`),
- ``nuts``: numpyro NUTS over fields and hyperparameters (:func:`gp_nuts`).

The two-step and NUTS tiers also run on per-spaxel maps directly
(:func:`.twostep.two_step_fields`, :func:`.nuts.nuts_fields`).

Kernels: one :class:`~.kernels.KernelKind` object per kind of term (correlation, spectral
density, tinygp counterpart), registered in :data:`~.kernels.KERNELS`.  Solvers: subclasses
of :class:`~.solvers.Solver` (log evidence, posterior): dense tinygp (exact, small N),
Hilbert-space reduced rank (:mod:`.hsgp`, memory ~ N) and Kronecker algebra for separable
kernels (:mod:`.kronecker`).
"""

from .config import GPConfig, validate_gp_config
from .kernels import KERNELS, KernelKind, KernelSpec, parse_kernel
from .solvers import Solver, make_solver
from .estimates import SpaxelEstimates, spaxel_estimates
from .twostep import GPField, GPResult, gp_two_step
from .joint import gp_joint_map
from .nuts import gp_nuts
from .apply import TIER_FUNCTIONS, gp_maps, run_gp

__all__ = ["GPConfig", "validate_gp_config", "KERNELS", "KernelKind", "KernelSpec", "parse_kernel", "Solver",
           "make_solver", "SpaxelEstimates", "spaxel_estimates", "GPField", "GPResult", "gp_two_step", "gp_joint_map",
           "gp_nuts", "TIER_FUNCTIONS", "run_gp", "gp_maps"]
