"""Convergence checks for MCMC results: split R-hat and effective sample size against limits.

A sampler whose chains disagree (split R-hat well above 1) or whose draws are strongly
correlated (few effective samples) gives posteriors that must not be reported. Every
NUTS entry point of the package passes its diagnostics through
:func:`warn_if_not_converged`, which issues one :class:`ConvergenceWarning` naming the
offending parameters; command-line tools turn that into exit status 3.

The default limits follow Vehtari et al. (2021): R-hat below 1.01 and at least 100
effective draws (their bulk-ESS guideline of 100 per chain is stricter for many chains;
100 in total is the floor below which quantiles are not worth printing).

References
----------
Gelman A. & Rubin D. B. 1992, Stat. Sci. 7, 457 (R-hat).
Vehtari A., Gelman A., Simpson D., Carpenter B. & Buerkner P.-C. 2021, Bayesian Anal. 16, 667
(split R-hat < 1.01, ESS thresholds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = ["ConvergenceWarning", "convergence_problems", "warn_if_not_converged"]

_R_HAT_MAX = 1.01  # Vehtari et al. 2021, section 4
_ESS_MIN = 100


class ConvergenceWarning(UserWarning):
    """An MCMC run did not meet the R-hat or effective-sample-size limits."""


def _worst(value, largest):
    """The worst element of a scalar or array diagnostic (NaN if any element is not finite)."""
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size == 0:
        return math.nan
    if not np.all(np.isfinite(arr)):
        return math.nan
    return float(arr.max() if largest else arr.min())


def _above(value, limit):
    """``value`` printed with just enough decimals to show that it exceeds ``limit``."""
    for digits in range(2, 7):
        text = f"{value:.{digits}f}"
        if float(text) > limit:
            return text
    return f"{value:.6g}"


def _offences(r_hat, ess, r_hat_max, ess_min):
    """``[(name, criterion, text), ...]`` for every parameter and criterion that fails."""
    if not r_hat_max >= 1.0:
        raise ValueError(f"r_hat_max must be >= 1, got {r_hat_max}")
    if not ess_min >= 0.0:
        raise ValueError(f"ess_min must be >= 0, got {ess_min}")
    for arg, label in ((r_hat, "r_hat"), (ess, "ess")):
        if not isinstance(arg, Mapping):
            raise ValueError(f"{label} must be a mapping name -> value, got {type(arg).__name__}")
    found = []
    for name, value in r_hat.items():
        worst = _worst(value, largest=True)
        if math.isnan(worst):
            found.append((name, "R-hat", "R-hat is not finite"))
        elif worst > r_hat_max:
            found.append((name, "R-hat", f"R-hat {_above(worst, r_hat_max)} > {r_hat_max:g}"))
    for name, value in ess.items():
        worst = _worst(value, largest=False)
        if math.isnan(worst):
            found.append((name, "ESS", "ESS is not finite"))
        elif worst < ess_min:
            found.append((name, "ESS", f"ESS {math.floor(worst)} < {ess_min:g}"))
    return found


def convergence_problems(r_hat, ess, *, r_hat_max=_R_HAT_MAX, ess_min=_ESS_MIN):
    """One short message per parameter whose R-hat or effective sample size fails its limit.

    Parameters
    ----------
    r_hat : mapping
        ``name -> split R-hat``, a float or an array (the largest element counts).
    ess : mapping
        ``name -> effective sample size`` (numpyro's ``n_eff``), a float or an array
        (the smallest element counts).
    r_hat_max : float
        Largest acceptable R-hat (>= 1).
    ess_min : float
        Smallest acceptable effective sample size (>= 0).

    Returns
    -------
    list of str
        ``"name: R-hat 1.57 > 1.01"``, ``"name: ESS 12 < 100"`` or both joined by a comma,
        in the order the names first appear (``r_hat`` first); empty when every parameter
        passes. A non-finite diagnostic (e.g. a chain that never moved) always fails.

    Examples
    --------
    >>> convergence_problems({"a": 1.002, "b": 1.57}, {"a": 812.0, "b": 12.4})
    ['b: R-hat 1.57 > 1.01, ESS 12 < 100']
    """
    by_name = {}
    for name, _, text in _offences(r_hat, ess, r_hat_max, ess_min):
        by_name.setdefault(name, []).append(text)
    return [f"{name}: {', '.join(texts)}" for name, texts in by_name.items()]


def warn_if_not_converged(r_hat, ess, *, what="NUTS", **limits):
    """Issue one :class:`ConvergenceWarning` naming every offending parameter, if any.

    Parameters
    ----------
    r_hat, ess : mapping
        As in :func:`convergence_problems`.
    what : str
        The sampler or fit named at the start of the message.
    **limits
        ``r_hat_max`` and ``ess_min``, passed to :func:`convergence_problems`.

    Returns
    -------
    list of str
        :func:`convergence_problems`' messages (empty when converged, and then nothing
        is warned).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     problems = warn_if_not_converged({"log10_m_ref": 1.57}, {"f_fg": 12.0})
    >>> str(caught[0].message)
    'NUTS did not converge: R-hat 1.57 > 1.01 for log10_m_ref; ESS 12 < 100 for f_fg; results are unreliable'
    """
    problems = convergence_problems(r_hat, ess, **limits)
    if problems:
        offences = _offences(r_hat, ess, limits.get("r_hat_max", _R_HAT_MAX),
                             limits.get("ess_min", _ESS_MIN))
        parts = [f"{text} for {name}" for name, _, text in offences]
        warnings.warn(f"{what} did not converge: {'; '.join(parts)}; results are unreliable",
                      ConvergenceWarning, stacklevel=2)
    return problems
