"""XLA compile options for the large compiled programs (cube3d's per-chunk fits, the
joint model's potential).

XLA's CPU backend lowers its loop fusions with the MLIR "fusion emitters" by default; its
older elemental IR emitter, chosen with the debug option ``xla_cpu_use_fusion_emitters =
False``, compiles the same optimised HLO faster.  On this project's 2-core CPUs (jaxlib
0.10.2):

* the chunk program of ``cube3d fit`` on the real MUSE minicube (63 MILES-HC templates, 3306
  pixels) compiled in 3.8-4.8 s instead of 5.0-6.7 s, the compiled fits ran at the same
  speed, and V and sigma agreed with the default's to 4e-10 of their errors;
* the joint model's potential (value and gradient of the JAM likelihood,
  :func:`dynamics.joint_fit.fit_laplace`) of a 12 x 12 map and 100 stars compiled in
  6.4 s instead of 10.2 s, its predictions in 1.8 s instead of 3.0 s
  (``tests/benchmarks/README.md``, "Compile options" and "A different machine").

The options are passed per program (``jax.jit(..., compiler_options=...)``), so they touch
nothing else in the user's process; a program traced inside another jitted function (the
potential inside numpyro's NUTS loop) is compiled with the outer program's options.  A
jaxlib that does not know an option would reject it; :func:`supported_options` checks once
per process, by compiling a trivial program, and falls back to XLA's defaults.  The module
lives in ``dynamics`` so that both packages can use it (``cube3d`` imports ``dynamics``,
never the reverse).
"""

from __future__ import annotations

import functools
import threading

import jax
import numpy as np

__all__ = ["FAST_COMPILE", "supported_options", "compiled", "holds_tracers"]

#: debug options that make XLA compile the large programs faster on the CPU (no effect on GPU code)
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def supported_options():
    """:data:`FAST_COMPILE` if this jaxlib accepts it, else ``{}`` (checked once)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(FAST_COMPILE)).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - an unknown option (JaxRuntimeError) or an old jax without the keyword
        return {}
    return dict(FAST_COMPILE)


def holds_tracers(tree):
    """True when any leaf of ``tree`` is a JAX tracer (the call is being traced by jit, grad, vmap...)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


class _Program:
    """``jax.jit(fun, **jit_kwargs)`` with :func:`supported_options`, built at its first use
    (the check compiles, which must not happen at import).

    Called inside another traced function (an argument is a tracer, e.g. the joint
    potential inside numpyro's compiled NUTS loop), it is a plain ``jax.jit(fun,
    **jit_kwargs)``: JAX accepts compile options on top-level programs only, and the
    outer program is compiled with its own.
    """

    def __init__(self, fun, jit_kwargs):
        self._fun, self._jit_kwargs, self._jitted, self._nested = fun, jit_kwargs, None, None
        self._lock = threading.Lock()  # the chunks' threads make their first calls together
        functools.update_wrapper(self, fun)

    def _get(self):
        if self._jitted is None:
            with self._lock:  # one jitted function, so one compilation per shape, whichever thread comes first
                if self._jitted is None:
                    self._jitted = jax.jit(self._fun, compiler_options=supported_options() or None,
                                           **self._jit_kwargs)
        return self._jitted

    def __call__(self, *args, **kwargs):
        if holds_tracers((args, kwargs)):
            if self._nested is None:
                self._nested = jax.jit(self._fun, **self._jit_kwargs)
            return self._nested(*args, **kwargs)
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):  # trace, lower, clear_cache, ... of the jitted function
        if name.startswith("_"):  # not before __init__ has run (copy, pickle): no recursion through _get
            raise AttributeError(name)
        return getattr(self._get(), name)


def compiled(**jit_kwargs):
    """Decorator: :func:`jax.jit` with ``jit_kwargs`` and the supported :data:`FAST_COMPILE`
    options.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> @compiled(static_argnames=("n",))
    ... def power(x, n):
    ...     return x**n
    >>> float(power(jnp.asarray(2.0), 3))
    8.0
    """
    return lambda fun: _Program(fun, jit_kwargs)
