"""cube3d.io.source and cube3d.stream: a cube read a block of spaxels at a time gives the
spectra that read_cube + prepare_cube give, without holding the cube."""

import os
import warnings

import numpy as np
import pytest
from astropy.io import fits

from cube3d import datasets
from cube3d.errors import InputError
from cube3d.io import read_cube
from cube3d.io import reader as reader_module
from cube3d.io.source import open_cube, raster_blocks
from cube3d.prepare import PrepareConfig, prepare_cube
from cube3d.stream import CubePlan, chunk_bounds, materialise, plan_cube, prepare_chunk
from cube3d.templates import load_templates

pytestmark = pytest.mark.timeout(120)

Z = datasets.DEMO_REDSHIFT


@pytest.fixture(scope="module")
def library():
    return load_templates(datasets.demo_templates_dir())


def _chunks(source, plan):
    parts = [prepare_chunk(source, plan, k) for k in range(plan.n_chunks)]
    return (np.concatenate([p[0].spectra for p in parts]), np.concatenate([p[0].ivar for p in parts]),
            np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))


@pytest.mark.parametrize("config", [PrepareConfig(), PrepareConfig(min_sn=2.0, n_basis=4)], ids=["all", "min_sn-basis"])
def test_streamed_spaxels_equal_prepare_cube(library, config):
    """Without binning every spectrum, weight, S/N and scale is prepare_cube's to the last bit."""
    path = datasets.demo_cube_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = prepare_cube(read_cube(path), library, Z, min_sn=config.min_sn, n_basis=config.n_basis)
        source = open_cube(path)
        plan = plan_cube(source, library, Z, config, chunk_spectra=100, chunk_size=16)
    spectra, ivar, scale, snr = _chunks(source, plan)
    assert plan.n_chunks == int(np.ceil(ref.n_spec / 112))  # 100 rounded up to 7 batches of 16
    for got, want in ((spectra, ref.spectra), (ivar, ref.ivar), (scale, ref.scale), (snr, ref.snr),
                      (plan.bin_id, ref.bin_id), (plan.templates, ref.templates), (plan.ln_wave, ref.ln_wave)):
        np.testing.assert_array_equal(got, want)
    assert plan.template_names == ref.template_names and plan.velscale == ref.velscale


def test_streamed_bins_equal_prepare_cube(library):
    """Voronoi bins: the same spaxels per bin, numbered in raster order of their first spaxel, and
    the same co-added spectra to rounding (summed a block at a time)."""
    path = datasets.demo_cube_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = prepare_cube(read_cube(path), library, Z, target_sn=15.0)
        source = open_cube(path)
        plan = plan_cube(source, library, Z, PrepareConfig(target_sn=15.0), chunk_spectra=4, chunk_size=4)
    assert plan.binned and plan.n_spec == ref.n_spec and plan.n_chunks == int(np.ceil(ref.n_spec / 4))
    first = [plan.members[plan.member_ptr[b]] for b in range(plan.n_spec)]
    assert first == sorted(first)
    old = np.array([ref.bin_id.ravel()[plan.members[plan.member_ptr[b]]] for b in range(plan.n_spec)])
    for b in range(plan.n_spec):  # each new bin is exactly one old bin
        members = plan.members[plan.member_ptr[b] : plan.member_ptr[b + 1]]
        np.testing.assert_array_equal(np.sort(members), np.flatnonzero(ref.bin_id.ravel() == old[b]))
    spectra, ivar, scale, snr = _chunks(source, plan)
    np.testing.assert_allclose(spectra, ref.spectra[old], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ivar, ref.ivar[old], rtol=1e-12)
    np.testing.assert_allclose(scale, ref.scale[old], rtol=1e-12)
    np.testing.assert_allclose(snr, ref.snr[old], rtol=1e-12)
    assert np.all(np.isnan(plan.snr))  # known once the chunks are prepared


def test_plan_round_trip_and_materialise(library):
    source = open_cube(datasets.demo_cube_path())
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        plan = plan_cube(source, library, Z, PrepareConfig(n_basis=3), chunk_spectra=64, chunk_size=16)
    assert plan.notes and all(isinstance(n, tuple) and len(n) == 2 for n in plan.notes)  # the LSF warning
    back = CubePlan.from_arrays(*plan.to_arrays())
    for name in ("bin_id", "members", "member_ptr", "chunk_starts", "templates", "line_mask", "snr", "scale"):
        np.testing.assert_array_equal(getattr(back, name), getattr(plan, name))
    assert (back.velscale, back.template_names, back.notes, back.spatial_shape) == \
           (plan.velscale, plan.template_names, plan.notes, plan.spatial_shape)
    prep = materialise(source, back)
    assert prep.spectra.shape == (plan.n_spec, plan.n_pix)
    with pytest.raises(InputError, match="in memory, more than the 1000 bytes available"):
        materialise(source, back, free_bytes=1000)


def test_chunk_bounds():
    np.testing.assert_array_equal(chunk_bounds(100, 30, 16), [0, 32, 64, 96, 100])
    np.testing.assert_array_equal(chunk_bounds(10, 1, 16), [0, 10])
    np.testing.assert_array_equal(chunk_bounds(0, 256, 16), [0])


