"""What tests/conftest.py relies on to keep a long pytest worker alive."""

import gc
import os

import jax
import jax.numpy as jnp
import pytest

MAPS = f"/proc/{os.getpid()}/maps"


def _mappings():
    with open(MAPS) as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists(MAPS), reason="needs Linux's /proc/<pid>/maps")
def test_clearing_jax_caches_unmaps_the_compiled_programs():
    # Each compiled CPU program holds memory mappings until jax.clear_caches() (conftest's
    # _release_compiled_programs); a worker that never released them reached 64,739 of the
    # kernel's 65,530 and CI's died compiling.
    def compile_programs(offset):
        for i in range(offset, offset + 40):
            f = jax.jit(lambda x, i=i: jnp.sum(jnp.sin(x * i)) + jnp.cumsum(x) @ x)
            f(jnp.ones(8 + i)).block_until_ready()

    compile_programs(0)  # the first ones also map what the process keeps (thread stacks, arenas)
    jax.clear_caches()
    gc.collect()
    before = _mappings()
    compile_programs(100)
    gc.collect()
    grown = _mappings() - before
    assert grown >= 40  # at least one mapping per program, kept after its function is gone
    jax.clear_caches()
    gc.collect()
    assert _mappings() - before < 0.1 * grown
