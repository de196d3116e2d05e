"""Structured Jacobian operators for a batch of samples.

The seed's central idea: back-propagation multiplies an output gradient (a row vector)
by a layer's Jacobian to get the input gradient. The Jacobians that occur in an MLP have
structure that makes this cheap, and this module keeps it:

=============  ================================  =======================================
operator       per-sample matrix J (m × n)        where it occurs
=============  ================================  =======================================
Identity       I_n                               the start of a chain
Diagonal       diag(d_b)                         elementwise activations, ∂z/∂s
Matrix         A (the same for every sample)     a linear layer w.r.t. its input, ∂s/∂y = W
PerSample      J_b (dense)                       softmax, and products of the above
Kronecker      L_b ⊗ x_bᵀ  (L = I by default)    a linear layer w.r.t. vec(W): I ⊗ yᵀ
BlockRow       [J¹ J² …] (side by side)          a layer or network w.r.t. all its parameters
=============  ================================  =======================================

Every operator describes ``batch_size`` matrices of shape ``(n_out, n_in)`` at once and
supports:

- ``vjp(v)`` — row vector times J: ``v`` of shape (B, m) gives (B, n). A stack of r
  row vectors per sample, shape (B, r, m), gives (B, r, n).
- ``jvp(u)`` — J times a column vector: ``u`` of shape (B, n) gives (B, m); a stack of
  r tangents (B, r, n) gives (B, r, m).
- ``outer @ inner`` — composition (the chain rule), keeping structure where it can.
- ``dense()`` — the materialised array of shape (B, m, n).

Examples
--------
The seed's ∂z/∂s · ∂s/∂y for one sample: a diagonal times the weight matrix.

>>> import numpy as np
>>> W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
>>> dz_ds = Diagonal(np.array([[0.5, 0.25, 1.0]]))
>>> chain = dz_ds @ Matrix(W, batch_size=1)
>>> chain
PerSample(batch_size=1, shape=(3, 2))
>>> chain.vjp(np.array([[1.0, 1.0, 1.0]]))       # (∂E/∂z) · J
array([[6.25, 8. ]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _rows(array: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Insert the stack axis into a (B, k) per-sample array when ``like`` is (B, r, k)."""
    return array[:, None, :] if like.ndim == 3 else array


class JacobianOperator:
    """A batch of Jacobian matrices, one ``(n_out, n_in)`` matrix per sample.

    Subclasses implement ``vjp``, ``jvp`` and ``dense``; composition falls back to
    pushing the rows of the outer operator through the inner one's VJP.
    """

    batch_size: int
    n_out: int
    n_in: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(batch_size, n_out, n_in)``, the shape of :meth:`dense`."""
        return (self.batch_size, self.n_out, self.n_in)

    def vjp(self, v: np.ndarray) -> np.ndarray:
        """Row vector(s) times J: (B, m) → (B, n), or (B, r, m) → (B, r, n)."""
        raise NotImplementedError

    def jvp(self, u: np.ndarray) -> np.ndarray:
        """J times column vector(s): (B, n) → (B, m), or (B, r, n) → (B, r, m)."""
        raise NotImplementedError

    def dense(self) -> np.ndarray:
        """The materialised Jacobians, shape (B, m, n)."""
        raise NotImplementedError

    def __matmul__(self, inner: JacobianOperator) -> JacobianOperator:
        return compose(self, inner)

    #: What the operator stores, in a few words (shown by the notebook display).
    structure: str = "a Jacobian per sample"
    #: Largest m·n for which the notebook display writes out the matrix of sample 0.
    _html_max_entries = 64

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, "
            f"shape=({self.n_out}, {self.n_in}))"
        )

    def _repr_html_(self) -> str:
        """Notebook display: structure, shape and, for small sizes, sample 0's matrix."""
        from html import escape
        head = (f"<div><b>{type(self).__name__}</b> — {escape(self.structure)}; "
                f"{self.batch_size} sample{'s' if self.batch_size != 1 else ''} of "
                f"{self.n_out} × {self.n_in}</div>")
        if self.n_out * self.n_in > self._html_max_entries or self.batch_size == 0:
            return head + (f"<div>(matrix not shown: {self.n_out * self.n_in} entries per "
                           "sample; call <code>.dense()</code>)</div>")
        matrix = self.dense()[0]
        rows = "".join("<tr>" + "".join(f"<td>{value:.4g}</td>" for value in row) + "</tr>"
                       for row in matrix)
        caption = "sample 0" if self.batch_size > 1 else "the matrix"
        return head + f"<table><caption>{caption}</caption><tbody>{rows}</tbody></table>"


