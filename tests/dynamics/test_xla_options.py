"""dynamics.xla_options: the large programs' compile options, and the fallback without them."""

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import xla_options
from dynamics.xla_options import FAST_COMPILE, compiled, supported_options


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

    x = jnp.linspace(0.0, 5.0, 1001)
    monkeypatch.setattr(xla_options.jax, "jit", recording_jit)
    with_options = compiled()(f)
    value = float(with_options(x))
    assert seen == [{"compiler_options": FAST_COMPILE}]
    monkeypatch.undo()
    np.testing.assert_allclose(value, float(jax.jit(f)(x)), rtol=1e-13)


def test_a_program_called_inside_a_trace_is_a_plain_jit():
    """JAX refuses compile options on a nested jit: inside an outer jit, grad or vmap (numpyro's
    NUTS loop calls the joint potential so) the program is traced without them."""
    program = compiled()(lambda x: jnp.sum(jnp.sin(x) ** 2))
    x = jnp.linspace(0.0, 1.0, 7)
    direct = float(program(x))
    assert not xla_options.holds_tracers((x, {"a": 1.0}))
    assert jax.jit(lambda y: jnp.asarray(xla_options.holds_tracers([y])))(x)
    assert float(jax.jit(lambda y: program(y) + 1.0)(x)) == direct + 1.0
    np.testing.assert_allclose(jax.grad(program)(x), np.sin(2 * np.asarray(x)), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(program)(x[:, None]), np.sin(np.asarray(x)) ** 2, rtol=1e-6)


def test_threads_calling_first_share_one_jitted_function():
    """The chunks' threads call a program for the first time together: they get one jitted
    function (so one compilation per shape), not one each."""
    from concurrent.futures import ThreadPoolExecutor

    program = compiled()(lambda x: jnp.cos(x) * 2.0)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda k: program._get(), range(8)))
    assert all(g is got[0] for g in got)
    assert float(program(jnp.asarray(0.0))) == 2.0


def test_a_program_copies_without_recursing():
    """Private attributes are never forwarded to the jitted function: a copy (made without
    ``__init__``, as ``copy`` and ``pickle`` do) raises AttributeError instead of recursing."""
    import copy

    program = compiled()(lambda x: x + 1.0)
    clone = copy.copy(program)
    assert float(clone(jnp.asarray(1.0))) == 2.0
    bare = xla_options._Program.__new__(xla_options._Program)
    try:
        bare._jitted
    except AttributeError:
        pass
    else:
        raise AssertionError("a bare program has no jitted function")
