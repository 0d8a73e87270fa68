"""Every documented example runs: the README's Python blocks and the docstring examples.

README blocks use the placeholder names ``cube.fits`` and ``templates_dir/``: they run in a
temporary folder where those names point at the bundled demo cube and templates.  Examples
marked ``# doctest: +SKIP`` in docstrings are the only ones not run (they name files a
reader has, not the package).
"""

import doctest
import importlib
import os
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import cube3d
import dynamics
from cube3d import datasets

REPO = Path(__file__).resolve().parents[1]


def _modules():
    names = []
    for package in (cube3d, dynamics):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if info.name.startswith("cube3d.demo_data") or info.name == "cube3d.cli":
                continue  # data (and its cutting script), and the command line (tested in test_cli)
            names.append(info.name)
    return names


def _doctests(name):
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module) if t.examples]


DOCTEST_MODULES = [name for name in _modules() if _doctests(name)]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _doctests(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"


def _readme_python_blocks():
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples():
    assert len(_readme_python_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(_readme_python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(datasets.demo_cube_path(), tmp_path / "cube.fits")
    os.symlink(datasets.demo_templates_dir(), tmp_path / "templates_dir")
    code = _readme_python_blocks()[index]
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    # whatever a block computes is finite where it is a map of velocities
    maps = namespace.get("maps") or getattr(namespace.get("run"), "maps", None)
    if maps is not None:
        assert np.isfinite(maps.maps["V"]).any()