class Identity(JacobianOperator):
    """The identity I_n for every sample (where a chain of Jacobians starts).

    >>> Identity(2, batch_size=1).dense()
    array([[[1., 0.],
            [0., 1.]]])
    """

    structure = 'the identity I (nothing stored)'

    def __init__(self, n: int, batch_size: int, dtype: np.dtype | type = np.float64) -> None:
        self.n_out = self.n_in = n
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)

    def vjp(self, v: np.ndarray) -> np.ndarray:
        return v

    def jvp(self, u: np.ndarray) -> np.ndarray:
        return u

    def dense(self) -> np.ndarray:
        eye = np.eye(self.n_in, dtype=self.dtype)
        return np.broadcast_to(eye, self.shape).copy()


class Diagonal(JacobianOperator):
    """diag(d_b) per sample: the Jacobian of an elementwise function.

    Parameters
    ----------
    diagonal : ndarray, shape (B, n)
        The derivative f′(x) of each sample, elementwise.

    >>> D = Diagonal(np.array([[2.0, 3.0]]))
    >>> D.vjp(np.array([[1.0, 1.0]])), D.dense()[0]
    (array([[2., 3.]]), array([[2., 0.],
           [0., 3.]]))
    """

    structure = 'diagonal: only diag(f′) is stored, one vector per sample'

    def __init__(self, diagonal: np.ndarray) -> None:
        self.diagonal = diagonal
        self.batch_size, self.n_in = diagonal.shape
        self.n_out = self.n_in

    def vjp(self, v: np.ndarray) -> np.ndarray:
        return v * _rows(self.diagonal, v)

    def jvp(self, u: np.ndarray) -> np.ndarray:
        return u * _rows(self.diagonal, u)

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=self.diagonal.dtype)
        idx = np.arange(self.n_in)
        out[:, idx, idx] = self.diagonal
        return out


class Matrix(JacobianOperator):
    """The same matrix A (m × n) for every sample: ∂(W y)/∂y = W.

    >>> M = Matrix(np.array([[1.0, 2.0]]), batch_size=2)
    >>> M.jvp(np.array([[1.0, 1.0], [0.0, 1.0]]))
    array([[3.],
           [2.]])
    """

    structure = 'one matrix shared by every sample (∂(W y)/∂y = W)'

    def __init__(self, matrix: np.ndarray, batch_size: int) -> None:
        self.matrix = matrix
        self.n_out, self.n_in = matrix.shape
        self.batch_size = batch_size

    def vjp(self, v: np.ndarray) -> np.ndarray:
        return v @ self.matrix

    def jvp(self, u: np.ndarray) -> np.ndarray:
        return u @ self.matrix.T

    def dense(self) -> np.ndarray:
        return np.broadcast_to(self.matrix, self.shape).copy()


class PerSample(JacobianOperator):
    """A dense Jacobian J_b of its own for every sample.

    Parameters
    ----------
    jacobians : ndarray, shape (B, m, n)
    """

    structure = 'a dense matrix per sample'

    def __init__(self, jacobians: np.ndarray) -> None:
        self.jacobians = jacobians
        self.batch_size, self.n_out, self.n_in = jacobians.shape

    def vjp(self, v: np.ndarray) -> np.ndarray:
        if v.ndim == 2:
            return np.einsum("bm,bmn->bn", v, self.jacobians)
        return np.matmul(v, self.jacobians)

    def jvp(self, u: np.ndarray) -> np.ndarray:
        if u.ndim == 2:
            return np.einsum("bmn,bn->bm", self.jacobians, u)
        return np.matmul(u, self.jacobians.transpose(0, 2, 1))

    def dense(self) -> np.ndarray:
        return self.jacobians


