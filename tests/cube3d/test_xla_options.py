"""cube3d.xla_options: the chunk programs' compile options, and the fallback without them."""

import jax
import jax.numpy as jnp
import numpy as np

from cube3d import fit as fitmod
from cube3d import xla_options
from cube3d.xla_options import FAST_COMPILE, compiled, supported_options


def test_this_jaxlib_accepts_the_options():
    # jaxlib 0.10 (the version CI installs) knows the option; the check must not hide that
    assert supported_options() == FAST_COMPILE


def test_an_unknown_option_falls_back_to_xla_defaults(monkeypatch):
    monkeypatch.setattr(xla_options, "FAST_COMPILE", {"xla_cpu_no_such_option_in_any_xla": False})
    supported_options.cache_clear()
    try:
        assert supported_options() == {}

        @compiled()
        def double(x):
            return 2 * x

        assert float(double(jnp.asarray(1.5))) == 3.0  # compiled without options, no error
    finally:
        monkeypatch.undo()
        supported_options.cache_clear()
    assert supported_options() == FAST_COMPILE


def test_the_options_reach_the_compiled_program(monkeypatch):
    """``compiled`` hands the options to jax.jit, and the program computes what plain jit does."""
    seen = []
    real_jit = jax.jit

    def recording_jit(fun, **kwargs):
        seen.append(kwargs)
        return real_jit(fun, **kwargs)

    def f(x):
        return jnp.sum(jnp.exp(-x) * jnp.sin(3.0 * x))

    monkeypatch.setattr(xla_options.jax, "jit", recording_jit)
    with_options = compiled()(f)
    x = jnp.linspace(0.0, 5.0, 1001)
    value = float(with_options(x))
    assert seen == [{"compiler_options": FAST_COMPILE}]
    monkeypatch.undo()
    np.testing.assert_allclose(value, float(jax.jit(f)(x)), rtol=1e-13)


def test_the_fit_chunks_are_compiled_with_the_options():
    for program in (fitmod._fit_chunk, fitmod._local_quadratic_chunk, fitmod._profiled_chi2_chunk):
        assert isinstance(program, xla_options._Program)
        assert program._jit_kwargs == {"static_argnames": ("static", "devices")}
