"""The journal of a fit: finished chunks kept next to the output, so that a run can resume.

``cube3d fit cube.fits -o MAPS.fits`` journals into ``MAPS.fits.partial/``
(:func:`journal_path_for`)::

    MAPS.fits.partial/
        journal.json        what the run is: its key (below), the plan's scalars, format version
        plan.npz            the plan's arrays (cube3d.stream.CubePlan: bins, chunks, templates)
        chunk_000000.npz    the results of chunk 0 (cube3d.pipeline.chunk_record), and so on

Every file is written to a temporary name in the directory, flushed to disk and renamed
into place, and the directory itself appears by a rename once ``journal.json`` and
``plan.npz`` are complete; so after a crash or ``kill -9`` each file present is whole,
and a chunk is either done or missing.  Chunk files depend only on (cube, plan, chunk
index, fit settings): any process may write one (later: Dask workers), and two that
write the same chunk write the same bytes.

The key says what the results depend on: the input cube (resolved path, size,
modification time, a hash of its headers), the templates (a hash of their files), an LSF
table (a hash of its file), every preparation and fit setting, the redshift, the chunk
size and the cube3d version.  A journal whose key differs from the run's belongs to
another run: :meth:`Journal.check` names what differs and refuses it (exit status 2 on
the command line), or removes it with ``overwrite``.  :class:`MemoryJournal` keeps the
chunks of a run without an output file in memory.

Reading back: :func:`gather_results` collects the per-spectrum results of every chunk
(small: parameters, errors, covariances); :class:`JournalSpectra` and
:class:`JournalModel` hand the per-bin spectra and the model cube to
:func:`cube3d.maps.write_maps` a chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from .durable import fsync_dir
from .errors import InputError
from .maps import ModelBlocks, SpectraBlocks

__all__ = ["Journal", "MemoryJournal", "journal_path_for", "file_digest", "tree_digest", "gather_results",
           "spectra_in_memory", "JournalSpectra", "JournalModel", "JOURNAL_FORMAT", "SPECTRA_KEYS", "PER_PIXEL"]

#: version of the journal's layout; a journal of another version is another run's
JOURNAL_FORMAT = 1

#: names of the per-bin spectra in a chunk record (float32, n x n_pix), when kept
SPECTRA_KEYS = ("spec", "model", "weight")

#: FitResult fields not journalled as such (per pixel: ``model`` and ``weight`` hold them when kept)
PER_PIXEL = ("bestfit", "weights_used")

_CHUNK_RE = re.compile(r"^chunk_(\d{6})\.npz$")
_KEY_NAMES = {"cube": "the input cube", "templates": "the templates", "lsf": "the LSF table",
              "settings": "the settings", "version": "the cube3d version", "format": "the journal format"}


def journal_path_for(output) -> Path:
    """The journal directory of an output file: ``MAPS.fits`` -> ``MAPS.fits.partial``."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def file_digest(path, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for data in iter(lambda: fh.read(block), b""):
            digest.update(data)
    return digest.hexdigest()


def tree_digest(path) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes, not recursive)."""
    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    digest = hashlib.sha256()
    for entry in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(entry.name.encode() + b"\0" + file_digest(entry).encode())
    return digest.hexdigest()


def _chunk_name(k: int) -> str:
    return f"chunk_{k:06d}.npz"



def _write_atomic(path: Path, write) -> None:
    """``write(fh)`` into a temporary file next to ``path``, fsync, rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MemoryJournal:
    """The chunks of a run kept in memory (a run without an output file): the interface
    of :class:`Journal` without the files."""

    def __init__(self):
        self._chunks = {}
        self._plan = None

    path = None

    def has_plan(self) -> bool:
        return self._plan is not None

    def create(self, arrays: dict, meta: dict) -> None:
        self._plan = (dict(arrays), dict(meta))

    def load_plan(self) -> tuple[dict, dict]:
        return self._plan

    def done(self) -> set:
        return set(self._chunks)

    def write_chunk(self, k: int, arrays: dict) -> None:
        self._chunks[k] = {name: np.asarray(a) for name, a in arrays.items()}

    def read_chunk(self, k: int, names=None) -> dict:
        chunk = self._chunks[k]
        return {n: chunk[n] for n in (names or chunk)}

    def chunk_names(self, k: int) -> set:
        return set(self._chunks[k])

    def remove(self) -> None:
        self._chunks.clear()


