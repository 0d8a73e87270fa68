"""Packaging: the wheel carries every module, the demo data and py.typed.

The demo data live in the top-level ``data/`` folder, which pyproject.toml maps into the package
``cube3d.demo_data``; that needs an explicit package list, checked here against the source tree.
"""

import importlib.metadata as md
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("cube3d", "dynamics")
DEMO_FILES = ["muse_a478_cutout.fits", "lsf/MUSE-WFM.lsf"] + [
    f"templates/MILESHC_{n}.fits" for n in ("00", "08", "16", "19", "25", "35", "45", "56")
]


def _setuptools_config():
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _source_packages():
    """Dotted names of the folders under cube3d/ and dynamics/ that hold Python files."""
    found = set()
    for top in SOURCES:
        for py in (REPO / top).rglob("*.py"):
            if "__pycache__" not in py.parts:
                found.add(".".join(py.parent.relative_to(REPO).parts))
    return found


def test_package_list_matches_source_tree():
    cfg = _setuptools_config()
    listed = set(cfg["packages"])
    mapped = cfg.get("package-dir", {})
    missing = _source_packages() - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    for name in listed:  # setuptools' rule: the longest mapped prefix, then the rest of the name
        prefix = max((p for p in mapped if name == p or name.startswith(p + ".")), key=len, default="")
        rest = name[len(prefix):].lstrip(".").replace(".", "/")
        folder = REPO / mapped.get(prefix, "") / rest
        assert folder.is_dir(), f"{name}: {folder} does not exist"
    assert mapped == {"cube3d.demo_data": "data"}


def _build_requirements_available():
    try:
        major = int(md.version("setuptools").split(".")[0])
        md.version("wheel")
    except (md.PackageNotFoundError, ValueError):
        return False
    return major >= 77


@pytest.mark.timeout(180)
def test_wheel_contents(tmp_path):
    if not _build_requirements_available():
        pytest.skip("setuptools>=77 and wheel are needed (the test extra installs them)")
    # build from a copy, so that concurrent builds never share build/ or *.egg-info in the checkout
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in (*SOURCES, "data"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("cube3d_ifu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    for name in DEMO_FILES:
        assert f"cube3d/demo_data/{name}" in names, name
    assert "cube3d/demo_data/README.md" in names  # provenance and licences travel with the data
    assert len([n for n in names if n.startswith("cube3d/demo_data/templates/")]) == 8
    assert "cube3d/py.typed" in names
    for top in SOURCES:
        for py in (src / top).rglob("*.py"):
            assert py.relative_to(src).as_posix() in names, py
    assert not [n for n in names if n.startswith(("data/", "tests/"))]
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