class Kronecker(JacobianOperator):
    """L_b ⊗ x_bᵀ per sample: a linear layer's output w.r.t. its weights, vec(W) row-major.

    With ``left=None`` this is the seed's ∂s/∂vec(W) = I_k ⊗ yᵀ, a k × (k·n) matrix
    whose only non-zeros are k copies of yᵀ. Composing an outer Jacobian A on the
    left keeps the form: A (I ⊗ xᵀ) = A ⊗ xᵀ, so a whole network's Jacobian w.r.t.
    a layer's weights is stored as the pair (A, x) and its zeros are never formed.

    Parameters
    ----------
    x : ndarray, shape (B, n)
        The layer's input (one row per sample).
    n_rows : int
        k, the number of rows of W (the layer's outputs).
    left : ndarray, shape (B, m, k), optional
        The factor L_b; None means the identity I_k (then m = k).

    Examples
    --------
    >>> y = np.array([[1.0, 2.0]])
    >>> K = Kronecker(y, n_rows=2)            # I_2 ⊗ yᵀ
    >>> K.dense()[0]
    array([[1., 2., 0., 0.],
           [0., 0., 1., 2.]])
    >>> K.vjp(np.array([[3.0, 5.0]]))         # δ yᵀ, flattened: ∂E/∂vec(W)
    array([[ 3.,  6.,  5., 10.]])
    """

    structure = 'Kronecker-structured L ⊗ xᵀ: only x (and L) stored, the zeros never formed'

    def __init__(self, x: np.ndarray, n_rows: int, left: np.ndarray | None = None) -> None:
        self.x = x
        self.left = left
        self.n_rows = n_rows
        self.batch_size, n = x.shape
        self.n_in = n_rows * n
        self.n_out = n_rows if left is None else left.shape[1]

    def vjp(self, v: np.ndarray) -> np.ndarray:
        grad_rows = v if self.left is None else PerSample(self.left).vjp(v)
        outer = grad_rows[..., :, None] * (self.x[:, None, None, :] if v.ndim == 3 else
                                          self.x[:, None, :])
        return outer.reshape(*v.shape[:-1], self.n_in)

    def jvp(self, u: np.ndarray) -> np.ndarray:
        per_row = u.reshape(*u.shape[:-1], self.n_rows, self.x.shape[1])
        projected = np.einsum("b...kn,bn->b...k", per_row, self.x)
        return projected if self.left is None else PerSample(self.left).jvp(projected)

    def dense(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=self._dense_dtype())
        self._write_dense(out)
        return out

    def _dense_dtype(self) -> np.dtype:
        return self.x.dtype if self.left is None else np.result_type(self.left, self.x)

    def _write_dense(self, out: np.ndarray) -> None:
        """Write :meth:`dense` into ``out`` (B, m, k·n), which may be a column slice."""
        n = self.x.shape[1]
        # Splitting the contiguous last axis k·n into (k, n) is always a view.
        out4 = out.reshape(self.batch_size, self.n_out, self.n_rows, n)
        if self.left is None:
            # I ⊗ xᵀ: zeros except x on the diagonal blocks; no multiplications by 0 or 1.
            if self.n_rows == 1:
                out4[:, 0, 0, :] = self.x
                return
            out4[...] = 0
            rows = np.arange(self.n_rows)
            out4[:, rows, rows, :] = self.x[:, None, :]
        elif n == 1:
            # A bias, or a one-input layer: keep the innermost loop over k, not over n = 1.
            np.multiply(self.left, self.x[:, :, None], out=out4[:, :, :, 0])
        else:
            np.multiply(self.left[:, :, :, None], self.x[:, None, None, :], out=out4)


