"""Settings of the spatial Gaussian-process stage (:class:`GPConfig`)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..errors import InputError
from .kernels import parse_kernel
from .means import MEAN_FUNCTIONS
from .solvers import SOLVER_CLASSES

__all__ = ["GPConfig", "TIERS", "SOLVERS", "MEANS", "HYPER_INTEGRATIONS", "validate_gp_config"]

#: tier names; :data:`cube3d.spatial.apply.TIER_FUNCTIONS` maps each to its function
TIERS = ("two_step", "joint_map", "nuts")
SOLVERS = ("auto",) + tuple(SOLVER_CLASSES)
MEANS = tuple(MEAN_FUNCTIONS)
#: ``GPConfig.hyper_integration`` choices
HYPER_INTEGRATIONS = ("ccd", "none")


class GPConfig(NamedTuple):
    """How the kinematic fields are modelled on the sky.

    Parameters
    ----------
    kernel : str
        A registered kernel (:data:`cube3d.spatial.kernels.KERNELS`: ``"matern32"``,
        ``"matern52"``, ``"expsquared"``) or a sum such as ``"matern52+expsquared"``
        (each term with its own amplitude and length scale).
    separable : bool
        Products of one-dimensional correlations along y and x (required by the
        Kronecker solver) instead of functions of the Euclidean distance.
    tier : str
        ``"two_step"`` (per-spaxel Gaussian posteriors + GP, seconds), ``"joint_map"``
        (spectra and GP prior optimised together, template weights profiled out) or
        ``"nuts"`` (numpyro NUTS over fields and hyperparameters; small grids).
    solver : str
        ``"dense"`` (exact, tinygp, up to ``max_dense`` spaxels), ``"hsgp"``
        (Hilbert-space reduced rank; memory ~ N), ``"kronecker"`` (exact separable
        kernel on the grid; conjugate gradients), or ``"auto"`` (dense for at most
        ``max_dense`` observed spaxels, else hsgp).
    v_mean : str
        Mean of the velocity field: ``"constant"`` or ``"disk"`` (arctan rotation curve).
    scale_range : (float, float) or None
        Prior range of the length scales in spaxels (log-uniform); default from two
        spaxels (or what the Hilbert basis resolves) to twice the field's size.
    boundary_factor : float
        Hilbert-space box half-width in units of the grid half-width (> 1).
    max_basis : int
        Most Hilbert-space basis functions per axis (sets the smallest length scale
        the hsgp solver accepts).
    max_dense : int
        Most observed spaxels for the dense solver (its memory grows like N^2).
    fields : tuple of str or None
        Which fitted parameters get a GP prior (default: all kinematic moments).
    min_sn : float
        Spaxels below this S/N are treated as unobserved by the two-step tier.
    noise_scale_range : (float, float) or None
        Two-step tier: prior range of a factor on the per-spaxel errors, inferred with
        the other hyperparameters (Laplace errors at low S/N are approximate); None
        takes the errors as given.  The joint tier uses the spectra's own noise.
    clip : float or None
        Two-step tier: spaxels whose estimate lies more than ``clip`` standard
        deviations (error and posterior combined) from the GP prediction are
        refitted as unobserved, once (catastrophic per-spaxel fits).
    hyper_integration : str
        Two-step and joint-MAP tiers: ``"ccd"`` mixes the field's posterior over the
        hyperparameters' posterior (a central composite design about their mode, as
        INLA; :mod:`cube3d.spatial.integrate`), so that the errors include what the data
        leave unknown about amplitudes, length scales, error factor and mean;
        ``"none"`` plugs in the mode (type-II MAP), which is overconfident when an
        amplitude is poorly constrained.
    v_likelihood_grid : int
        Joint-MAP tier: the V data behind the reported errors are the mean and variance
        of each spectrum's profiled likelihood ``exp(-chi^2 / 2)`` on this many points
        across the joint mode +- 4 Laplace errors (other parameters at the mode), so a
        likelihood that is wider, skewed or two-humped at low S/N counts as such;
        0 uses the quadratic (Laplace) approximation at the mode instead
        (:mod:`cube3d.spatial.joint`).
    n_outer : int
        Outer iterations of the joint-MAP tier (hyperparameter updates).
    n_inner : int
        Gauss-Newton steps of the fields per outer iteration (joint-MAP tier).
    num_warmup, num_samples, num_chains : int
        NUTS settings.
    seed : int
        Random seed (NUTS, posterior samples).
    """

    kernel: str = "matern52"
    separable: bool = False
    tier: str = "two_step"
    solver: str = "auto"
    v_mean: str = "constant"
    scale_range: Optional[tuple] = None
    boundary_factor: float = 1.5
    max_basis: int = 36
    max_dense: int = 2500
    fields: Optional[tuple] = None
    min_sn: float = 0.0
    noise_scale_range: Optional[tuple] = (0.5, 5.0)
    clip: Optional[float] = 5.0
    hyper_integration: str = "ccd"
    v_likelihood_grid: int = 17
    n_outer: int = 3
    n_inner: int = 4
    num_warmup: int = 300
    num_samples: int = 300
    num_chains: int = 1
    seed: int = 0


def validate_gp_config(config: GPConfig):
    """Reject bad settings with a message naming the parameter; returns the KernelSpec."""
    if not isinstance(config, GPConfig):
        raise InputError(f"gp config: expected a GPConfig, got {type(config).__name__}")
    spec = parse_kernel(config.kernel, config.separable)
    if config.tier not in TIERS:
        raise InputError(f"gp tier {config.tier!r}: use one of {', '.join(TIERS)}")
    if config.solver not in SOLVERS:
        raise InputError(f"gp solver {config.solver!r}: use one of {', '.join(SOLVERS)}")
    if config.hyper_integration not in HYPER_INTEGRATIONS:
        raise InputError(f"gp hyper_integration {config.hyper_integration!r}: "
                         f"use one of {', '.join(HYPER_INTEGRATIONS)}")
    if config.v_mean not in MEANS:
        raise InputError(f"gp v_mean {config.v_mean!r}: use one of {', '.join(MEANS)}")
    if config.scale_range is not None:
        lo, hi = (float(v) for v in config.scale_range)
        if not (0 < lo < hi):
            raise InputError(f"gp scale_range={config.scale_range}: need 0 < min < max (spaxels)")
    if not (np.isfinite(config.min_sn) and config.min_sn >= 0):
        raise InputError(f"gp min_sn={config.min_sn}: must be a finite number >= 0")
    if config.noise_scale_range is not None:
        lo, hi = (float(v) for v in config.noise_scale_range)
        if not (0 < lo <= 1 <= hi):
            raise InputError(f"gp noise_scale_range={config.noise_scale_range}: need 0 < min <= 1 <= max")
    if config.clip is not None and not (np.isfinite(config.clip) and config.clip > 0):
        raise InputError(f"gp clip={config.clip}: must be a positive number of standard deviations or None")
    if not config.boundary_factor > 1.0:
        raise InputError(f"gp boundary_factor={config.boundary_factor}: must exceed 1")
    for name in ("max_basis", "max_dense", "n_outer", "n_inner", "num_warmup", "num_samples", "num_chains"):
        v = getattr(config, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"gp {name}={v!r}: must be a positive integer")
    v = config.v_likelihood_grid
    if not isinstance(v, int) or isinstance(v, bool) or not (v == 0 or v >= 5):
        raise InputError(f"gp v_likelihood_grid={v!r}: must be 0 (Laplace) or an integer >= 5")
    if config.tier == "nuts" and config.v_mean != "constant":
        raise InputError("gp tier 'nuts' supports v_mean='constant' only; use tier 'two_step' or 'joint_map' for a disk mean")
    if config.solver == "kronecker" and (not config.separable or spec.n_terms != 1):
        raise InputError("gp solver 'kronecker' needs a single separable kernel term "
                         "(separable=True, no sums); use solver='hsgp' or 'dense' for isotropic kernels or sums")
    return spec
