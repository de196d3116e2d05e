"""JᵀJ, Jᵀv, per-sample gradients and the NTK from the factored Jacobian vs the dense one."""

from __future__ import annotations

import numpy as np
import pytest

from jacnet import curvature
from jacnet.curvature import gauss_newton, jtv, ntk, per_sample_gradients
from jacnet.jacobians import BlockRow, Kronecker
from jacnet.losses import MSELoss
from jacnet.network import Sequential, _chain_jacobians, _is_plain, _write_param_jacobian, jacobian, mlp

CASES = [
    # sizes, activation, output activation, batch
    ([1, 4, 1], "tanh", None, 7),
    ([3, 5, 4, 2], "tanh", None, 9),
    ([4, 6, 3], "sigmoid", "sigmoid", 5),
    ([5, 7, 6, 3], "relu", "tanh", 11),
]


def _setup(sizes, activation, output_activation, batch, seed=0):
    model = mlp(sizes, activation=activation, output_activation=output_activation, seed=seed,
                dtype="float64")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, sizes[0]))
    J = jacobian(model, X, wrt="params").reshape(batch * sizes[-1], -1)
    return model, X, J, rng


@pytest.mark.parametrize("sizes, activation, output_activation, batch", CASES)
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gauss_newton_matches_dense(sizes, activation, output_activation, batch, chunk_size):
    model, X, J, rng = _setup(sizes, activation, output_activation, batch)
    e = rng.normal(size=(batch, sizes[-1]))
    jtj, jte = gauss_newton(model, X, e, chunk_size=chunk_size)
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jte, J.T @ e.ravel(), rtol=1e-12, atol=1e-12)
    assert np.array_equal(jtj, jtj.T)


def test_gauss_newton_kronecker_path_with_tiles(monkeypatch):
    # Force small tiles so that the tiled Kronecker products and their mirror images run.
    monkeypatch.setattr(curvature, "_KRON_TILE", 64)
    model, X, J, _ = _setup([6, 9, 4], "tanh", "sigmoid", 13)
    blocks = curvature._factors(model, X, np.dtype(np.float64))
    direct, kron = curvature._pair_costs(blocks[0], blocks[0], 4, True)
    assert kron < direct  # the path under test is the Kronecker one
    e = np.random.default_rng(1).normal(size=(13, 4))
    jtj, jte = gauss_newton(model, X, e, chunk_size=5)
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jte, J.T @ e.ravel(), rtol=1e-12, atol=1e-12)


