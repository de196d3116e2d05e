"""The structured Jacobian operators: vjp, jvp, dense and composition agree with dense algebra."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jacnet.jacobians import (
    BlockRow,
    Diagonal,
    Identity,
    JacobianOperator,
    Kronecker,
    Matrix,
    PerSample,
    compose,
)

B = 3
rng = np.random.default_rng(0)


def _operators(m: int, n: int) -> dict[str, JacobianOperator]:
    """One of each kind, every one of shape (B, m, n) per sample where the kind allows it."""
    ops: dict[str, JacobianOperator] = {
        "Matrix": Matrix(rng.normal(size=(m, n)), batch_size=B),
        "PerSample": PerSample(rng.normal(size=(B, m, n))),
    }
    if m == n:
        ops["Diagonal"] = Diagonal(rng.normal(size=(B, n)))
        ops["Identity"] = Identity(n, B)
    return ops


def _dense_vjp(op: JacobianOperator, v: np.ndarray) -> np.ndarray:
    d = op.dense()
    return np.einsum("bm,bmn->bn", v, d) if v.ndim == 2 else np.einsum("brm,bmn->brn", v, d)


def _dense_jvp(op: JacobianOperator, u: np.ndarray) -> np.ndarray:
    d = op.dense()
    return np.einsum("bmn,bn->bm", d, u) if u.ndim == 2 else np.einsum("bmn,brn->brm", d, u)


ALL = {
    **_operators(4, 4),
    "Kronecker": Kronecker(rng.normal(size=(B, 2)), n_rows=4),
    "Kronecker-left": Kronecker(rng.normal(size=(B, 3)), n_rows=2, left=rng.normal(size=(B, 4, 2))),
    "BlockRow": BlockRow([Kronecker(rng.normal(size=(B, 2)), 4), Diagonal(rng.normal(size=(B, 4)))]),
}


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("stacked", [False, True])
def test_vjp_and_jvp_agree_with_dense(name: str, stacked: bool) -> None:
    op = ALL[name]
    _, m, n = op.shape
    v = rng.normal(size=(B, 2, m) if stacked else (B, m))
    u = rng.normal(size=(B, 2, n) if stacked else (B, n))
    np.testing.assert_allclose(op.vjp(v), _dense_vjp(op, v), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(op.jvp(u), _dense_jvp(op, u), rtol=1e-13, atol=1e-13)


def test_kronecker_is_identity_kron_x_transposed() -> None:
    x = rng.normal(size=(B, 3))
    dense = Kronecker(x, n_rows=2).dense()
    for b in range(B):
        np.testing.assert_array_equal(dense[b], np.kron(np.eye(2), x[b][None, :]))
    left = rng.normal(size=(B, 5, 2))
    dense_left = Kronecker(x, n_rows=2, left=left).dense()
    for b in range(B):
        np.testing.assert_allclose(dense_left[b], np.kron(left[b], x[b][None, :]), rtol=1e-14)


@pytest.mark.parametrize(
    ("outer", "inner"),
    list(itertools.product(["Matrix", "PerSample", "Diagonal", "Identity"], repeat=2)),
)
def test_composition_is_the_matrix_product(outer: str, inner: str) -> None:
    a, b = _operators(4, 4)[outer], _operators(4, 4)[inner]
    composed = a @ b
    np.testing.assert_allclose(composed.dense(), a.dense() @ b.dense(), rtol=1e-13, atol=1e-13)


def test_composition_keeps_structure() -> None:
    d1, d2 = Diagonal(rng.normal(size=(B, 4))), Diagonal(rng.normal(size=(B, 4)))
    m1, m2 = Matrix(rng.normal(size=(4, 4)), B), Matrix(rng.normal(size=(4, 3)), B)
    assert isinstance(d1 @ d2, Diagonal)
    assert isinstance(m1 @ m2, Matrix)
    kron = Kronecker(rng.normal(size=(B, 3)), n_rows=4)
    chained = d1 @ kron
    assert isinstance(chained, Kronecker) and chained.left is not None
    np.testing.assert_allclose(chained.dense(), d1.dense() @ kron.dense(), rtol=1e-14)
    rows = m1 @ BlockRow([kron, Identity(4, B)])
    assert isinstance(rows, BlockRow)
    assert isinstance(rows.blocks[0], Kronecker)
    np.testing.assert_allclose(
        rows.dense(), m1.dense() @ np.concatenate([kron.dense(), Identity(4, B).dense()], -1),
        rtol=1e-13)


def test_compose_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="outer's inputs must be the inner's outputs"):
        compose(Matrix(np.ones((2, 3)), B), Matrix(np.ones((4, 2)), B))
    with pytest.raises(ValueError, match="needs at least one block"):
        BlockRow([])


def test_block_row_rejects_blocks_of_different_heights() -> None:
    with pytest.raises(ValueError, match="blocks side by side must share both"):
        BlockRow([Matrix(np.ones((2, 3)), B), Matrix(np.ones((4, 3)), B)])


@pytest.mark.parametrize("kronecker_only", [True, False])
def test_block_row_dense_into_a_given_array(kronecker_only: bool) -> None:
    x = rng.normal(size=(B, 3))
    blocks: list[JacobianOperator] = [Kronecker(x, 2, rng.normal(size=(B, 4, 2))),
                                      Kronecker(np.ones((B, 1)), 4)]
    if not kronecker_only:
        blocks.append(PerSample(rng.normal(size=(B, 4, 5))))
    op = BlockRow(blocks)
    out = np.full(op.shape, np.nan)
    assert op.dense(out) is out
    np.testing.assert_array_equal(out, np.concatenate([b.dense() for b in blocks], axis=-1))
    with pytest.raises(ValueError, match=r"out must have shape \(3, 4, 1[05]\)"):
        op.dense(np.empty((B, 4, 9)))