class BlockRow(JacobianOperator):
    """Jacobians side by side, [J¹ J² …]: one output w.r.t. several parameter groups.

    The columns follow the order of ``blocks``; for a network that is the order of its
    flat parameter vector θ = (vec(W₁), b₁, vec(W₂), b₂, …).

    Parameters
    ----------
    blocks : sequence of JacobianOperator
        All with the same ``batch_size`` and ``n_out``.
    names : sequence of str, optional
        A label per block (``"0.weight"``).
    """

    structure = 'blocks side by side [J¹ J² …], one per parameter group'

    def __init__(self, blocks: Sequence[JacobianOperator], names: Sequence[str] | None = None):
        if not blocks:
            raise ValueError("BlockRow needs at least one block.")
        self.blocks = list(blocks)
        self.names = list(names) if names is not None else [str(i) for i in range(len(blocks))]
        self.batch_size = self.blocks[0].batch_size
        self.n_out = self.blocks[0].n_out
        for i, block in enumerate(self.blocks):
            if (block.batch_size, block.n_out) != (self.batch_size, self.n_out):
                raise ValueError(
                    f"BlockRow: block {i} is {block.shape} (batch, out, in) but block 0 has "
                    f"batch {self.batch_size} and {self.n_out} outputs; blocks side by side "
                    "must share both.")
        self.n_in = sum(block.n_in for block in self.blocks)
        bounds = np.cumsum([0] + [block.n_in for block in self.blocks])
        self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def vjp(self, v: np.ndarray) -> np.ndarray:
        return np.concatenate([block.vjp(v) for block in self.blocks], axis=-1)

    def jvp(self, u: np.ndarray) -> np.ndarray:
        total = self.blocks[0].jvp(u[..., self.slices[0]])
        for block, cols in zip(self.blocks[1:], self.slices[1:]):
            total = total + block.jvp(u[..., cols])
        return total

    def dense(self, out: np.ndarray | None = None) -> np.ndarray:
        """The materialised Jacobians (B, m, P); with ``out`` (that shape, any float dtype
        the values cast to safely) written there: a caller that materialises repeatedly
        reuses one array."""
        if out is not None and out.shape != self.shape:
            raise ValueError(f"BlockRow.dense: out must have shape {self.shape}; got {out.shape}.")
        if not all(isinstance(block, Kronecker) for block in self.blocks):
            full = np.concatenate([block.dense() for block in self.blocks], axis=-1)
            if out is None:
                return full
            out[...] = full
            return out
        # Every block writes its own columns of one preallocated array: the (B, m, P)
        # result is written once, not built per block and then copied by concatenate.
        kron = [block for block in self.blocks if isinstance(block, Kronecker)]
        if out is None:
            out = np.empty(self.shape, dtype=np.result_type(*(b._dense_dtype() for b in kron)))
        for block, cols in zip(kron, self.slices):
            block._write_dense(out[..., cols])
        return out


def compose(outer: JacobianOperator, inner: JacobianOperator) -> JacobianOperator:
    """The chain rule: the Jacobian of f∘g is J_f · J_g, computed with structure kept.

    Parameters
    ----------
    outer : JacobianOperator
        J_f, shape (B, m, k) per sample.
    inner : JacobianOperator
        J_g, shape (B, k, n).

    Returns
    -------
    JacobianOperator
        J_f · J_g, shape (B, m, n). Diagonal·Diagonal stays diagonal, Matrix·Matrix
        stays shared, anything·Kronecker stays Kronecker, and a BlockRow composes
        block by block; other pairs become :class:`PerSample`.

    Raises
    ------
    ValueError
        If the inner dimensions or batch sizes differ.
    """
    if outer.n_in != inner.n_out or outer.batch_size != inner.batch_size:
        raise ValueError(
            f"cannot compose Jacobians: outer is {outer.shape} (batch, out, in) and inner "
            f"is {inner.shape}; the outer's inputs must be the inner's outputs."
        )
    if isinstance(inner, Identity):
        return outer
    if isinstance(outer, Identity):
        return inner
    if isinstance(inner, BlockRow):
        return BlockRow([outer @ block for block in inner.blocks], inner.names)
    if isinstance(inner, Kronecker):
        left = outer.dense() if inner.left is None else (outer @ PerSample(inner.left)).dense()
        return Kronecker(inner.x, inner.n_rows, left=left)
    if isinstance(outer, Diagonal) and isinstance(inner, Diagonal):
        return Diagonal(outer.diagonal * inner.diagonal)
    if isinstance(outer, Matrix) and isinstance(inner, Matrix):
        return Matrix(outer.matrix @ inner.matrix, outer.batch_size)
    if isinstance(outer, Diagonal) and isinstance(inner, Matrix):
        return PerSample(outer.diagonal[:, :, None] * inner.matrix)
    if isinstance(outer, Matrix) and isinstance(inner, Diagonal):
        return PerSample(outer.matrix * inner.diagonal[:, None, :])
    # General case: push every row of the outer Jacobian through the inner VJP.
    return PerSample(inner.vjp(outer.dense()))