def test_gauss_newton_float32_accumulates_in_float64():
    model = mlp([3, 8, 2], seed=1, dtype="float32")
    X = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    jtj32, _ = gauss_newton(model, X)
    jtj64, _ = gauss_newton(model, X, dtype="float64")
    assert jtj32.dtype == np.float32 and jtj64.dtype == np.float64
    J = jacobian(model.astype("float64"), X.astype(np.float64), wrt="params").reshape(40, -1)
    np.testing.assert_allclose(jtj64, J.T @ J, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes, activation, output_activation, batch", CASES)
def test_jtv_and_per_sample_gradients(sizes, activation, output_activation, batch):
    model, X, J, rng = _setup(sizes, activation, output_activation, batch)
    v = rng.normal(size=(batch, sizes[-1]))
    np.testing.assert_allclose(jtv(model, X, v, chunk_size=3), J.T @ v.ravel(), atol=1e-12)
    loss = MSELoss()
    target = rng.normal(size=(batch, sizes[-1]))
    grad_output = loss.grad(model.forward(X), target)
    per_sample = per_sample_gradients(model, X, grad_output)
    assert per_sample.shape == (batch, model.n_params)
    model.forward(X)
    model.backward(grad_output)
    np.testing.assert_allclose(per_sample.sum(axis=0), model.grads, rtol=1e-12, atol=1e-14)
    dense = np.einsum("bm,bmp->bp", grad_output, J.reshape(batch, sizes[-1], -1))
    np.testing.assert_allclose(per_sample, dense, atol=1e-14)


@pytest.mark.parametrize("sizes, activation, output_activation, batch", CASES)
def test_ntk_matches_dense(sizes, activation, output_activation, batch):
    model, X1, J1, rng = _setup(sizes, activation, output_activation, batch)
    X2 = rng.normal(size=(3, sizes[0]))
    J2 = jacobian(model, X2, wrt="params").reshape(3 * sizes[-1], -1)
    np.testing.assert_allclose(ntk(model, X1, X2), J1 @ J2.T, atol=1e-12)
    np.testing.assert_allclose(ntk(model, X1), J1 @ J1.T, atol=1e-12)
    m = sizes[-1]
    assert ntk(model, X1, X2, flatten=False).shape == (batch, m, 3, m)


@pytest.mark.parametrize("sizes, output_activation", [([3, 5, 4, 1], None), ([2, 6, 1], "tanh"),
                                                     ([3, 4, 2], None)])
def test_ntk_with_block_weights_tile_by_tile_matches_dense(sizes, output_activation, monkeypatch):
    # One row per tile, a weight and its bias weighted differently (grouped under one L),
    # a zero weight: J₁ diag(w) J₂ᵀ.
    from jacnet import curvature

    monkeypatch.setattr(curvature, "_NTK_TILE", 1)
    model, X1, J1, rng = _setup(sizes, "tanh", output_activation, 6)
    X2 = rng.normal(size=(4, sizes[0]))
    J2 = jacobian(model, X2, wrt="params").reshape(4 * sizes[-1], -1)
    factors = [0.5, 2.0, 0.0, 1.0, 3.0, 1.5][:len(model.layer_block_slices())]
    w = np.concatenate([np.full(cols.stop - cols.start, f)
                        for f, cols in zip(factors, model.layer_block_slices())])
    np.testing.assert_allclose(ntk(model, X1, X2, block_weights=factors), (J1 * w) @ J2.T,
                               atol=1e-12)
    np.testing.assert_allclose(ntk(model, X1, block_weights=factors), (J1 * w) @ J1.T,
                               atol=1e-12)


def test_ntk_of_one_output_holds_one_kernel_sized_array_at_a_time():
    # Six (B, B) temporaries per parameter block, 128 MB each at 4000 rows, had cost more
    # than the products; the kernel is now written once, tile by tile.
    import tracemalloc

    model = mlp([3, 16, 16, 1], seed=0, dtype="float64")
    X = np.random.default_rng(0).normal(size=(1000, 3))
    ntk(model, X)  # warm: the forward pass's caches exist before the count
    tracemalloc.start()
    try:
        kernel = ntk(model, X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * kernel.nbytes, peak / kernel.nbytes


def test_against_torch_func():
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, jacrev, vmap

    model = mlp([4, 6, 3], activation="tanh", seed=2, dtype="float64")
    X = np.random.default_rng(2).normal(size=(10, 4))
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    params = {name: torch.tensor(value.copy()) for (name, value), key in
              zip(model.named_parameters(), ["0.weight", "0.bias", "2.weight", "2.bias"])}
    params = dict(zip(["0.weight", "0.bias", "2.weight", "2.bias"], params.values()))

    def single(p, x):
        return functional_call(net, p, (x[None],))[0]

    jac = vmap(jacrev(single), in_dims=(None, 0))(params, torch.tensor(X))
    J = torch.cat([jac[k].reshape(10, 3, -1) for k in params], dim=2).reshape(30, -1).numpy()
    jtj, _ = gauss_newton(model, X)
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ntk(model, X), J @ J.T, rtol=1e-12, atol=1e-12)


def test_error_paths():
    model = mlp([3, 4, 2], seed=0, dtype="float64")
    X = np.ones((5, 3))
    with pytest.raises(TypeError, match="must be a jacnet Sequential"):
        gauss_newton("not a model", X)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"residuals must have shape .*\(5, 2\)"):
        gauss_newton(model, X, np.ones((5, 3)))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        gauss_newton(model, X, chunk_size=0)
    with pytest.raises(ValueError, match="columns"):
        jtv(model, np.ones((5, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"grad_output must have shape"):
        per_sample_gradients(model, X, np.ones((4, 2)))
    with pytest.raises(ValueError, match="columns"):
        ntk(model, X, np.ones((2, 5)))


@pytest.mark.parametrize("sizes", [[3, 6, 2], [12, 40, 10], [5, 30, 20, 10]])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gauss_newton_writes_every_entry_of_a_reused_buffer(sizes, chunk_size) -> None:
    """The first chunk writes (not adds) every entry: stale buffer contents never leak."""
    model = mlp(sizes, activation="tanh", seed=0, dtype="float64")
    X = np.random.default_rng(0).normal(size=(9, sizes[0]))
    J = jacobian(model, X, wrt="params").reshape(-1, model.n_params)
    buffer = np.full((model.n_params, model.n_params), np.nan)
    result, _ = gauss_newton(model, X, chunk_size=chunk_size, out=buffer)
    assert result is buffer
    np.testing.assert_allclose(result, J.T @ J, rtol=1e-12, atol=1e-12)
    # the Kronecker path must be among those exercised
    blocks = curvature._factors(model, X, np.dtype(np.float64))
    uses_kron = any(kron < direct for i, a in enumerate(blocks) for j, b in enumerate(blocks)
                    if j >= i for direct, kron in [curvature._pair_costs(a, b, sizes[-1], i == j)])
    assert uses_kron or sizes == [3, 6, 2]


def test_gauss_newton_out_must_fit() -> None:
    model = mlp([3, 6, 2], activation="tanh", seed=0, dtype="float64")
    X = np.random.default_rng(0).normal(size=(7, 3))
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float64 array of shape"):
        gauss_newton(model, X, out=np.zeros((3, 3)))


# --------------------------------------------------------------- the direct (small-network) path
def _plain_networks():
    from jacnet.layers import Dropout, Identity, Linear, Tanh

    yield mlp([1, 6, 1], activation="tanh", seed=0, dtype="float64")
    yield mlp([3, 5, 4, 2], activation="relu", output_activation="sigmoid", seed=1,
              dtype="float64")
    yield Sequential([Linear(3, 4, seed=2), Linear(4, 2, bias=False, seed=3)], dtype="float64")
    yield Sequential([Dropout(0.3, seed=4), Linear(3, 5, seed=5), Tanh(),
                      Dropout(0.5, seed=6), Linear(5, 3, seed=7), Identity()], dtype="float64")


@pytest.mark.parametrize("index", range(4))
def test_write_param_jacobian_matches_the_operator_chain(index):
    """The direct writer and the structured operators give the same J, and the same
    block signature (which decides the Kronecker-or-direct plan)."""
    model = list(_plain_networks())[index]
    assert _is_plain(model)
    X = np.random.default_rng(index).normal(size=(9, model.in_features))
    model.forward(X)  # Dropout in training mode: both read the same masks
    op = _chain_jacobians(model, 9, "params")
    out = np.full(op.shape, np.nan)
    _write_param_jacobian(model, out)
    np.testing.assert_array_equal(out, op.dense())
    assert curvature._signature(model, None) == curvature._signature(model, op)


def test_write_param_jacobian_casts_a_float32_network_into_float64():
    model = mlp([2, 4, 3], seed=0, dtype="float32")
    X = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    model.forward(X)
    out = np.empty((5, 3, model.n_params))
    _write_param_jacobian(model, out)
    # The float32 factors, multiplied in float64 (as gauss_newton's Kronecker path does).
    op = _chain_jacobians(model, 5)
    wide = BlockRow([Kronecker(b.x.astype(np.float64), b.n_rows,
                               None if b.left is None else b.left.astype(np.float64))
                     for b in op.blocks])
    np.testing.assert_array_equal(out, wide.dense())


def test_gauss_newton_of_a_network_with_a_softmax_layer_uses_the_operators():
    from jacnet.layers import Linear, Softmax, Tanh

    model = Sequential([Linear(3, 4, seed=0), Tanh(), Linear(4, 1, seed=1)], dtype="float64")
    softmaxed = Sequential([Linear(3, 4, seed=0), Softmax(), Linear(4, 1, seed=1)],
                           dtype="float64")
    assert _is_plain(model) and not _is_plain(softmaxed)
    X = np.random.default_rng(0).normal(size=(12, 3))
    J = jacobian(softmaxed, X, wrt="params").reshape(12, -1)
    jtj, jte = gauss_newton(softmaxed, X, np.ones((12, 1)))
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jte, J.sum(axis=0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n, p", [(1000, 61), (1003, 40), (50, 61), (300, 200)])
@pytest.mark.parametrize("first", [True, False])
def test_add_gram_split_into_row_blocks_equals_one_product(n, p, first):
    rows = np.random.default_rng(n).normal(size=(n, p))
    start = np.random.default_rng(p).normal(size=(p, p))
    out = start.copy()
    curvature._add_gram(rows, out, first)
    expected = rows.T @ rows + (0.0 if first else start)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("with_scipy", [True, False])
@pytest.mark.parametrize("first", [True, False])
def test_add_gram_large_product_writes_the_lower_triangle_in_place(with_scipy, first,
                                                                   monkeypatch):
    # 300 · 300² multiply-adds: above _SPLIT_GEMM, BLAS syrk into `out` itself (SciPy),
    # else NumPy's product through the scratch array.
    if with_scipy:
        pytest.importorskip("scipy")
    else:
        monkeypatch.setattr(curvature, "_SYRK", [None])
    rows = np.random.default_rng(0).normal(size=(300, 300))
    start = np.random.default_rng(1).normal(size=(300, 300))
    out, scratch = start.copy(), np.empty_like(start)
    lower_only = curvature._add_gram(rows, out, first, scratch)
    expected = rows.T @ rows + (0.0 if first else start)
    assert lower_only == with_scipy
    np.testing.assert_allclose(np.tril(out), np.tril(expected), rtol=1e-12, atol=1e-10)
    if lower_only:  # the upper triangle is left as it was
        np.testing.assert_array_equal(np.triu(out, 1), np.triu(start, 1))
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("with_scipy", [True, False])
@pytest.mark.parametrize("plain", [True, False])
def test_gauss_newton_in_chunks_of_large_products_is_whole_and_symmetric(with_scipy, plain,
                                                                         monkeypatch):
    # 289 parameters, chunks of 256 rows (above _SPLIT_GEMM) and a last one of 88 (below):
    # layer by layer (a plain network) or by syrk (one with a Softmax layer) the lower
    # triangle is filled chunk by chunk, and the upper one is mirrored once.
    from jacnet.layers import Linear, Softmax, Tanh

    if not with_scipy:
        monkeypatch.setattr(curvature, "_SYRK", [None])
    layered = []
    real = curvature._add_layer_grams
    monkeypatch.setattr(curvature, "_add_layer_grams", lambda *a: layered.append(1) or real(*a))
    model = mlp([8, 16, 8, 1], seed=0, dtype="float64") if plain else Sequential(
        [Linear(8, 16, seed=0), Tanh(), Linear(16, 8, seed=1), Softmax(), Linear(8, 1, seed=2)],
        dtype="float64")
    X = np.random.default_rng(0).normal(size=(600, 8))
    J = jacobian(model, X, wrt="params").reshape(600, -1)
    buffer = np.full((model.n_params,) * 2, np.nan)
    jtj, jte = gauss_newton(model, X, np.ones((600, 1)), chunk_size=256, out=buffer)
    assert jtj is buffer
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(jtj, jtj.T)
    np.testing.assert_allclose(jte, J.sum(axis=0), rtol=1e-12, atol=1e-10)
    assert layered == ([1, 1, 1] if plain else [])


@pytest.mark.parametrize("size", [1, 63, 64, 130])
def test_mirror_lower_fills_the_upper_triangle(size):
    matrix = np.random.default_rng(size).normal(size=(size, size))
    expected = np.tril(matrix) + np.tril(matrix, -1).T
    curvature._mirror_lower(matrix)
    np.testing.assert_array_equal(matrix, expected)


def test_gauss_newton_frees_each_product_after_its_last_pair():
    """Three hidden layers give six LᵀL′ products of (1024, 48, 48) floats, 18 MiB each;
    keeping all of them for the whole chunk doubled the peak memory (168 MiB here)."""
    import tracemalloc

    model = mlp([2, 48, 48, 48, 4], seed=0, dtype="float64")
    X = np.random.default_rng(0).normal(size=(1024, 2))
    out = np.empty((model.n_params,) * 2)
    tracemalloc.start()
    try:
        gauss_newton(model, X, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 2**20, peak / 2**20
    J = jacobian(model, X[:64], wrt="params").reshape(64 * 4, -1)
    np.testing.assert_allclose(gauss_newton(model, X[:64])[0], J.T @ J, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["mse", "cross_entropy", "bce"])
@pytest.mark.parametrize("use_base", [False, True])
def test_curvature_sqrt_squares_to_the_unnormalised_curvature(name, use_base):
    from jacnet.losses import LOSSES, Loss
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3))
    target = rng.integers(0, 3, size=5) if name == "cross_entropy" else (
        rng.integers(0, 2, size=(5, 3)).astype(float) if name == "bce" else rng.normal(size=(5, 3)))
    loss = LOSSES[name]()
    root = (Loss.curvature_sqrt(loss, z, target) if use_base
            else loss.curvature_sqrt(z, target))
    full = np.stack([np.diag(r) for r in root]) if root.ndim == 2 else root
    hess = loss.curvature(z, target).dense() * z.shape[0]  # undo reduction="mean"
    np.testing.assert_allclose(full.transpose(0, 2, 1) @ full, hess, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------ G·v
from jacnet.curvature import ggn_vector_product  # noqa: E402
from jacnet.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, get_loss  # noqa: E402

GGN_CASES = [
    # sizes, activation, output activation, loss, batch
    ([1, 4, 1], "tanh", None, "mse", 7),
    ([3, 5, 4, 2], "tanh", None, "mse", 9),
    ([4, 6, 3], "sigmoid", None, "cross_entropy", 10),
    ([5, 7, 6, 3], "relu", None, "bce", 11),
    ([3, 5, 4], "tanh", "softmax", "mse", 8),  # a Softmax layer: not a plain network
    ([2, 6, 1], "sigmoid", None, "bce", 6),
]


def _ggn_data(sizes, activation, output_activation, loss_name, batch, seed=0):
    model = mlp(sizes, activation=activation, output_activation=output_activation, seed=seed,
                dtype="float64")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, sizes[0]))
    m = sizes[-1]
    if loss_name == "cross_entropy":
        target = rng.integers(0, m, size=batch)
    elif loss_name == "bce":
        target = rng.integers(0, 2, size=(batch, m)).astype(float)
    else:
        target = rng.normal(size=(batch, m))
    return model, X, target, rng


def _dense_ggn(model, loss, X, target, weights):
    """s Σ_b w_b J_bᵀ H_b J_b from the materialised Jacobian and the loss's curvature()
    (not the curvature_sqrt the product uses)."""
    prepared = loss.prepare_target(target, model.out_features, dtype=np.float64)
    prediction = model.forward(X)
    hess = loss.curvature(prediction, prepared).dense() / loss._scale(X.shape[0])
    J = jacobian(model, X, wrt="params")
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights)
    s = 1.0 / w.sum() if loss.reduction == "mean" else 1.0
    return s * np.einsum("b,bmp,bmn,bnq->pq", w, J, hess, J)


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("sizes, activation, output_activation, loss_name, batch", GGN_CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ggn_vector_product_matches_dense(sizes, activation, output_activation, loss_name,
                                          batch, weighted, chunk_size, reduction):
    model, X, target, rng = _ggn_data(sizes, activation, output_activation, loss_name, batch)
    loss = get_loss(loss_name, reduction=reduction)
    weights = rng.uniform(0.0, 3.0, size=batch) if weighted else None
    G = _dense_ggn(model, loss, X, target, weights)
    for _ in range(3):
        v = rng.normal(size=model.n_params)
        got = ggn_vector_product(model, loss, X, target, v, sample_weight=weights,
                                 chunk_size=chunk_size)
        assert got.shape == (model.n_params,) and got.dtype == np.float64
        assert _relative(got, G @ v) <= 1e-10


@pytest.mark.parametrize("sizes, activation, output_activation, loss_name, batch", GGN_CASES)
def test_ggn_vector_product_matches_gauss_newton_with_the_loss_root(
        sizes, activation, output_activation, loss_name, batch):
    # The factored JᵀHJ of gauss_newton with C_b √(w_b / Σw) against the matrix-free product.
    model, X, target, rng = _ggn_data(sizes, activation, output_activation, loss_name, batch)
    loss = get_loss(loss_name)
    weights = rng.uniform(0.5, 2.0, size=batch)
    prepared = loss.prepare_target(target, model.out_features, dtype=np.float64)
    root = loss.curvature_sqrt(model.forward(X), prepared)
    scale = np.sqrt(weights / weights.sum())
    root = root * (scale[:, None] if root.ndim == 2 else scale[:, None, None])
    jthj, _ = gauss_newton(model, X, curvature_sqrt=root)
    v = rng.normal(size=model.n_params)
    got = ggn_vector_product(model, loss, X, target, v, sample_weight=weights)
    assert _relative(got, jthj @ v) <= 1e-10


@pytest.mark.parametrize("sizes, activation, output_activation, loss_name, batch", GGN_CASES)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gauss_newton_operator_keeps_its_linearisation(sizes, activation, output_activation,
                                                       loss_name, batch, chunk_size):
    """Built once, the operator's products stay those of its θ and data although other
    forward passes ran in between (they overwrite the layers' caches); its Jᵀv is jtv's."""
    from jacnet.curvature import GaussNewtonOperator, jtv

    model, X, target, rng = _ggn_data(sizes, activation, output_activation, loss_name, batch)
    loss = get_loss(loss_name)
    weights = rng.uniform(0.5, 2.0, size=batch)
    G = _dense_ggn(model, loss, X, target, weights)
    op = GaussNewtonOperator(model, loss, X, target, sample_weight=weights,
                             chunk_size=chunk_size)
    assert op.shape == G.shape
    np.testing.assert_allclose(op.diagonal(), np.diag(G), rtol=1e-10, atol=1e-14)
    for _ in range(3):
        model.forward(rng.normal(size=(batch + 3, sizes[0])))  # other data in between
        v = rng.normal(size=model.n_params)
        assert _relative(op.matvec(v), G @ v) <= 1e-10
        assert _relative(op.rmatvec(v), G @ v) <= 1e-10
    rows = rng.normal(size=(batch, model.out_features))
    model.forward(rng.normal(size=(2, sizes[0])))
    np.testing.assert_allclose(op.jtv(rows), jtv(model, X, rows), rtol=1e-12, atol=1e-14)


def test_gauss_newton_operator_from_the_held_pass_and_a_changed_theta():
    from jacnet.curvature import GaussNewtonOperator

    model, X, target, rng = _ggn_data([3, 5, 2], "tanh", None, "cross_entropy", 9)
    loss = get_loss("cross_entropy")
    G = _dense_ggn(model, loss, X, target, None)
    prepared = loss.prepare_target(target, 2, dtype=np.float64)
    root = loss.curvature_sqrt(model.forward(X), prepared) / 3.0  # s = 1/9 = (1/3)²
    op = GaussNewtonOperator.from_forward_pass(model, 9, root, chunk_size=4)
    v = rng.normal(size=model.n_params)
    assert _relative(op.matvec(v), G @ v) <= 1e-10
    # diag(G) from the kept pass cut into chunks of 4 rows, then the products still whole
    np.testing.assert_allclose(op.diagonal(), np.diag(G), rtol=1e-10, atol=1e-14)
    assert _relative(op.matvec(v), G @ v) <= 1e-10
    with pytest.raises(ValueError, match="curvature_sqrt must have shape"):
        GaussNewtonOperator.from_forward_pass(model, 8, root)
    with pytest.raises(ValueError, match=r"v must have shape \(32,\)"):
        op.matvec(np.ones(3))
    model.params[0] += 1.0
    with pytest.raises(RuntimeError, match=r"model\.params changed since this operator"):
        op.matvec(v)


def test_ggn_vector_product_chunking_changes_only_rounding():
    model, X, target, rng = _ggn_data([4, 8, 5, 3], "tanh", None, "cross_entropy", 50)
    v = rng.normal(size=model.n_params)
    whole = ggn_vector_product(model, "cross_entropy", X, target, v)
    for chunk_size in (1, 7, 49, 50, 51):
        parts = ggn_vector_product(model, "cross_entropy", X, target, v, chunk_size=chunk_size)
        assert _relative(parts, whole) <= 1e-13


class _ScaledSquares(Loss):
    """½ Σ_k a_k (z_k − d_k)²: a custom loss that defines curvature only (its root comes
    from the base class's eigh)."""

    def __init__(self, a, reduction="mean"):
        super().__init__(reduction)
        self.a = np.asarray(a, dtype=float)

    def value_and_grad(self, prediction, target):
        diff = prediction - target
        scale = self._scale(prediction.shape[0])
        return 0.5 * scale * float(np.sum(self.a * diff * diff)), scale * self.a * diff

    def curvature(self, prediction, target):
        from jacnet.jacobians import PerSample
        scale = self._scale(prediction.shape[0])
        hess = np.zeros((prediction.shape[0],) + (prediction.shape[1],) * 2)
        idx = np.arange(prediction.shape[1])
        hess[:, idx, idx] = scale * self.a
        return PerSample(hess)


def test_ggn_vector_product_of_a_custom_loss():
    model, X, target, rng = _ggn_data([3, 5, 2], "tanh", None, "mse", 9)
    loss = _ScaledSquares([0.5, 3.0])
    v = rng.normal(size=model.n_params)
    got = ggn_vector_product(model, loss, X, target, v, chunk_size=4)
    assert _relative(got, _dense_ggn(model, loss, X, target, None) @ v) <= 1e-10


def test_ggn_vector_product_against_torch_hessian_of_the_linearised_loss():
    # Independent of jacnet's Jacobians: G = ∂²/∂δ² L(f(θ) + J δ) at δ = 0, by torch.func.
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, hessian, jvp

    model, X, target, rng = _ggn_data([4, 6, 3], "tanh", None, "cross_entropy", 10)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    params = {k: torch.tensor(value.copy()) for k, (_, value) in zip(names, model.named_parameters())}
    shapes = [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]
    Xt, yt = torch.tensor(X), torch.tensor(target)

    def unflatten(flat):
        return dict(zip(names, [t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes)]))

    def out(flat):
        return functional_call(net, unflatten(flat), (Xt,))

    theta = torch.tensor(model.params.copy())

    def linearised_loss(delta):
        z, dz = jvp(out, (theta,), (delta,))
        return torch.nn.functional.cross_entropy(z.detach() + dz, yt)

    G = hessian(linearised_loss)(torch.zeros_like(theta)).numpy()
    v = rng.normal(size=model.n_params)
    assert _relative(ggn_vector_product(model, CrossEntropyLoss(), X, target, v), G @ v) <= 1e-10