class Journal:
    """Finished chunks of one run in a directory (module docstring).

    Parameters
    ----------
    path : str or Path
        The directory (:func:`journal_path_for` of the output).
    key : dict
        What the run's results depend on (JSON-able; module docstring).

    Examples
    --------
    >>> j = Journal("maps.fits.partial", {"settings": {"moments": 2}})   # doctest: +SKIP
    >>> j.check(overwrite=False)                    # refuses another run's journal  # doctest: +SKIP
    >>> j.create(plan_arrays, plan_meta)            # once, atomically               # doctest: +SKIP
    >>> j.write_chunk(0, {"params": params})        # atomically                      # doctest: +SKIP
    >>> sorted(j.done())                            # doctest: +SKIP
    [0]
    """

    def __init__(self, path, key: dict):
        self.path = Path(path)
        self.key = dict(key, format=JOURNAL_FORMAT)

    # --- the run's identity ----------------------------------------------------------

    def _meta_file(self) -> Path:
        return self.path / "journal.json"

    def _read_meta(self) -> dict:
        try:
            with open(self._meta_file()) as fh:
                return json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: not a readable cube3d journal ({type(exc).__name__}: {exc}); "
                             "pass --overwrite to start afresh") from None

    def _difference(self, theirs: dict) -> Optional[str]:
        """What differs between this run's key and a journal's (one phrase), or None."""
        mine = json.loads(json.dumps(self.key))
        for name in ("format", "version", "cube", "templates", "lsf", "settings"):
            a, b = mine.get(name), theirs.get(name)
            if a == b:
                continue
            if name == "settings" and isinstance(a, dict) and isinstance(b, dict):
                changed = [f"{k} {b.get(k)!r} -> {a.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                return "settings differ: " + ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")
            if name == "cube" and isinstance(a, dict) and isinstance(b, dict):
                what = [k for k in ("path", "size", "mtime_ns", "headers_sha256") if a.get(k) != b.get(k)]
                return f"the input cube differs ({', '.join(what)})"
            return f"{_KEY_NAMES[name]} differ" if name in ("templates", "settings") else f"{_KEY_NAMES[name]} differs"
        if set(mine) != set(theirs):
            return "the run's description differs"
        return None

    def stored_key(self) -> dict:
        """The key recorded in the journal (what its run depended on)."""
        return self._read_meta().get("key", {})

    def check(self, overwrite: bool = False, log=None) -> None:
        """Accept the journal in ``path`` if it is this run's; refuse or remove another's.

        Raises
        ------
        InputError
            One line: ``path`` is not a directory, is unreadable, or journals another run
            (naming what differs) and ``overwrite`` is False.
        """
        say = log or (lambda msg: None)
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise InputError(f"journal {self.path} exists and is not a directory; remove it or choose another output")
        self._remove_stale_temps()
        try:
            meta = self._read_meta()
            diff = self._difference(meta.get("key", {}))
        except InputError:
            if not overwrite:
                raise
            diff = "unreadable"
        if diff is None:
            return
        if not overwrite:
            raise InputError(f"{self.path}: journal of another run ({diff}); pass --overwrite to start afresh "
                             "(or remove it)")
        say(f"removing the journal of another run in {self.path} ({diff}; --overwrite)")
        self.remove()

    def _remove_stale_temps(self) -> None:
        for entry in self.path.iterdir():
            m = re.match(r"^\..*\.(\d+)\.[^.]*\.tmp$", entry.name)
            if m and not _alive(int(m.group(1))):
                try:
                    entry.unlink()
                except OSError:
                    pass

    # --- the plan ---------------------------------------------------------------------

    def has_plan(self) -> bool:
        return (self.path / "plan.npz").is_file() and self._meta_file().is_file()

    def create(self, arrays: dict, meta: dict) -> None:
        """Write the journal's description and plan; the directory appears complete (rename)."""
        if self.has_plan():
            return
        parent = self.path.parent
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.{os.getpid()}.", dir=parent))
        try:
            with open(tmp / "plan.npz", "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            with open(tmp / "journal.json", "w") as fh:
                json.dump({"key": self.key, "plan": meta}, fh, indent=1, default=_json_default)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(tmp)
            try:
                os.rename(tmp, self.path)
            except OSError:
                if not self.has_plan():  # not another process's complete journal
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(parent)

    def load_plan(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` of the plan stored by :meth:`create`."""
        meta = self._read_meta()
        try:
            with np.load(self.path / "plan.npz", allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}/plan.npz: unreadable ({exc}); pass --overwrite to start afresh") from None
        return arrays, meta["plan"]

    # --- chunks -----------------------------------------------------------------------

    def done(self) -> set:
        """Indices of the chunks with a result file."""
        if not self.path.is_dir():
            return set()
        return {int(m.group(1)) for m in map(_CHUNK_RE.match, os.listdir(self.path)) if m}

    def write_chunk(self, k: int, arrays: dict) -> None:
        """Store the results of chunk ``k`` atomically (``arrays``: name -> ndarray)."""
        _write_atomic(self.path / _chunk_name(k), lambda fh: np.savez(fh, **arrays))

    def read_chunk(self, k: int, names=None) -> dict:
        """The arrays of chunk ``k`` (only ``names`` when given)."""
        with np.load(self.path / _chunk_name(k), allow_pickle=False) as npz:
            return {n: npz[n] for n in (names or npz.files)}

    def chunk_names(self, k: int) -> set:
        """The names of the arrays in chunk ``k``'s file; empty when it cannot be read."""
        try:
            with np.load(self.path / _chunk_name(k), allow_pickle=False) as npz:
                return set(npz.files)
        except (OSError, ValueError, EOFError):
            return set()

    def remove(self) -> None:
        """Delete the journal (after the output is written, or to start afresh)."""
        shutil.rmtree(self.path, ignore_errors=True)


# --- reading the results back ----------------------------------------------------------------


def gather_results(jr, plan):
    """The per-spectrum results of every chunk of a journal, and the plan with their S/N and scale.

    Parameters
    ----------
    jr : Journal or MemoryJournal
        Holding a record of every chunk of ``plan`` (:func:`cube3d.pipeline.fit_chunk`).
    plan : cube3d.stream.CubePlan

    Returns
    -------
    result : cube3d.fit.FitResult
        One row per spectrum; ``bestfit`` and ``weights_used`` None.
    plan : cube3d.stream.CubePlan
        With ``snr`` and ``scale`` of every spectrum.
    """
    from .fit import FitResult

    parts = [jr.read_chunk(k, sorted(jr.chunk_names(k) - set(SPECTRA_KEYS))) for k in range(plan.n_chunks)]
    scale = np.concatenate([p.pop("scale") for p in parts])
    snr = np.concatenate([p.pop("snr") for p in parts])
    fields = {name: None for name in PER_PIXEL}
    fields["param_names"] = tuple(str(v) for v in parts[0]["param_names"])
    for name in FitResult._fields:
        if name not in fields:
            fields[name] = np.concatenate([p[name] for p in parts])
    return FitResult(**fields), plan.with_stats(snr, scale)


def spectra_in_memory(jr, plan) -> dict:
    """The per-bin spectra of every chunk as ``KinematicMaps.spectra`` (a run without a journal)."""
    parts = [jr.read_chunk(k, list(SPECTRA_KEYS)) for k in range(plan.n_chunks)]
    return {
        "LOGLAM": np.asarray(plan.ln_wave),
        "SPEC": np.concatenate([p["spec"] for p in parts]),
        "MODEL": np.nan_to_num(np.concatenate([p["model"] for p in parts])),
        "WEIGHT": np.concatenate([p["weight"] for p in parts]),
    }


class JournalSpectra(SpectraBlocks):
    """The per-bin spectra of a journal, a chunk at a time (for :func:`cube3d.maps.write_maps`)."""

    def __init__(self, jr, plan):
        self.jr, self.plan = jr, plan
        self.loglam = np.asarray(plan.ln_wave)
        self.n_rows = plan.n_spec

    def blocks(self, name):
        key = {"SPEC": "spec", "MODEL": "model", "WEIGHT": "weight"}[name]
        for k in range(self.plan.n_chunks):
            block = self.jr.read_chunk(k, [key])[key]
            yield np.nan_to_num(block) if key == "model" else block


class JournalModel(ModelBlocks):
    """The model cube of a journal: each spectrum's best fit times its normalisation, at
    every spaxel of the spectrum (bins: all their members), in blocks of at most ``block``
    spaxels (a large bin does not make a large block)."""

    def __init__(self, jr, plan, block: int = 256):
        self.jr, self.plan, self.block = jr, plan, int(block)
        self.n_pix = plan.n_pix

    def blocks(self):
        plan = self.plan
        for k in range(plan.n_chunks):
            s0, s1 = plan.chunk_range(k)
            model = self.jr.read_chunk(k, ["model"])["model"] * np.asarray(plan.scale[s0:s1])[:, None]
            ptr = plan.member_ptr[s0 : s1 + 1]
            owner = np.repeat(np.arange(s1 - s0), np.diff(ptr))
            members = plan.members[ptr[0] : ptr[-1]]
            for b0 in range(0, members.size, self.block):
                sl = slice(b0, min(b0 + self.block, members.size))
                yield members[sl], model[owner[sl]].astype(np.float32)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