def _muse(path, flux, stat=None, dq=None, flip=False, wave_axis=3):
    """A MUSE-layout file of ``flux`` (n_wave, ny, nx); ``wave_axis`` is the FITS axis of
    the wavelengths (3 as MUSE; 2 stores the arrays as (ny, n_wave, nx))."""
    h = fits.Header()
    ra, dec = [k for k in (1, 2, 3) if k != wave_axis]
    h[f"CTYPE{ra}"], h[f"CTYPE{dec}"], h[f"CTYPE{wave_axis}"] = "RA---TAN", "DEC--TAN", "AWAV"
    h[f"CUNIT{ra}"], h[f"CUNIT{dec}"], h[f"CUNIT{wave_axis}"] = "deg", "deg", "Angstrom"
    h[f"CRVAL{ra}"], h[f"CRVAL{dec}"], h[f"CRPIX{ra}"], h[f"CRPIX{dec}"] = 10.0, 20.0, 1.0, 1.0
    h[f"CD{ra}_{ra}"], h[f"CD{dec}_{dec}"] = -5e-5, 5e-5
    h[f"CRVAL{wave_axis}"], h[f"CRPIX{wave_axis}"], h[f"CD{wave_axis}_{wave_axis}"] = \
        (5000.0 + 1.25 * (flux.shape[0] - 1), 1.0, -1.25) if flip else (5000.0, 1.0, 1.25)

    def stored(a):
        return np.moveaxis(a, 0, 3 - wave_axis)

    hdus = [fits.PrimaryHDU(), fits.ImageHDU(stored(flux).astype(np.float32), h, name="DATA")]
    if stat is not None:
        hdus.append(fits.ImageHDU(stored(stat).astype(np.float32), h, name="STAT"))
    if dq is not None:
        hdus.append(fits.ImageHDU(stored(dq).astype(np.uint8), h, name="DQ"))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize("case", ["muse", "flipped", "no-noise", "gzip", "wave-axis-2"])
def test_source_reads_what_read_cube_reads(tmp_path, case):
    rng = np.random.default_rng(1)
    flux = rng.normal(100.0, 5.0, (60, 7, 9))
    flux[3, 2, 4] = np.nan
    stat = np.full(flux.shape, 25.0)
    stat[5, 1, 1] = -1.0
    dq = np.zeros(flux.shape, np.uint8)
    dq[7, 6, 8] = 4
    path = _muse(tmp_path / "c.fits", flux, None if case == "no-noise" else stat, dq, flip=case == "flipped",
                 wave_axis=2 if case == "wave-axis-2" else 3)
    if case == "gzip":
        import gzip
        import shutil

        with open(path, "rb") as src, gzip.open(tmp_path / "c.fits.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        path = tmp_path / "c.fits.gz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cube = read_cube(path)
        source = open_cube(path)
    if case == "no-noise":  # the same DER_SNR warning from both
        texts = [str(w.message) for w in caught if "no STAT HDU" in str(w.message)]
        assert len(texts) == 2 and texts[0] == texts[1]
    assert source.streamed == (case != "gzip")
    idx = np.array([40, 0, 5, 13, 62, 5])  # any order, repeats
    f, iv = source.read(idx)
    np.testing.assert_array_equal(f, cube.flux.reshape(60, -1)[:, idx])
    np.testing.assert_array_equal(iv, cube.ivar.reshape(60, -1)[:, idx])
    np.testing.assert_array_equal(source.wave, cube.wave)
    assert source.air == cube.air and source.spatial_shape == cube.spatial_shape
    assert [b.tolist() for b in raster_blocks(5, 2)] == [[0, 1], [2, 3], [4]]


def test_truncated_file_is_one_line_error(tmp_path):
    path = _muse(tmp_path / "c.fits", np.ones((40, 5, 5)), np.ones((40, 5, 5)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2880 * 2])
    with pytest.raises(InputError, match=r"\[STAT\]: cannot read data .*truncated"):
        open_cube(path)


def _rss_bytes():
    """Resident file-backed and anonymous memory of this process (``/proc/self/status``)."""
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return {k: 1024 * int(fields[k].split()[0]) for k in ("RssFile", "RssAnon")}


def test_reading_blocks_keeps_no_file_pages(tmp_path):
    """Reading every spaxel a block at a time keeps no file page resident (positioned reads,
    no memory map) and allocates nothing of the cube's size.

    The two kinds of resident memory are measured apart: in a long test process (a pytest-xdist
    worker) the anonymous total moved by 4.5 MB during the reads for reasons of its own, while a
    memory map adds file pages (the whole file) and a whole-HDU read 16 MB of anonymous memory
    (0.44 of the file)."""
    flux = np.ones((400, 100, 100), np.float32)  # 16 MB per HDU
    path = _muse(tmp_path / "big.fits", flux, flux, np.zeros(flux.shape, np.uint8))
    del flux
    source = open_cube(path)
    source.read(np.arange(100))  # allocations of one block's size happen once
    before = _rss_bytes()
    for idx in raster_blocks(source.n_spaxels, 500):
        source.read(idx)
    after = _rss_bytes()
    size = os.path.getsize(path)
    assert after["RssFile"] - before["RssFile"] < 0.05 * size
    assert after["RssAnon"] - before["RssAnon"] < 0.25 * size  # one 16 MB HDU would be 0.44


def test_read_cube_refuses_a_cube_larger_than_memory(tmp_path, monkeypatch):
    path = _muse(tmp_path / "c.fits", np.ones((40, 5, 5)), np.ones((40, 5, 5)))
    monkeypatch.setattr(reader_module, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"c.fits\[DATA\]: reading the whole 40 x 5 x 5 cube needs .*open_cube"):
        read_cube(path)
    open_cube(path).read([0])  # the streaming reader needs no such memory


def test_plan_of_a_cube_without_weight(tmp_path, library):
    flux = np.ones((300, 3, 3))
    path = _muse(tmp_path / "c.fits", flux, np.zeros(flux.shape))
    with pytest.raises(InputError, match="every pixel is masked") as err:
        plan_cube(open_cube(path), library, 0.0)
    with pytest.raises(InputError) as ref:
        read_cube(path)
    assert str(err.value) == str(ref.value)
