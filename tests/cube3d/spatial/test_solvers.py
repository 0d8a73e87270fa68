"""The solver interface: choice, refusals, and agreement of dense, hsgp and kronecker.

Measured on the 10 x 9 separable Matern-5/2 problem below (amp 1.5, scale 2.5, error
factor 1.3, hsgp with 50 basis functions per axis, boundary factor 2.5), relative to the
dense (exact) solver, for uniform noise on the full grid / unequal noise with 20% masked:

==========  ==================  ==================  ==========================================
            log evidence        posterior mean      posterior std
==========  ==================  ==================  ==========================================
hsgp        6.7e-6 / 2.8e-6     1.8e-4 / 3.4e-4     3.6e-4 / 7.7e-4
kronecker   1e-16 / 2.8e-6 (*)  3e-15 / 1.5e-10     64 posterior draws: max 23% / 26%, mean 0.2%
==========  ==================  ==================  ==========================================

(*) with unequal noise the kronecker solver takes its evidence from the Hilbert-space
form of the same kernel.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest

from cube3d.errors import InputError
from cube3d.spatial.config import GPConfig
from cube3d.spatial.kernels import KernelSpec, covariance
from cube3d.spatial.solvers import (
    SOLVER_CLASSES,
    DenseSolver,
    FieldPosterior,
    HSGPSolver,
    KroneckerSolver,
    Solver,
    WeightSpaceSolver,
    dense_bytes,
    hsgp_min_scale,
    make_solver,
)

SHAPE = (10, 9)
SEP = KernelSpec(("matern52",), True)
ISO = KernelSpec(("matern52",), False)
AMP, SCALE = jnp.asarray([1.5]), jnp.asarray([2.5])
NOISE_SCALE = 1.3  # factor on the stated errors, passed to every solver


@pytest.fixture(scope="module", params=["uniform", "masked"])
def solved(request):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    x = jnp.asarray(np.c_[yy.ravel(), xx.ravel()], dtype=float)
    k = np.asarray(covariance(SEP, AMP, SCALE, x, x))
    f = (np.linalg.cholesky(k + 1e-10 * np.eye(len(k))) @ rng.normal(size=len(k))).reshape(SHAPE)
    if request.param == "uniform":
        w = np.full(SHAPE, 4.0)
    else:
        w = rng.uniform(1.0, 8.0, size=SHAPE)
        w[rng.uniform(size=SHAPE) < 0.2] = 0.0
    r = jnp.asarray(f + NOISE_SCALE * rng.normal(size=SHAPE) / np.sqrt(np.where(w > 0, w, 1.0)))
    config = GPConfig(separable=True, boundary_factor=2.5, max_basis=200)
    out = {}
    for name in ("dense", "hsgp", "kronecker"):
        solver = make_solver(name, SEP, SHAPE, w, config, 0.6)
        assert solver.name == name
        mean, var = solver.posterior(AMP, SCALE, r, NOISE_SCALE)
        out[name] = (float(solver.log_evidence(AMP, SCALE, r, NOISE_SCALE)), np.asarray(mean),
                     np.sqrt(np.asarray(var)))
    return request.param, w, out


def test_solvers_agree_on_log_evidence(solved):
    case, _, out = solved
    ref = out["dense"][0]
    assert abs(out["hsgp"][0] - ref) / abs(ref) < 5e-5
    tol = 1e-12 if case == "uniform" else 5e-5  # exact Kronecker evidence only for uniform noise
    assert abs(out["kronecker"][0] - ref) / abs(ref) < tol


def test_solvers_agree_on_posterior(solved):
    case, w, out = solved
    mean_ref, std_ref = out["dense"][1], out["dense"][2]
    scale = np.max(np.abs(mean_ref))
    assert np.max(np.abs(out["hsgp"][1] - mean_ref)) / scale < 1e-3
    assert np.max(np.abs(out["kronecker"][1] - mean_ref)) / scale < 1e-8
    assert np.max(np.abs(out["hsgp"][2] / std_ref - 1)) < 3e-3
    # Kronecker std from 64 posterior draws: 8.9% standard error per spaxel
    ratio = out["kronecker"][2] / std_ref
    assert abs(np.mean(ratio) - 1) < 0.03 and np.max(np.abs(ratio - 1)) < 0.45
    if case == "masked":
        masked = w == 0
        assert std_ref[masked].mean() > std_ref[~masked].mean()


def test_sum_kernel_dense_vs_hsgp():
    spec = KernelSpec(("matern52", "expsquared"), False)
    rng = np.random.default_rng(4)
    w = rng.uniform(1.0, 4.0, size=SHAPE)
    r = jnp.asarray(rng.normal(size=SHAPE))
    amp, scale = jnp.asarray([0.8, 1.2]), jnp.asarray([3.0, 2.0])
    config = GPConfig(boundary_factor=2.5, max_basis=200)
    dense = make_solver("dense", spec, SHAPE, w, config, 1.0)
    hs = make_solver("hsgp", spec, SHAPE, w, config, 0.8)
    ref = float(dense.log_evidence(amp, scale, r))
    assert abs(float(hs.log_evidence(amp, scale, r)) - ref) / abs(ref) < 1e-4


def test_auto_picks_dense_then_hsgp():
    w = np.ones(SHAPE)
    assert make_solver("auto", ISO, SHAPE, w, GPConfig(), 1.0).name == "dense"
    assert make_solver("auto", ISO, SHAPE, w, GPConfig(max_dense=90), 1.0).name == "dense"
    assert make_solver("auto", ISO, SHAPE, w, GPConfig(max_dense=89), 1.0).name == "hsgp"
    # only observed spaxels count
    w[:2] = 0.0
    assert make_solver("auto", ISO, SHAPE, w, GPConfig(max_dense=72), 1.0).name == "dense"


def test_dense_above_max_dense_raises():
    with pytest.raises(InputError, match="hsgp") as err:
        make_solver("dense", ISO, SHAPE, np.ones(SHAPE), GPConfig(max_dense=50), 1.0)
    assert "max_dense=50" in str(err.value)
    assert dense_bytes(1000) == 24e6


def test_hsgp_below_floor_raises():
    config = GPConfig()  # max_basis 36, boundary factor 1.5
    floor = hsgp_min_scale(ISO, SHAPE, config)
    assert floor == pytest.approx(2.65 * 1.5 * 4.5 / 36)  # Riutort-Mayol et al. 2023 Sect. 4.3
    assert make_solver("hsgp", ISO, SHAPE, np.ones(SHAPE), config, floor).name == "hsgp"
    with pytest.raises(InputError, match="max_basis"):
        make_solver("hsgp", ISO, SHAPE, np.ones(SHAPE), config, 0.5 * floor)


def test_kronecker_refuses_isotropic_and_sums():
    with pytest.raises(InputError, match="separable"):
        make_solver("kronecker", ISO, SHAPE, np.ones(SHAPE), GPConfig(), 1.0)
    with pytest.raises(InputError, match="separable"):
        make_solver("kronecker", KernelSpec(("matern52", "expsquared"), True), SHAPE, np.ones(SHAPE), GPConfig(), 1.0)


def test_other_refusals():
    with pytest.raises(InputError, match="masked"):
        make_solver("auto", ISO, SHAPE, np.zeros(SHAPE), GPConfig(), 1.0)
    with pytest.raises(InputError, match="solver"):
        make_solver("cholesky", ISO, SHAPE, np.ones(SHAPE), GPConfig(), 1.0)


def test_solver_classes_implement_the_base_interface():
    import inspect

    from cube3d.spatial.config import SOLVERS

    assert Solver.__abstractmethods__ == {"log_evidence", "posterior", "evidence"}
    assert SOLVERS == ("auto",) + tuple(SOLVER_CLASSES)
    assert tuple(SOLVER_CLASSES.values()) == (DenseSolver, HSGPSolver, KroneckerSolver)
    for name, cls in SOLVER_CLASSES.items():
        assert issubclass(cls, Solver) and not inspect.isabstract(cls) and cls.name == name
    # the weight-space form (the nuts tier) is offered by dense and hsgp only
    assert issubclass(DenseSolver, WeightSpaceSolver) and issubclass(HSGPSolver, WeightSpaceSolver)
    assert not issubclass(KroneckerSolver, WeightSpaceSolver)
    with pytest.raises(TypeError):
        Solver()
    # built solvers: the pure-function evidence equals the method, the posterior is a FieldPosterior
    rng = np.random.default_rng(1)
    w = rng.uniform(1.0, 4.0, size=SHAPE)
    w[0, :3] = 0.0
    r = jnp.asarray(rng.normal(size=SHAPE))
    for name in ("dense", "hsgp"):
        solver = make_solver(name, ISO, SHAPE, w, GPConfig(max_basis=60), 1.5)
        assert isinstance(solver, SOLVER_CLASSES[name])
        fn, state = solver.evidence
        assert float(fn(ISO, state, AMP, SCALE, r, 1.2)) == pytest.approx(float(solver.log_evidence(AMP, SCALE, r, 1.2)),
                                                                          rel=1e-12)
        post = solver.posterior(AMP, SCALE, r)
        assert isinstance(post, FieldPosterior) and post.mean.shape == SHAPE
        np.testing.assert_array_equal(post.std, np.sqrt(np.maximum(np.asarray(post.var), 0.0)))
