"""cube3d.compile_cache: where the persistent compilation cache lives, that a second
process loads what the first compiled, and that an unusable folder only warns."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cube3d.compile_cache import CACHE_ENV, CACHE_MAX_BYTES, cache_dir_from_env, enable_compile_cache

REPO = Path(__file__).resolve().parents[2]


def test_folder_from_the_environment(tmp_path):
    home = Path.home()
    assert cache_dir_from_env({}) == home / ".cache" / "cube3d" / "xla"
    assert cache_dir_from_env({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cube3d" / "xla"
    assert cache_dir_from_env({CACHE_ENV: str(tmp_path / "c"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "c"
    for off in ("off", "OFF", "none", "0"):
        assert cache_dir_from_env({CACHE_ENV: off}) is None


def test_an_unusable_folder_warns_and_compiles_without(tmp_path):
    import jax

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    before = jax.config.values["jax_compilation_cache_dir"]
    with pytest.warns(UserWarning, match=rf"compile cache {blocker}/xla: unusable .*{CACHE_ENV}=off"):
        assert enable_compile_cache(blocker / "xla") is None
    assert jax.config.values["jax_compilation_cache_dir"] == before
    assert blocker.read_text() == "not a folder"


_PROBE = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    from jax import monitoring
    from cube3d.compile_cache import enable_compile_cache
    hits = []
    monitoring.register_event_listener(lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
    folder = enable_compile_cache(sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even this small program
    f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2) @ jnp.cos(x))
    print(json.dumps({"folder": str(folder), "hits": len(hits), "value": float(f(jnp.arange(64.0))),
                      "after": len(hits), "max_size": jax.config.values.get("jax_compilation_cache_max_size")}))
""")


def _probe(folder):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(folder)], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    folder = tmp_path / "xla"
    first = _probe(folder)
    assert first["folder"] == str(folder) and first["after"] == 0  # compiled, then stored
    assert first["max_size"] == CACHE_MAX_BYTES  # least recently used programs evicted beyond it
    stored = sorted(p.name for p in folder.iterdir())
    assert stored
    second = _probe(folder)
    assert second["after"] >= 1  # loaded from the folder instead of compiled
    assert second["value"] == first["value"]