def test_products_leave_the_training_gradient_alone():
    model, X, target, rng = _ggn_data([3, 5, 2], "tanh", None, "mse", 9)
    model.grads[:] = rng.normal(size=model.n_params)
    before = model.grads.copy()
    ggn_vector_product(model, "mse", X, target, rng.normal(size=model.n_params), chunk_size=4)
    jtv(model, X, rng.normal(size=(9, 2)), chunk_size=4)
    gauss_newton(model, X, rng.normal(size=(9, 2)), chunk_size=4)
    assert np.array_equal(model.grads, before)
    # The views are bound back: a training backward still writes model.grads.
    model.forward(X)
    model.backward(np.ones((9, 2)))
    assert not np.array_equal(model.grads, before)
    np.testing.assert_allclose(model.grads, jtv(model, X, np.ones((9, 2))), rtol=1e-14)


def test_ggn_vector_product_error_paths():
    model, X, target, _ = _ggn_data([3, 4, 2], "tanh", None, "mse", 5)
    v = np.ones(model.n_params)
    with pytest.raises(TypeError, match="must be a jacnet Sequential"):
        ggn_vector_product("model", "mse", X, target, v)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"v must have shape \(26,\)"):
        ggn_vector_product(model, "mse", X, target, np.ones(21))
    with pytest.raises(ValueError, match="target has 4 rows but X has 5"):
        ggn_vector_product(model, "mse", X, target[:4], v)
    with pytest.raises(ValueError, match="sample_weight must hold one non-negative weight"):
        ggn_vector_product(model, "mse", X, target, v, sample_weight=-np.ones(5))
    with pytest.raises(ValueError, match="sample_weight must hold one non-negative weight"):
        ggn_vector_product(model, "mse", X, target, v, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ggn_vector_product(model, "mse", X, target, v, chunk_size=0)

    class NoCurvature(Loss):
        pass

    with pytest.raises(TypeError, match="NoCurvature has no curvature"):
        ggn_vector_product(model, NoCurvature(), X, target, v)

    class BadRoot(BCEWithLogitsLoss):
        def curvature_sqrt(self, prediction, target):
            return np.ones((prediction.shape[0], 5))

    with pytest.raises(ValueError, match="curvature_sqrt must have shape"):
        ggn_vector_product(model, BadRoot(), X, np.zeros((5, 2)), v)


def test_backward_into_out_and_param_only_jvp():
    from jacnet.layers import Linear, Tanh
    model, X, _, rng = _ggn_data([3, 5, 2], "tanh", None, "mse", 6)
    g = rng.normal(size=(6, 2))
    model.forward(X)
    model.backward(g)
    expected = model.grads.copy()
    model.grads[:] = 0.0
    out = np.empty(model.n_params)
    assert model.backward(g, input_grad=False, out=out) is None
    assert np.array_equal(out, expected) and not model.grads.any()
    with pytest.raises(ValueError, match=r"out must be a C-contiguous array of shape \(32,\)"):
        model.backward(g, out=np.empty(31))
    # A parameter direction alone, without the zero input tangent.
    v = rng.normal(size=model.n_params)
    _, with_zero = model.jvp(X, np.zeros_like(X), v)
    _, without = model._jvp(X, None, v)
    np.testing.assert_allclose(without, with_zero, rtol=1e-14, atol=1e-15)
    layer = Linear(3, 2, dtype="float64")
    layer.forward(X)
    with pytest.raises(ValueError, match="pass a tangent, a param_tangent or both"):
        layer.jvp(None)
    # A float64 gradient through a float32 activation stays float64.
    tanh = Tanh()
    tanh.forward(X.astype(np.float32))
    back = tanh.backward(g[:, :1].repeat(3, axis=1))
    assert back is not None and back.dtype == np.float64


# ------------------------------------------------------------------------------ diag(G), traces
from jacnet.curvature import ggn_diagonal, stochastic_lanczos_trace  # noqa: E402


@pytest.mark.parametrize("sizes, activation, output_activation, loss_name, batch", GGN_CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_ggn_diagonal_matches_dense(sizes, activation, output_activation, loss_name, batch,
                                    weighted, chunk_size):
    model, X, target, rng = _ggn_data(sizes, activation, output_activation, loss_name, batch)
    loss = get_loss(loss_name)
    weights = rng.uniform(0.0, 3.0, size=batch) if weighted else None
    expected = np.diag(_dense_ggn(model, loss, X, target, weights))
    got = ggn_diagonal(model, loss, X, target, sample_weight=weights, chunk_size=chunk_size)
    assert got.shape == (model.n_params,) and (got >= 0).all()
    assert _relative(got, expected) <= 1e-10


def test_ggn_diagonal_of_a_sum_reduction_and_without_bias():
    from jacnet.layers import Linear, Tanh
    rng = np.random.default_rng(3)
    model = Sequential([Linear(3, 4, bias=False, seed=0), Tanh(), Linear(4, 2, seed=1)],
                       dtype="float64")
    X, target = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    loss = get_loss("bce", reduction="sum")
    target = (target > 0).astype(float)
    expected = np.diag(_dense_ggn(model, loss, X, target, None))
    assert _relative(ggn_diagonal(model, loss, X, target), expected) <= 1e-10


def _spd(n, condition, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    values = np.geomspace(1.0, condition, n)
    return (q * values) @ q.T


def test_stochastic_lanczos_trace_is_exact_for_a_diagonal_matrix():
    # Rademacher probes make zᵀ f(D) z = tr f(D) for every probe; with as many steps as
    # distinct eigenvalues the quadrature is exact too.
    values = np.geomspace(0.1, 50.0, 40)
    exact = float(np.sum(1.0 / values))
    got = stochastic_lanczos_trace(lambda v: values * v, 40, n_probes=3, n_steps=40, seed=1)
    assert abs(got.estimate - exact) <= 1e-10 * exact and got.standard_error <= 1e-10 * exact
    # Three distinct eigenvalues: Lanczos stops after three steps, exactly.
    few = np.repeat([1.0, 2.0, 5.0], 10)
    got = stochastic_lanczos_trace(lambda v: few * v, 30, n_probes=2, n_steps=30, seed=0)
    assert abs(got.estimate - 10 * (1 + 0.5 + 0.2)) <= 1e-10
    # Too few nodes for 1/x: the quadrature can only underestimate (see the docstring).
    short = stochastic_lanczos_trace(lambda v: values * v, 40, n_probes=3, n_steps=4, seed=1)
    assert short.estimate < exact - 1e-3 * exact


def test_stochastic_lanczos_trace_of_an_inverse_within_its_standard_error():
    A = _spd(200, 100.0, seed=0)
    exact = float(np.trace(np.linalg.inv(A)))
    got = stochastic_lanczos_trace(lambda v: A @ v, 200, n_probes=40, n_steps=40, seed=2)
    assert abs(got.estimate - exact) <= 4 * got.standard_error
    # The documented bound on the standard error: √(2 / n_probes) ‖A⁻¹‖_F.
    bound = np.sqrt(2 / 40) * np.linalg.norm(np.linalg.inv(A))
    assert 0 < got.standard_error <= 1.5 * bound
    assert stochastic_lanczos_trace(lambda v: A @ v, 200, n_probes=5, seed=7) == \
        stochastic_lanczos_trace(lambda v: A @ v, 200, n_probes=5, seed=7)
    # tr((G + αI)⁻¹) of a network through its matrix-free product.
    model, X, target, _ = _ggn_data([3, 6, 2], "tanh", None, "mse", 30)
    alpha = 0.05
    G = _dense_ggn(model, get_loss("mse"), X, target, None)
    exact = float(np.trace(np.linalg.inv(G + alpha * np.eye(model.n_params))))
    got = stochastic_lanczos_trace(
        lambda v: ggn_vector_product(model, "mse", X, target, v) + alpha * v, model.n_params,
        n_probes=30, n_steps=model.n_params, seed=0)
    assert abs(got.estimate - exact) <= 4 * got.standard_error


def test_stochastic_lanczos_trace_error_paths():
    with pytest.raises(ValueError, match="matvec must map a vector of shape"):
        stochastic_lanczos_trace(lambda v: v[:-1], 5)
    with pytest.raises(ValueError, match="non-finite"):
        stochastic_lanczos_trace(lambda v: np.full_like(v, np.nan), 5)
    with pytest.raises(ValueError, match="n_probes"):
        stochastic_lanczos_trace(lambda v: v, 5, n_probes=0)


def _layered_models():
    """One-output networks: every block pair's product is cheaper from J's rows (the
    plan of :func:`curvature._plan`), the case the layer-by-layer path serves."""
    from jacnet.layers import Linear, Tanh
    return {
        "biases": mlp([3, 5, 4, 1], activation="tanh", seed=0, dtype="float64"),
        "no biases": Sequential([Linear(4, 6, bias=False, seed=1, dtype="float64"), Tanh(),
                                 Linear(6, 1, bias=False, seed=2, dtype="float64")]),
        "mixed": Sequential([Linear(4, 6, bias=False, seed=1, dtype="float64"), Tanh(),
                             Linear(6, 5, seed=2, dtype="float64"), Tanh(),
                             Linear(5, 1, bias=False, seed=3, dtype="float64")]),
        "output activation": mlp([4, 6, 1], activation="sigmoid", output_activation="sigmoid",
                                 seed=0, dtype="float64"),
        "one layer": mlp([3, 1], seed=0, dtype="float64"),
    }


@pytest.mark.parametrize("name", list(_layered_models()))
@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("lower_only", [False, True])
def test_gauss_newton_layer_by_layer_matches_dense(name, chunk_size, lower_only, monkeypatch):
    """A plain network's JᵀJ from each layer's packed symmetric diagonal block and the
    strips left of it (the path large products take) equals the dense product, in every
    entry of a reused buffer (the upper triangle too unless only the lower is asked)."""
    model = _layered_models()[name]
    calls, unpacked = [], []
    real, real_unpack = curvature._add_layer_grams, curvature._unpack_layer_gram
    monkeypatch.setattr(curvature, "_add_layer_grams", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(curvature, "_unpack_layer_gram",
                        lambda *a: unpacked.append(a[1].cols) or real_unpack(*a))
    monkeypatch.setattr(curvature, "_SPLIT_GEMM", 0)  # every product counts as large
    rng = np.random.default_rng(0)
    X = rng.normal(size=(13, model.in_features))
    e = rng.normal(size=(13, model.out_features))
    J = jacobian(model, X, wrt="params").reshape(-1, model.n_params)
    buffer = np.full((model.n_params,) * 2, np.nan)
    step = 1024 if chunk_size is None else chunk_size
    jtj, jte = curvature._gram(model, X, e, None, step, np.dtype(np.float64), buffer,
                               lower_only=lower_only)
    assert jtj is buffer and calls == [1] * -(-13 // step)
    # Packed: the hidden layers; a one-output layer's block comes from its rows of J.
    assert len(unpacked) == {"biases": 2, "no biases": 1, "mixed": 2, "output activation": 1,
                             "one layer": 0}[name]
    expected = J.T @ J
    if lower_only:
        jtj, expected = np.tril(jtj), np.tril(expected)
    np.testing.assert_allclose(jtj, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jte, J.T @ e.ravel(), rtol=1e-12, atol=1e-12)


def test_gauss_newton_layer_by_layer_of_a_float32_network_accumulates_in_float64(monkeypatch):
    monkeypatch.setattr(curvature, "_SPLIT_GEMM", 0)
    model = mlp([3, 6, 5, 1], activation="tanh", seed=0, dtype="float32")
    X = np.random.default_rng(0).normal(size=(11, 3)).astype(np.float32)
    model.forward(X)
    rows = np.empty((11, 1, model.n_params))
    _write_param_jacobian(model, rows)  # float64 products of the float32 factors
    rows = rows.reshape(-1, model.n_params)
    jtj, _ = gauss_newton(model, X, dtype="float64", chunk_size=4)
    assert jtj.dtype == np.float64
    np.testing.assert_allclose(jtj, rows.T @ rows, rtol=1e-12, atol=1e-12)


def test_write_param_jacobian_returns_each_layers_factors():
    model = mlp([3, 5, 2], activation="tanh", seed=0, dtype="float64")
    X = np.random.default_rng(0).normal(size=(4, 3))
    model.forward(X)
    rows = np.empty((4, 2, model.n_params))
    top, bottom = _write_param_jacobian(model, rows)
    assert (top.cols, bottom.cols) == (slice(20, 32), slice(0, 20))
    assert top.left is None and top.bias and bottom.bias
    np.testing.assert_array_equal(top.x, model.layers[2]._x)
    np.testing.assert_array_equal(bottom.x, X)
    # L = ∂z/∂(first layer's output): the bias columns of J
    np.testing.assert_array_equal(bottom.left, rows[:, :, 15:20])
