"""Curvature of a network's loss: JᵀJ, Jᵀv, G·v, per-sample gradients, the NTK.

Two kinds of product live here. The matrix-free ones never hold a Jacobian, only one
chunk's forward pass:

- **Jᵀv** = Σ_b J_bᵀ v_b is one backward pass (a VJP) of v, whatever the number of
  outputs (:func:`jtv`).
- **G·v**, the generalised Gauss–Newton matrix G = s Σ_b w_b J_bᵀ H_b J_b times a
  vector, is a forward pass carrying the tangent J v (forward mode, a JVP), the loss's
  curvature H_b = C_bᵀC_b applied to each sample's tangent, and one backward pass
  (:func:`ggn_vector_product`): what a conjugate-gradient solve of (G + μI)Δ = g needs,
  at O(B·m + P) memory.

The others work from the factored Jacobian:

:func:`jacnet.network.jacobian` keeps a network's Jacobian w.r.t. θ as factors: for every
parameter block l (a weight or a bias), sample b's rows are L_b ⊗ x_bᵀ with L_b = ∂z/∂s_l
of shape (m, k) (the identity for the last layer) and x_b the block's input (n,) (a one
for a bias). The zero blocks of I ⊗ xᵀ are never formed, and neither is J here:

- **Gauss–Newton matrix** JᵀJ = Σ_b J_bᵀ J_b, block pair (l, l′) by the Kronecker identity
  (L ⊗ xᵀ)ᵀ(L′ ⊗ x′ᵀ) = (LᵀL′) ⊗ (x x′ᵀ): entry [(i, j), (i′, j′)] = Σ_b M_b[i, i′] x_b[j]
  x′_b[j′] with M_b = L_bᵀ L′_b — one matrix product over the batch axis. When m is small
  (m = 1 for a scalar output) the product of the materialised rows of the two blocks,
  (B·m, P_l)ᵀ(B·m, P_l′), costs fewer operations; each block pair takes the cheaper one.
  Diagonal block pairs compute only their upper half, and the output layer, whose L is
  the identity, is I_k ⊗ XᵀX.
- **Per-sample gradients** J_bᵀ g_b, shape (B, P).
- **Empirical neural tangent kernel** J(X₁) J(X₂)ᵀ: Σ_l (L₁ L₂ᵀ) ⊙ (X₁ X₂ᵀ).

Samples are processed in chunks of ``chunk_size``, so memory is bounded by the chunk's
factors, not by the (B·m, P) Jacobian.

Examples
--------
>>> from jacnet.network import jacobian, mlp
>>> model = mlp([2, 3, 1], seed=0, dtype="float64")
>>> X = np.arange(8.0).reshape(4, 2) / 8
>>> jtj, jte = gauss_newton(model, X, residuals=np.ones((4, 1)))
>>> J = jacobian(model, X, wrt="params").reshape(4, -1)
>>> bool(np.allclose(jtj, J.T @ J)), bool(np.allclose(jte, J.sum(axis=0)))
(True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from jacnet._validation import as_float_dtype, check_array, check_positive_int
from jacnet.jacobians import BlockRow, Kronecker
from jacnet.layers import Linear
from jacnet.losses import Loss, get_loss
from jacnet.network import (
    LinearFactors,
    Sequential,
    _chain_jacobians,
    _forward_caches,
    _is_plain,
    _restore_caches,
    _slice_caches,
    _write_param_jacobian,
)

__all__ = ["GaussNewtonOperator", "TraceEstimate", "gauss_newton", "ggn_diagonal",
           "ggn_vector_product", "jtv", "ntk", "per_sample_gradients", "stochastic_lanczos_trace"]

#: Default number of samples per chunk.
DEFAULT_CHUNK_SIZE = 1024
#: Entries of the intermediate (rows × n n′) product computed at once in the Kronecker path.
_KRON_TILE = 1 << 22


@dataclass
class _Block:
    """One parameter block's factors for a chunk: rows L_b ⊗ x_bᵀ, columns ``cols``."""

    x: np.ndarray  # (B, n)
    n_rows: int  # k
    left: np.ndarray | None  # (B, m, k), None = identity
    cols: slice

    @property
    def size(self) -> int:
        return self.n_rows * self.x.shape[1]

    def rows(self) -> np.ndarray:
        """The materialised rows of this block, shape (B·m, k·n)."""
        op = Kronecker(self.x, self.n_rows, self.left)
        return op.dense().reshape(-1, self.size)


def _check_model(model: Any, owner: str) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(
            f"{owner}: model must be a jacnet Sequential; got {type(model).__name__}. Build "
            "one with jacnet.mlp([...]) or Sequential([...])."
        )
    if model.n_params == 0:
        raise ValueError(f"{owner}: the model has no parameters, so there is nothing to differentiate.")
    return model


def _check_chunk_size(chunk_size: Any, owner: str) -> int:
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"{owner}: chunk_size must be a positive int or None; got {chunk_size!r}.")
    return int(chunk_size)


def _check_per_sample(values: Any, name: str, n_samples: int, n_outputs: int, owner: str,
                      dtype: np.dtype[Any]) -> np.ndarray:
    arr = check_array(values, name, ndim=(1, 2), dtype=dtype, owner=owner)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape != (n_samples, n_outputs):
        raise ValueError(
            f"{owner}: {name} must have shape (n_samples, n_outputs) = ({n_samples}, "
            f"{n_outputs}), one row per sample of X; got {arr.shape}."
        )
    return arr


def _factor_op(model: Sequential, X: np.ndarray, forward: bool = True) -> BlockRow:
    """The structured parameter Jacobian of ``X`` (with ``forward=False``, of the forward
    pass on ``X`` that the layers have cached)."""
    if forward:
        model.forward(X)
    op = _chain_jacobians(model, X.shape[0], "params")
    assert isinstance(op, BlockRow)
    return op


def _factors(model: Sequential, X: np.ndarray, dtype: np.dtype[Any]) -> list[_Block]:
    """The parameter Jacobian of ``X`` as blocks of factors, cast to ``dtype``."""
    return _blocks(_factor_op(model, X), dtype)


def _blocks(op: BlockRow, dtype: np.dtype[Any]) -> list[_Block]:
    blocks = []
    cast: dict[int, np.ndarray] = {}  # a weight and its bias share L: keep it shared
    for block, cols in zip(op.blocks, op.slices):
        assert isinstance(block, Kronecker)
        left = None
        if block.left is not None:
            if id(block.left) not in cast:
                cast[id(block.left)] = block.left.astype(dtype, copy=False)
            left = cast[id(block.left)]
        blocks.append(_Block(block.x.astype(dtype, copy=False), block.n_rows, left, cols))
    return blocks


def _chunks(n_samples: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, n_samples, chunk_size):
        yield slice(start, min(start + chunk_size, n_samples))


# ------------------------------------------------------------------------------ JᵀJ
def _pair_costs(a: _Block, b: _Block, n_outputs: int, diagonal: bool) -> tuple[float, float]:
    """Operation counts of (direct, Kronecker) for one block pair, per sample."""
    half = 0.5 if diagonal else 1.0
    direct = 2.0 * n_outputs * a.size * b.size * half
    if a.left is None and b.left is None:
        return direct, 2.0 * a.x.shape[1] * b.x.shape[1]
    kron = 2.0 * a.size * b.size * half + a.x.shape[1] * b.x.shape[1]
    if a.left is not None and b.left is not None:
        kron += 2.0 * n_outputs * a.n_rows * b.n_rows
    # The transposed accumulation into the output is memory-bound; charge it per entry.
    return direct, kron + 4.0 * a.size * b.size * half / max(1, n_outputs)


def _signature(model: Sequential, op: BlockRow | None) -> tuple[tuple[int, int, bool], ...]:
    """Each parameter block's (k, n, whether its left factor is the identity), from the
    operator, or for a network that :func:`~jacnet.network._is_plain` (``op`` None) from
    its layers: only the last layer's blocks, with nothing above them, keep L = I."""
    if op is not None:
        return tuple((block.n_rows, block.x.shape[1], block.left is None)
                     for block in op.blocks if isinstance(block, Kronecker))
    last = len(model.layers) - 1
    signature = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Linear):
            signature.append((layer.out_features, layer.in_features, i == last))
            if layer.bias is not None:
                signature.append((layer.out_features, 1, i == last))
    return tuple(signature)


@functools.lru_cache(maxsize=128)
def _plan(signature: tuple[tuple[int, int, bool], ...], n_outputs: int
          ) -> tuple[tuple[int, int, bool], ...]:
    """For every block pair (a ≤ b) whether the Kronecker product is cheaper than the
    materialised rows; ``signature`` holds each block's (k, n, whether L is the identity).
    Remembered per network shape: an optimizer asks every epoch."""
    blocks = [_Block(np.empty((0, n)), k, None if identity else np.empty((0, n_outputs, k)),
                     slice(0)) for k, n, identity in signature]
    plan = []
    for ia, a in enumerate(blocks):
        for ib in range(ia, len(blocks)):
            direct, kron = _pair_costs(a, blocks[ib], n_outputs, ia == ib)
            plan.append((ia, ib, kron < direct))
    return tuple(plan)


def _kron_pair(a: _Block, b: _Block, out: np.ndarray, diagonal: bool, accumulate: bool,
               mirror: np.ndarray | None, products: dict[tuple[int, int], np.ndarray]) -> None:
    """Write (or with ``accumulate`` add) Σ_b (L_bᵀL′_b) ⊗ (x_b x′_bᵀ) into ``out``.

    ``out`` is the (P_a, P_b) block, a view. For a ``diagonal`` pair (a block with itself,
    symmetric) each tile of rows i computes the columns i′ ≥ its first row only, and writes
    them twice while they are in cache: in place, and transposed into the rows i′ below the
    tile — so the lower triangle is never read back from memory. A pair of two blocks
    writes its transpose into ``mirror`` (the (P_b, P_a) block) the same way. ``products``
    keeps M_b = L_bᵀL′_b for pairs whose factors are the same arrays (a weight and its
    bias share L): computed once per chunk.
    """
    k1, n1 = a.n_rows, a.x.shape[1]
    k2, n2 = b.n_rows, b.x.shape[1]
    out4 = out.reshape(k1, n1, k2, n2)
    mirror4 = None if mirror is None else mirror.reshape(k2, n2, k1, n1)
    gram = a.x.T @ b.x  # (n1, n2)
    if a.left is None and b.left is None:
        # Output layer: L = I for both, so M_b = I and the pair is I_k ⊗ XᵀX′.
        idx = np.arange(k1)
        if accumulate:
            out4[idx, :, idx, :] += gram
        else:
            out4[...] = 0.0
            out4[idx, :, idx, :] = gram
        if mirror4 is not None:
            if accumulate:
                mirror4[idx, :, idx, :] += gram.T
            else:
                mirror4[...] = 0.0
                mirror4[idx, :, idx, :] = gram.T
        return
    if a.left is None:
        m_b = b.left  # (B, k1, k2): Iᵀ L′
    elif b.left is None:
        m_b = a.left.transpose(0, 2, 1)  # Lᵀ I
    else:
        key = (id(a.left), id(b.left))
        if key not in products:
            # A contiguous Lᵀ: the batched product runs twice as fast as on the view.
            products[key] = np.matmul(np.ascontiguousarray(a.left.transpose(0, 2, 1)), b.left)
        m_b = products[key]
    assert m_b is not None
    n_samples = a.x.shape[0]
    outer = (a.x[:, :, None] * b.x[:, None, :]).reshape(n_samples, n1 * n2)
    step = max(1, _KRON_TILE // max(1, k2 * n1 * n2))
    # One scratch buffer for every tile: fresh large temporaries would cost a page fault
    # per 4 KiB each time, more than the product itself.
    scratch = np.empty(min(k1, step) * k2 * n1 * n2, dtype=out.dtype)
    for i0 in range(0, k1, step):
        i1 = min(i0 + step, k1)
        j0 = i0 if diagonal else 0
        coeff = m_b[:, i0:i1, j0:].reshape(n_samples, -1)
        tile = scratch[:coeff.shape[1] * n1 * n2].reshape(coeff.shape[1], n1 * n2)
        np.matmul(coeff.T, outer, out=tile)
        tile4 = tile.reshape(i1 - i0, k2 - j0, n1, n2)
        reordered = tile4.transpose(0, 2, 1, 3)
        # The mirror image: for a diagonal pair the rows i′ ≥ i1 (the tile's own square
        # is already whole), else the tile's columns of the (b, a) block.
        if diagonal:
            mirrored, place = tile4[:, i1 - j0:].transpose(1, 3, 0, 2), (
                slice(i1, None), slice(None), slice(i0, i1), slice(None))
            target4 = out4
        elif mirror4 is not None:
            mirrored, place = tile4.transpose(1, 3, 0, 2), (
                slice(None), slice(None), slice(i0, i1), slice(None))
            target4 = mirror4
        else:
            mirrored = None
        if accumulate:
            out4[i0:i1, :, j0:, :] += reordered
            if mirrored is not None:
                target4[place] += mirrored
        else:
            out4[i0:i1, :, j0:, :] = reordered
            if mirrored is not None:
                target4[place] = mirrored


def gauss_newton(
    model: Sequential,
    X: Any,
    residuals: Any = None,
    *,
    chunk_size: int | None = None,
    dtype: DTypeLike | None = None,
    curvature_sqrt: Any = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """JᵀJ and Jᵀe of the network's outputs w.r.t. θ, summed over samples, without forming J.

    J stacks every sample's (m × P) parameter Jacobian: it is (B·m, P), rows in sample
    order then output order, columns in the order of ``model.params``.

    With ``curvature_sqrt`` = C the first result is the generalised Gauss–Newton matrix
    Σ_b J_bᵀ H_b J_b with H_b = C_bᵀ C_b (the loss's per-sample Hessian w.r.t. the output):
    each block's left factor L_b becomes C_b L_b (C_b itself for the output layer), so the
    same factored products serve any loss. Jᵀe stays the unweighted Σ_b J_bᵀ e_b.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (B, in_features)
    residuals : array-like, shape (B, out_features), optional
        e; when given, Jᵀe = Σ_b J_bᵀ e_b is returned too (for MSE, e = prediction − target
        and Jᵀe is the gradient of ½ Σ e²).
    chunk_size : int, optional
        Samples per chunk (default 1024); memory grows with it, the result does not change.
    dtype : float32 or float64, optional
        Accumulate and return in this dtype (default the model's). Levenberg–Marquardt
        asks for float64 also for float32 models (see :mod:`jacnet.optim.second_order`).
    curvature_sqrt : array-like, optional
        C_b per sample: shape (B,) for a scalar c_b (H_b = c_b² I, e.g. √(sample weight)),
        (B, m) for a diagonal (H_b = diag(c_b²)), or (B, r, m) for a matrix. None: H_b = I.
    out : ndarray, shape (P, P), optional
        Write JᵀJ here (C-contiguous, of the accumulation dtype) instead of a new array.
        For large P the first write to fresh memory costs more than the arithmetic, so a
        caller that builds JᵀJ repeatedly (an optimizer, every epoch) reuses one buffer.

    Returns
    -------
    jtj : ndarray, shape (P, P)
        JᵀJ (or JᵀHJ), symmetric positive semi-definite.
    jte : ndarray, shape (P,), or None when ``residuals`` is None.

    Raises
    ------
    TypeError
        ``model`` is not a Sequential.
    ValueError
        ``X`` or ``residuals`` of the wrong shape, or a bad ``chunk_size``.

    Examples
    --------
    >>> from jacnet.network import mlp
    >>> model = mlp([3, 4, 2], seed=0, dtype="float64")
    >>> jtj, jte = gauss_newton(model, np.ones((5, 3)))
    >>> jtj.shape, jte is None, bool(np.allclose(jtj, jtj.T))
    ((26, 26), True, True)
    """
    owner = "gauss_newton"
    model = _check_model(model, owner)
    X = model.check_input(X)
    step = _check_chunk_size(chunk_size, owner)
    acc = model.dtype if dtype is None else as_float_dtype(dtype)
    n_samples, n_outputs = X.shape[0], model.out_features
    e = None if residuals is None else _check_per_sample(
        residuals, "residuals", n_samples, n_outputs, owner, acc)
    sqrt_h = None if curvature_sqrt is None else _check_curvature_sqrt(
        curvature_sqrt, n_samples, n_outputs, owner, acc)
    shape = (model.n_params, model.n_params)
    if out is not None and (not isinstance(out, np.ndarray) or out.shape != shape
                            or out.dtype != acc or not out.flags.c_contiguous):
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"{owner}: out must be a C-contiguous {acc} array of shape "
                         f"{shape}; got {got}.")
    return _gram(model, X, e, sqrt_h, step, acc, out)


def _gram(model: Sequential, X: np.ndarray, e: np.ndarray | None, sqrt_h: np.ndarray | None,
          step: int, acc: np.dtype[Any], out: np.ndarray | None, *, forward: bool = True,
          lower_only: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`gauss_newton` on checked arguments.

    ``forward=False`` reads the layers' caches of a forward pass on all of ``X`` that the
    caller has just run, chunk by chunk through views of them (and puts the whole pass
    back at the end), instead of running the pass again. ``lower_only``: the caller reads only the lower
    triangle (with the diagonal) of JᵀJ, as Cholesky does; the upper one may be stale.
    """
    n_samples, n_outputs = X.shape[0], model.out_features
    whole = None if forward or n_samples <= step else _forward_caches(model)
    if sqrt_h is not None and sqrt_h.ndim == 3:
        n_outputs = sqrt_h.shape[1]  # the rows of C_b L_b
    # Not zeroed: the first chunk writes every entry (later chunks add to them).
    jtj = np.empty((model.n_params, model.n_params), dtype=acc) if out is None else out
    jte = None if e is None else np.empty(model.n_params, dtype=acc)
    scratch = None if e is None or n_samples <= step else np.empty_like(jte)
    plan: list[tuple[int, int, bool]] = []
    blocks: list[_Block] = []
    plain = _is_plain(model)
    # The chunks' rows and (without SciPy's syrk) their products: one array each for all
    # chunks, as fresh ones cost a page fault per 4 KiB every time.
    rows_buffer: np.ndarray | None = None
    # A plain network's large products go layer by layer (see _add_layer_grams): where one
    # product of the rows would leave OpenBLAS's single-thread range anyway (see
    # _add_gram). Decided once, for all chunks, by the first chunk's size.
    layered = plain and sqrt_h is None and (
        min(step, n_samples) * n_outputs * model.n_params ** 2 > _SPLIT_GEMM)
    gram_scratch = (np.empty_like(jtj) if n_samples > step and _syrk() is None and not layered
                    else None)
    stale_upper = False  # whether JᵀJ's upper triangle was left unwritten
    # Each layer's diagonal block of JᵀJ, packed (see _add_layer_grams), summed over chunks.
    packed: list[np.ndarray | None] = []
    factors: list[LinearFactors] = []
    for rows in _chunks(n_samples, step):
        first = rows.start == 0
        if forward:
            model.forward(X[rows])
        elif whole is not None:
            _restore_caches(model, _slice_caches(whole, rows, n_samples))
        op = None if plain else _factor_op(model, X[rows], forward=False)
        if not plan:  # block shapes do not change from chunk to chunk
            # A scalar C_b keeps identity factors; a diagonal or matrix C_b replaces them.
            keeps = sqrt_h is None or sqrt_h.ndim == 1
            plan = list(_plan(tuple((k, n, keeps and identity)
                                    for k, n, identity in _signature(model, op)), n_outputs))
        all_direct = not any(use_kron for _, _, use_kron in plan)
        if all_direct and sqrt_h is None:
            # Every pair is cheaper materialised: one symmetric product of the chunk's rows,
            # and Jᵀe from the same rows (a matrix-vector product: for the small networks
            # that take this path, a tenth of a backward pass's time).
            if rows_buffer is None:
                rows_buffer = np.empty((min(step, n_samples), n_outputs, model.n_params),
                                       dtype=acc)
            dense = rows_buffer[:rows.stop - rows.start]
            rows_2d = dense.reshape(-1, model.n_params)
            if op is None:
                factors = _write_param_jacobian(model, dense)
                if layered:
                    _add_layer_grams(rows_2d, factors, jtj, packed, first)
                    stale_upper = True
                else:
                    stale_upper |= _add_gram(rows_2d, jtj, first, gram_scratch)
            else:
                op.dense(dense)
                stale_upper |= _add_gram(rows_2d, jtj, first, gram_scratch)
            if jte is not None and e is not None:
                if first:
                    np.matmul(rows_2d.T, e[rows].reshape(-1), out=jte)
                else:
                    jte += rows_2d.T @ e[rows].reshape(-1)
            continue
        if jte is not None and e is not None:
            _add_vjp(model, e[rows], jte, scratch, first)
        blocks = _blocks(_factor_op(model, X[rows], forward=False) if op is None else op, acc)
        if sqrt_h is not None:
            blocks = _scale_blocks(blocks, sqrt_h[rows])
        if all_direct:
            dense = BlockRow([Kronecker(b.x, b.n_rows, b.left) for b in blocks]).dense()
            dense = dense.reshape(-1, dense.shape[-1])
            stale_upper |= _add_gram(dense, jtj, first, gram_scratch)
            continue
        dense_rows: dict[int, np.ndarray] = {}
        # This chunk's L_bᵀL′_b, kept while a pair still needs it (ids are safe as keys:
        # `blocks` holds every L until the chunk ends).
        products: dict[tuple[int, int], np.ndarray] = {}
        uses: dict[tuple[int, int], int] = {}
        for ia, ib, use_kron in plan:
            if use_kron and blocks[ia].left is not None and blocks[ib].left is not None:
                key = (id(blocks[ia].left), id(blocks[ib].left))
                uses[key] = uses.get(key, 0) + 1
        for ia, ib, use_kron in plan:
            a, b = blocks[ia], blocks[ib]
            target = jtj[a.cols, b.cols]
            if use_kron:
                _kron_pair(a, b, target, ia == ib, accumulate=not first,
                           mirror=None if ia == ib else jtj[b.cols, a.cols], products=products)
                if a.left is not None and b.left is not None:
                    key = (id(a.left), id(b.left))
                    uses[key] -= 1
                    if not uses[key]:
                        del products[key]
            else:
                ra = dense_rows[ia] if ia in dense_rows else dense_rows.setdefault(ia, a.rows())
                rb = dense_rows[ib] if ib in dense_rows else dense_rows.setdefault(ib, b.rows())
                if first:
                    target[...] = ra.T @ rb
                else:
                    target += ra.T @ rb
    if any(use_kron for _, _, use_kron in plan):
        # The materialised pairs filled the upper block triangle only: mirror them.
        for ia, ib, use_kron in plan:
            if ia != ib and not use_kron:
                a, b = blocks[ia], blocks[ib]
                jtj[b.cols, a.cols] = jtj[a.cols, b.cols].T
    for factor, gram in zip(factors, packed):
        if gram is not None:
            _unpack_layer_gram(gram, factor, jtj[factor.cols, factor.cols])
    if whole is not None:
        _restore_caches(model, whole)
    if stale_upper and not lower_only:
        _mirror_lower(jtj)
    return jtj, jte


def _add_layer_grams(rows: np.ndarray, factors: list[LinearFactors], jtj: np.ndarray,
                     packed: list[np.ndarray | None], first: bool) -> None:
    """Add one chunk's JᵀJ of a plain network to the lower triangle of ``jtj``, layer by
    layer, using that a layer's diagonal block is symmetric twice over.

    The strip of a layer's rows left of its diagonal block is one product of the chunk's
    rows (J itself). The diagonal block, Σ_b (L_bᵀL_b) ⊗ (x̃_b x̃_bᵀ) for a layer of k
    outputs and m = len(x̃) inputs, has both factors symmetric: its distinct entries are
    the products of the pairs i ≤ j of L's columns (summed over the outputs) with the
    pairs p ≤ q of x̃'s, one product of a (k(k+1)/2, B) and a (B, m(m+1)/2) array, about a
    quarter of the multiply-adds of the block from J's rows. ``packed`` holds these
    (k(k+1)/2, m(m+1)/2) sums per layer, in the order of ``factors``, until
    :func:`_unpack_layer_gram` writes them out after the last chunk. A layer whose pair
    arrays would hold more than twice as many numbers per sample as its columns k·m of
    one output's row of J (k or m small against the other: a one-output layer, or a wide
    input to a narrow layer) takes its diagonal block from those rows instead (None in
    ``packed``): the pairs would save little and cost memory beyond the chunk's.
    """
    acc = jtj.dtype
    for i, factor in enumerate(factors):
        start, stop = factor.cols.start, factor.cols.stop
        own = rows[:, start:stop]
        if start:
            if first:
                np.matmul(own.T, rows[:, :start], out=jtj[start:stop, :start])
            else:
                jtj[start:stop, :start] += own.T @ rows[:, :start]
        n_samples, n_in = factor.x.shape
        size = n_in + factor.bias
        k = (stop - start) // size
        if k * (k + 1) // 2 + size * (size + 1) // 2 > 2 * k * size:
            if first:
                np.matmul(own.T, own, out=jtj[start:stop, start:stop])
                packed.append(None)
            else:
                jtj[start:stop, start:stop] += own.T @ own
            continue
        inputs = np.empty((n_samples, size), dtype=acc)
        inputs[:, :n_in] = factor.x
        if factor.bias:
            inputs[:, n_in] = 1.0
        block = _left_pairs(factor, k, acc) @ _column_pairs(inputs).T
        if first:
            packed.append(block)
        else:
            total = packed[i]
            assert total is not None
            total += block


def _column_pairs(columns: np.ndarray) -> np.ndarray:
    """(s(s+1)/2, B): the products c_i c_j of the pairs i ≤ j of the columns of
    ``columns`` (B, s), in the order of ``numpy.triu_indices(s)``, one pair per row (so
    that every product writes contiguous memory)."""
    n_samples, size = columns.shape
    rows = np.ascontiguousarray(columns.T)
    out = np.empty((size * (size + 1) // 2, n_samples), dtype=columns.dtype)
    start = 0
    for i in range(size):
        np.multiply(rows[i:], rows[i], out=out[start:start + size - i])
        start += size - i
    return out


def _left_pairs(factor: LinearFactors, k: int, acc: np.dtype[Any]) -> np.ndarray:
    """(k(k+1)/2, B): Σ_o L_oi L_oj over the outputs o for the pairs i ≤ j of a layer's
    k outputs (L = I for the output layer), in the order of ``numpy.triu_indices(k)``."""
    left, n_samples = factor.left, factor.x.shape[0]
    if left is None:  # Lᵀ L = I
        out = np.zeros((k * (k + 1) // 2, n_samples), dtype=acc)
        out[_pair_index(k).diagonal()] = 1.0
        return out
    if left.shape[1] == 1:
        return _column_pairs(left[:, 0, :].astype(acc, copy=False))
    left = left.astype(acc, copy=False)
    upper = np.triu_indices(left.shape[2])
    return np.matmul(left.transpose(0, 2, 1), left)[:, upper[0], upper[1]].T


@functools.lru_cache(maxsize=64)
def _pair_index(size: int) -> np.ndarray:
    """(size, size): the position of the pair (min(i, j), max(i, j)) in the order of
    ``numpy.triu_indices(size)`` (read-only; remembered per size)."""
    upper = np.triu_indices(size)
    index = np.empty((size, size), dtype=np.intp)
    index[upper] = np.arange(upper[0].size)
    index[upper[1], upper[0]] = index[upper]
    index.flags.writeable = False
    return index


def _unpack_layer_gram(packed: np.ndarray, factor: LinearFactors, block: np.ndarray) -> None:
    """Write a layer's diagonal block of JᵀJ (both triangles) from its packed form (see
    :func:`_add_layer_grams`), one row of k × k sub-blocks at a time: the block's entry
    for (i, p), (j, q) is ``packed[pair(i, j), pair(p, q)]``, where a weight's column is
    (i, p) = (output, input) and a bias's is (i, n)."""
    n_in = factor.x.shape[1]
    size = n_in + factor.bias
    k = block.shape[0] // size
    pairs_k, pairs_m = _pair_index(k), _pair_index(size)
    kn = k * n_in
    for i in range(k):
        # sub[j, p, q]: the entry for (i, p), (j, q)
        sub = packed[pairs_k[i][:, None, None], pairs_m[None, :, :]]
        block[i * n_in:(i + 1) * n_in, :kn] = sub[:, :n_in, :n_in].transpose(1, 0, 2).reshape(
            n_in, kn)
        if factor.bias:
            block[i * n_in:(i + 1) * n_in, kn:] = sub[:, :n_in, n_in].T
            block[kn + i, :kn] = sub[:, n_in, :n_in].reshape(-1)
            block[kn + i, kn:] = sub[:, n_in, n_in]


#: Multiply-adds below which OpenBLAS runs a matrix product on one thread (its
#: GEMM_MULTITHREAD_THRESHOLD × 65536).
_ONE_THREAD_GEMM = 1 << 18
#: Products up to this many multiply-adds (about a millisecond) are computed from row
#: blocks that each stay on one thread (see :func:`_add_gram`).
_SPLIT_GEMM = 1 << 24


_SYRK: list[Any] = []


def _syrk() -> Any:
    """SciPy's BLAS ``syrk`` for ``out``'s dtype family (float32/float64), looked up once;
    None without SciPy (an optional dependency)."""
    if not _SYRK:
        try:
            from scipy.linalg.blas import dsyrk, ssyrk
        except ImportError:  # pragma: no cover - SciPy is optional
            _SYRK.append(None)
        else:
            _SYRK.append({np.dtype(np.float64): dsyrk, np.dtype(np.float32): ssyrk})
    return _SYRK[0]


def _add_gram(rows: np.ndarray, out: np.ndarray, first: bool,
              scratch: np.ndarray | None = None) -> bool:
    """``out = rowsᵀ rows`` (``first``) or ``out += rowsᵀ rows``; True when only the lower
    triangle (with the diagonal) was written, the upper one left as it was.

    A large product with SciPy is BLAS's ``syrk`` adding into the lower triangle of
    ``out`` itself: NumPy's ``rowsᵀ @ rows`` is a ``syrk`` too, but into a new array
    whose upper triangle it then fills by strided copies, and adding that temporary to
    ``out`` is a third pass over P² entries, per chunk. Without SciPy the product goes
    to ``scratch`` (an array like ``out``, reused from chunk to chunk) and is added.

    A small product runs best on one thread. For (1000 × 61)ᵀ(1000 × 61), OpenBLAS's two
    threads take as long as one, and the Python code that follows runs slower: a
    Levenberg–Marquardt fit of a 61-parameter network took 65 ms with the single product
    and 44 ms with it split (two threads; on one thread the split costs 7%). Products of
    up to ``_SPLIT_GEMM`` multiply-adds are therefore summed from row blocks below
    OpenBLAS's threading threshold (larger blocks measured as slow as one product).
    """
    n, p = rows.shape
    block = _ONE_THREAD_GEMM // max(1, p * p)
    if block < 16 or n * p * p > _SPLIT_GEMM or n < 2 * block:
        syrk = _syrk()
        if (syrk is not None and n * p * p > _SPLIT_GEMM and out.dtype in syrk
                and rows.dtype == out.dtype and rows.flags.c_contiguous):
            # out.T is the Fortran-ordered array BLAS wants (its upper triangle is out's
            # lower one), rows.T the Fortran-ordered (P, n) factor: C = rowsᵀ rows.
            result = syrk[out.dtype](1.0, rows.T, beta=0.0 if first else 1.0, c=out.T,
                                     trans=0, lower=0, overwrite_c=1)
            if np.shares_memory(result, out):
                return True
            out[...] = result.T  # pragma: no cover - SciPy wrote a copy
            return False
        if first:
            np.matmul(rows.T, rows, out=out)
        else:
            if scratch is None:
                scratch = np.empty_like(out)
            np.matmul(rows.T, rows, out=scratch)
            out += scratch
        return False
    if scratch is None:
        scratch = np.empty_like(out)
    for start in range(0, n, block):
        part = rows[start:start + block]
        if first and start == 0:
            np.matmul(part.T, part, out=out)
        else:
            np.matmul(part.T, part, out=scratch)
            out += scratch
    return False


#: Columns per strip when :func:`_mirror_lower` copies a triangle (a strip of that many
#: columns stays in cache while its transpose is written).
_MIRROR_STRIP = 64


def _mirror_lower(matrix: np.ndarray) -> None:
    """Fill the strict upper triangle of a square matrix from its lower one, in place."""
    size = matrix.shape[0]
    for i0 in range(0, size, _MIRROR_STRIP):
        i1 = min(i0 + _MIRROR_STRIP, size)
        matrix[i0:i1, i1:] = matrix[i1:, i0:i1].T
        square = matrix[i0:i1, i0:i1]
        upper = np.triu_indices(i1 - i0, 1)
        square[upper] = square.T[upper]


def _check_curvature_sqrt(values: Any, n_samples: int, n_outputs: int, owner: str,
                          dtype: np.dtype[Any]) -> np.ndarray:
    arr = check_array(values, "curvature_sqrt", ndim=(1, 2, 3), dtype=dtype, owner=owner)
    if arr.ndim == 2 and n_outputs == 1:
        arr = arr[:, 0]  # one output: a diagonal is a scalar per sample
    if arr.shape[0] != n_samples or (arr.ndim > 1 and arr.shape[-1] != n_outputs):
        raise ValueError(
            f"{owner}: curvature_sqrt must have shape ({n_samples},), ({n_samples}, "
            f"{n_outputs}) or ({n_samples}, r, {n_outputs}), one C_b per sample of X with "
            f"C_bᵀC_b the loss's Hessian w.r.t. the {n_outputs} outputs; got {arr.shape}."
        )
    return arr


def _scale_blocks(blocks: list[_Block], sqrt_h: np.ndarray) -> list[_Block]:
    """Blocks of C J from those of J: L_b → C_b L_b (C_b for an identity L_b).

    A scalar C_b (shape (B,)) scales the inputs x_b instead, which keeps an output
    layer's identity factor (and its cheap I ⊗ XᵀX pair).
    """
    out = []
    scaled: dict[int, np.ndarray] = {}  # keep a shared L shared (see _kron_pair's products)
    for block in blocks:
        if sqrt_h.ndim == 1:
            out.append(_Block(block.x * sqrt_h[:, None], block.n_rows, block.left, block.cols))
            continue
        if sqrt_h.ndim == 2:
            if block.left is None:
                left = np.zeros((sqrt_h.shape[0], block.n_rows, block.n_rows), dtype=sqrt_h.dtype)
                idx = np.arange(block.n_rows)
                left[:, idx, idx] = sqrt_h
            elif id(block.left) in scaled:
                left = scaled[id(block.left)]
            else:
                left = scaled[id(block.left)] = sqrt_h[:, :, None] * block.left
        elif block.left is None:
            left = sqrt_h
        elif id(block.left) in scaled:
            left = scaled[id(block.left)]
        else:
            left = scaled[id(block.left)] = np.matmul(sqrt_h, block.left)
        out.append(_Block(block.x, block.n_rows, left, block.cols))
    return out


# ------------------------------------------------------------------------------ Jᵀv
def _add_vjp(model: Sequential, grad_rows: np.ndarray, total: np.ndarray,
             scratch: np.ndarray | None, first: bool) -> None:
    """``total`` = (``first``) or += Σ_b J_bᵀ g_b for the forward pass the layers hold:
    one backward pass, written past ``model.grads`` (``scratch`` takes it when adding)."""
    if first:
        model.backward(grad_rows, input_grad=False, out=total)
        return
    assert scratch is not None
    model.backward(grad_rows, input_grad=False, out=scratch)
    total += scratch


def jtv(model: Sequential, X: Any, v: Any, *, chunk_size: int | None = None) -> np.ndarray:
    """Σ_b J_bᵀ v_b: the transposed parameter Jacobian times one vector per sample.

    One forward and one backward pass (a VJP, whatever the number of outputs m): with
    v = ∂loss/∂output this is the gradient ∂loss/∂θ, written past ``model.grads``, which
    keeps its value.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (B, in_features)
    v : array-like, shape (B, out_features)
    chunk_size : int, optional
        Samples per chunk (default 1024): memory grows with it, the result does not
        change beyond rounding.

    Returns
    -------
    ndarray, shape (P,), the model's dtype.

    Examples
    --------
    >>> from jacnet.network import jacobian, mlp
    >>> model = mlp([2, 3, 2], seed=0, dtype="float64")
    >>> X, v = np.ones((4, 2)), np.ones((4, 2))
    >>> J = jacobian(model, X, wrt="params")                  # (4, 2, 17)
    >>> bool(np.allclose(jtv(model, X, v), np.einsum("bm,bmp->p", v, J)))
    True
    """
    owner = "jtv"
    model = _check_model(model, owner)
    X = model.check_input(X)
    step = _check_chunk_size(chunk_size, owner)
    v = _check_per_sample(v, "v", X.shape[0], model.out_features, owner, model.dtype)
    total = np.zeros(model.n_params, dtype=model.dtype)
    scratch = None if X.shape[0] <= step else np.empty_like(total)
    for rows in _chunks(X.shape[0], step):
        model.forward(X[rows])
        _add_vjp(model, v[rows], total, scratch, rows.start == 0)
    return total


# ------------------------------------------------------------------------------ G·v
def _loss_and_target(model: Sequential, loss: Any, X: np.ndarray, target: Any,
                     sample_weight: Any, owner: str) -> tuple[Loss, np.ndarray, np.ndarray]:
    """The loss object, its prepared target, and each sample's factor on ℓ_b in the
    reduced loss: s·w_b with s = 1/B (1/Σw with weights) for a mean, 1 for a sum."""
    loss = get_loss(loss)
    target = loss.prepare_target(target, model.out_features, dtype=model.dtype)
    n_samples = X.shape[0]
    if target.shape[0] != n_samples:
        raise ValueError(f"{owner}: target has {target.shape[0]} rows but X has {n_samples}; "
                         "pass one target per sample.")
    if sample_weight is None:
        weights = np.ones(n_samples, dtype=model.dtype)
    else:
        weights = check_array(sample_weight, "sample_weight", ndim=1, dtype=model.dtype,
                              owner=owner)
        if weights.shape[0] != n_samples or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(
                f"{owner}: sample_weight must hold one non-negative weight per row of X "
                f"({n_samples}), not all zero; got shape {weights.shape}"
                f"{'' if weights.shape[0] != n_samples else ' with negative or zero total'}."
            )
    if loss.reduction == "mean":
        weights = weights / weights.sum()
    return loss, target, weights


def _curvature_root(loss: Loss, prediction: np.ndarray, target: np.ndarray, owner: str
                    ) -> np.ndarray:
    """The loss's C_b (CᵀC = H_b, unnormalised) for a chunk, checked."""
    try:
        root = loss.curvature_sqrt(prediction, target)
    except NotImplementedError:
        raise TypeError(
            f"{owner}: {type(loss).__name__} has no curvature (its curvature and "
            "curvature_sqrt are not implemented), so it has no Gauss–Newton matrix; define "
            "curvature (the per-sample Hessian w.r.t. the prediction) on the loss."
        ) from None
    return _check_curvature_sqrt(root, prediction.shape[0], prediction.shape[1], owner,
                                 prediction.dtype)


def _apply_root_squared(root: np.ndarray, u: np.ndarray) -> np.ndarray:
    """H_b u_b = C_bᵀ (C_b u_b) per sample, for C_b a scalar (B,), diagonal (B, m) or
    matrix (B, r, m)."""
    if root.ndim == 1:
        return (root * root)[:, None] * u
    if root.ndim == 2:
        return root * root * u
    return np.einsum("brm,br->bm", root, np.einsum("brm,bm->br", root, u))


class GaussNewtonOperator:
    """The generalised Gauss–Newton matrix G = s Σ_b w_b J_bᵀ H_b J_b at the current θ, as
    a linear operator that keeps the linearisation: built once, multiplied many times.

    Building it runs the forward pass once (chunk by chunk) and keeps what the products
    need of it: each layer's record of that pass (a ``Linear``'s input, an activation's
    output or input — the arrays the layers cache anyway) and the loss's curvature factor
    C_b (H_b = C_bᵀC_b, from the loss's own ``curvature_sqrt``) scaled by √(s w_b). A
    product G·v is then the tangent J v through the kept pass (forward mode), H_b per
    sample and one backward pass: no forward pass, no activation function and no loss
    evaluated again. Memory: the forward pass's activations on all of ``X`` (what one
    full-batch forward pass holds) plus O(P); :func:`ggn_vector_product` and
    :func:`ggn_diagonal` are this operator used once.

    The operator belongs to the parameters it was built at: a product after
    ``model.params`` changed raises (build a new operator). Each product leaves the layers'
    caches holding the kept pass of its last chunk.

    Parameters
    ----------
    model : Sequential
    loss : Loss or str
        The loss object (or its name: "mse", "cross_entropy", "bce"); it must define a
        curvature.
    X : array-like, shape (B, in_features)
    target : array-like
        As the loss takes it (values (B, m), or class labels (B,) for cross-entropy).
    sample_weight : array-like, shape (B,), optional
        Non-negative weights w_b, not all zero (default all ones).
    chunk_size : int, optional
        Samples per pass (default 1024): the size of the products' temporaries; the
        result does not change beyond rounding.

    Attributes
    ----------
    n_params : int
        P, the operator's side.
    shape : tuple of int
        (P, P).

    Raises
    ------
    TypeError
        ``model`` is not a Sequential, or the loss has no curvature.
    ValueError
        ``X``, ``target`` or ``sample_weight`` of the wrong shape, or a bad ``chunk_size``.

    Examples
    --------
    >>> from jacnet.network import jacobian, mlp
    >>> model = mlp([2, 3, 1], seed=0, dtype="float64")
    >>> X, y = np.ones((4, 2)), np.zeros(4)
    >>> G = GaussNewtonOperator(model, "mse", X, y)
    >>> J = jacobian(model, X, wrt="params").reshape(4, -1)
    >>> v = np.ones(model.n_params)
    >>> bool(np.allclose(G.matvec(v), J.T @ J @ v / 4)), G.shape
    (True, (13, 13))
    """

    def __init__(self, model: Sequential, loss: Any, X: Any, target: Any, *,
                 sample_weight: Any = None, chunk_size: int | None = None) -> None:
        owner = type(self).__name__
        model = _check_model(model, owner)
        X = model.check_input(X)
        step = _check_chunk_size(chunk_size, owner)
        loss, target, factor = _loss_and_target(model, loss, X, target, sample_weight, owner)
        pieces = []
        for rows in _chunks(X.shape[0], step):
            prediction = model.forward(X[rows])
            root = _curvature_root(loss, prediction, target[rows], owner)
            pieces.append((_forward_caches(model), _scale_root(root, np.sqrt(factor[rows])),
                           rows.stop - rows.start))
        self._setup(model, pieces, owner, step)

    @classmethod
    def from_forward_pass(cls, model: Sequential, n_samples: int,
                          curvature_sqrt: Any = None, *, chunk_size: int | None = None
                          ) -> GaussNewtonOperator:
        """G = Σ_b J_bᵀ C_bᵀ C_b J_b for the forward pass the layers hold now, on
        ``n_samples`` rows (no forward pass is run; a second-order optimizer builds it from
        the pass its epoch starts with).

        ``curvature_sqrt`` is C_b per sample, with any weights and scale folded in: shape
        (B,) for a scalar, (B, m) for a diagonal, (B, r, m) for a matrix; None: H_b = I.
        ``chunk_size`` rows at a time form the factored Jacobian for :meth:`diagonal`
        (default 1024); the products take all rows at once, like the pass itself.
        """
        owner = f"{cls.__name__}.from_forward_pass"
        model = _check_model(model, owner)
        n_samples = check_positive_int(n_samples, "n_samples")
        root = None if curvature_sqrt is None else _check_curvature_sqrt(
            curvature_sqrt, n_samples, model.out_features, owner, model.dtype)
        self = cls.__new__(cls)
        self._setup(model, [(_forward_caches(model), root, n_samples)], owner,
                    _check_chunk_size(chunk_size, owner))
        return self

    def _setup(self, model: Sequential, pieces: Sequence[tuple[Any, np.ndarray | None, int]],
               owner: str, chunk_size: int) -> None:
        self.model, self._pieces, self._owner = model, pieces, owner
        self._chunk_size = chunk_size
        #: θ the linearisation was taken at (a copy).
        self.params = model.params.copy()
        self.n_params = model.n_params
        self.shape = (model.n_params, model.n_params)
        self._n_rows = [n_rows for _, _, n_rows in pieces]

    def _enter(self, index: int) -> tuple[np.ndarray | None, int]:
        """Put piece ``index``'s forward pass back into the layers; its root and rows."""
        caches, root, n_rows = self._pieces[index]
        _restore_caches(self.model, caches)
        return root, n_rows

    def _check_params(self) -> None:
        if not np.array_equal(self.model.params, self.params):
            raise RuntimeError(
                f"{self._owner}: model.params changed since this operator was built, so its "
                "linearisation no longer describes the model; build a new GaussNewtonOperator "
                "at the current parameters."
            )

    def _check_direction(self, v: Any) -> np.ndarray:
        v = check_array(v, "v", ndim=1, dtype=self.model.dtype, owner=self._owner)
        if v.shape != (self.n_params,):
            raise ValueError(f"{self._owner}: v must have shape ({self.n_params},), one entry "
                             f"per parameter of the model; got {v.shape}.")
        return v

    def matvec(self, v: Any) -> np.ndarray:
        """G·v, shape (P,), the model's dtype; ``model.grads`` keeps its value."""
        v = self._check_direction(v)
        self._check_params()
        total = np.zeros(self.n_params, dtype=self.model.dtype)
        scratch = None if len(self._pieces) == 1 else np.empty_like(total)
        for index in range(len(self._pieces)):
            root, _ = self._enter(index)
            tangent = self.model._tangent(v)
            rows_h = tangent if root is None else _apply_root_squared(root, tangent)
            _add_vjp(self.model, rows_h, total, scratch, index == 0)
        return total

    #: G is symmetric: its transpose's product is its own.
    rmatvec = matvec

    def jtv(self, rows: Any) -> np.ndarray:
        """Σ_b J_bᵀ rows_b for the kept pass, shape (P,): one backward pass, no forward
        (with rows_b = w_b ∂ℓ_b/∂z_b this is the gradient). ``rows`` is (B, m) in the
        order of ``X``."""
        rows = _check_per_sample(rows, "rows", sum(self._n_rows), self.model.out_features,
                                 self._owner, self.model.dtype)
        self._check_params()
        total = np.zeros(self.n_params, dtype=self.model.dtype)
        scratch = None if len(self._pieces) == 1 else np.empty_like(total)
        start = 0
        for index in range(len(self._pieces)):
            _, n_rows = self._enter(index)
            _add_vjp(self.model, rows[start:start + n_rows], total, scratch, index == 0)
            start += n_rows
        return total

    def diagonal(self) -> np.ndarray:
        """diag(G), shape (P,), the model's dtype, non-negative (see :func:`ggn_diagonal`)."""
        self._check_params()
        diagonal = np.zeros(self.n_params, dtype=self.model.dtype)
        # The factored Jacobian's left factors are (rows, m, k) per layer: formed
        # chunk_size rows at a time, from views of the kept pass.
        for caches, whole_root, n_samples in self._pieces:
            for rows in _chunks(n_samples, self._chunk_size):
                _restore_caches(self.model, _slice_caches(caches, rows, n_samples))
                root = None if whole_root is None else whole_root[rows]
                self._add_diagonal(diagonal, rows.stop - rows.start, root)
            _restore_caches(self.model, caches)
        return diagonal

    def _add_diagonal(self, diagonal: np.ndarray, n_rows: int, root: np.ndarray | None
                      ) -> None:
        """Add diag(G) of the rows whose forward pass the layers hold."""
        op = _chain_jacobians(self.model, n_rows, "params")
        assert isinstance(op, BlockRow)
        blocks = _blocks(op, self.model.dtype)
        if root is not None:
            blocks = _scale_blocks(blocks, root)
        for block in blocks:
            x_squared = block.x * block.x
            if block.left is None:  # an identity left factor (a scalar root scaled x)
                part = np.broadcast_to(x_squared.sum(axis=0),
                                       (block.n_rows, x_squared.shape[1]))
            else:
                left = block.left
                part = np.einsum("brk,brk->bk", left, left).T @ x_squared
            diagonal[block.cols] += part.ravel()


    def _kronecker_sums(self) -> list[_KroneckerSums]:
        """Each layer's Kronecker factors of G, unnormalised (K-FAC's, Martens and Grosse
        2015, with the input factor weighted by each row's curvature).

        A layer's blocks that share a left factor (a Linear's weight and bias) form one
        group: its rows of J are L_b ⊗ ã_bᵀ with ã_b the blocks' inputs side by side
        (for a Linear, [x_b, 1]), and with L̃_b = C_b L_b (C_b the loss's factor, with the
        sample weight) G's diagonal block for the group is Σ_b (L̃_bᵀL̃_b) ⊗ (ã_b ã_bᵀ).
        It is approximated by A ⊗ B/t with A = Σ_b L̃_bᵀL̃_b, B = Σ_b t_b ã_b ã_bᵀ and
        t = Σ_b t_b, t_b = ‖L̃_b‖²: exact when every L̃_bᵀL̃_b is a multiple of one matrix
        (as in an output layer) or every ã_b is the same, and the same for weights w_b as
        for rows repeated w_b times (an unweighted B would count a row once whatever its
        weight). Formed like :meth:`diagonal`, ``chunk_size`` rows at a time, in float64.
        """
        self._check_params()
        sums: list[_KroneckerSums] = []
        for caches, whole_root, n_samples in self._pieces:
            for rows in _chunks(n_samples, self._chunk_size):
                n_rows = rows.stop - rows.start
                _restore_caches(self.model, _slice_caches(caches, rows, n_samples))
                op = _chain_jacobians(self.model, n_rows, "params")
                assert isinstance(op, BlockRow)
                blocks = _blocks(op, self.model.dtype)
                root = None if whole_root is None else whole_root[rows].astype(np.float64)
                for index, group in enumerate(_kronecker_groups(blocks, op.names)):
                    first = blocks[group[0]]
                    x = np.concatenate([blocks[i].x for i in group], axis=1).astype(np.float64)
                    a, weight = _left_sums(first, root, n_rows)
                    b = (x * weight[:, None]).T @ x
                    if index == len(sums):
                        sums.append(_KroneckerSums([blocks[i].cols for i in group], a, b,
                                                   float(weight.sum())))
                    else:
                        sums[index].a += a
                        sums[index].b += b
                        sums[index].weight += float(weight.sum())
            _restore_caches(self.model, caches)
        return sums


def _left_sums(block: _Block, root: np.ndarray | None, n_rows: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """A = Σ_b L̃_bᵀL̃_b (k, k) and t_b = ‖L̃_b‖² (B,), float64, for L̃_b = C_b L_b: a
    block's left factor L (the identity when None) under the loss's factor C (None: the
    identity; (B,): a scalar per row; (B, m): a diagonal; (B, r, m): a matrix). An
    identity L is never materialised: for an output layer A is Σ_b C_bᵀC_b."""
    k = block.n_rows
    if block.left is None:
        if root is None:
            return n_rows * np.eye(k), np.full(n_rows, float(k))
        if root.ndim == 1:
            squares = root * root
            return squares.sum() * np.eye(k), k * squares
        if root.ndim == 2:
            squares = root * root
            return np.diag(squares.sum(axis=0)), squares.sum(axis=1)
        flat = root.reshape(-1, k)
        return flat.T @ flat, np.einsum("brk,brk->b", root, root)
    left = block.left.astype(np.float64)
    if root is not None:
        if root.ndim == 1:
            left = left * root[:, None, None]
        elif root.ndim == 2:
            left = left * root[:, :, None]
        else:
            left = np.matmul(root, left)
    flat = left.reshape(-1, k)
    return flat.T @ flat, np.einsum("brk,brk->b", left, left)


@dataclass
class _KroneckerSums:
    """One group's K-FAC sums: columns ``cols`` (each a (k, n_i) row-major block, put
    side by side as one (k, Σn_i) matrix), A = Σ_b L̃_bᵀL̃_b (k, k),
    B = Σ_b t_b ã_b ã_bᵀ and ``weight`` t = Σ_b t_b (see
    :meth:`GaussNewtonOperator._kronecker_sums`)."""

    cols: list[slice]
    a: np.ndarray
    b: np.ndarray
    weight: float


def _kronecker_groups(blocks: list[_Block], names: Sequence[str]) -> list[list[int]]:
    """Consecutive blocks of one layer (names "i.weight", "i.bias") with the same k and
    the same left factor: the blocks of one Kronecker factor pair. The same values, not
    only the same array: below an elementwise output activation the chain gives a
    weight and its bias equal left factors in two arrays."""
    groups: list[list[int]] = []
    for i, block in enumerate(blocks):
        if groups:
            head = blocks[groups[-1][0]]
            if (names[i].split(".")[0] == names[groups[-1][0]].split(".")[0]
                    and block.n_rows == head.n_rows and _same_left(block.left, head.left)):
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups


def _same_left(left: np.ndarray | None, other: np.ndarray | None) -> bool:
    if left is other:
        return True
    return (left is not None and other is not None and left.shape == other.shape
            and bool(np.array_equal(left, other)))


def _scale_root(root: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """C_b → scale_b C_b for a root of shape (B,), (B, m) or (B, r, m)."""
    return root * scale.reshape((-1,) + (1,) * (root.ndim - 1))


def ggn_vector_product(model: Sequential, loss: Any, X: Any, target: Any, v: Any, *,
                       sample_weight: Any = None, chunk_size: int | None = None
                       ) -> np.ndarray:
    """G·v, the generalised Gauss–Newton matrix of the loss times a vector, never forming J.

    G = s Σ_b w_b J_bᵀ H_b J_b is the Gauss–Newton approximation of the Hessian of the
    reduced loss s Σ_b w_b ℓ_b (s = 1/B, or 1/Σw with ``sample_weight``, for a mean; 1 for
    a sum), with J_b sample b's (m × P) parameter Jacobian and H_b = C_bᵀC_b the Hessian
    of its loss ℓ_b w.r.t. the output, factored by the loss's own ``curvature_sqrt``
    (any loss that defines a curvature; MSE: H_b = I, so G = s JᵀJ). Per chunk of
    samples: one forward pass carrying the tangent u = J v (forward mode), H_b applied
    to each u_b, one backward pass of s w_b H_b u_b — about 1.7 gradients' worth of work
    (a forward pass, its tangent and a backward pass), and O(B·m + P) memory.

    Parameters
    ----------
    model : Sequential
    loss : Loss or str
        The loss object (or its name: "mse", "cross_entropy", "bce").
    X : array-like, shape (B, in_features)
    target : array-like
        As the loss takes it (values (B, m), or class labels (B,) for cross-entropy).
    v : array-like, shape (P,)
        A direction in parameter space, in the order of ``model.params``.
    sample_weight : array-like, shape (B,), optional
        Non-negative weights w_b, not all zero (default all ones).
    chunk_size : int, optional
        Samples per pass (default 1024): memory grows with it, the result does not
        change beyond rounding.

    Returns
    -------
    ndarray, shape (P,), the model's dtype. ``model.grads`` keeps its value; the layers'
    caches hold the forward pass of the last chunk.

    Raises
    ------
    TypeError
        ``model`` is not a Sequential, or the loss has no curvature.
    ValueError
        ``X``, ``target``, ``v`` or ``sample_weight`` of the wrong shape, or a bad
        ``chunk_size``.

    Examples
    --------
    >>> from jacnet.network import jacobian, mlp
    >>> model = mlp([2, 3, 1], seed=0, dtype="float64")
    >>> X, y, v = np.ones((4, 2)), np.zeros(4), np.ones(model.n_params)
    >>> J = jacobian(model, X, wrt="params").reshape(4, -1)
    >>> bool(np.allclose(ggn_vector_product(model, "mse", X, y, v), J.T @ J @ v / 4))
    True
    """
    return GaussNewtonOperator(model, loss, X, target, sample_weight=sample_weight,
                               chunk_size=chunk_size).matvec(v)


def ggn_diagonal(model: Sequential, loss: Any, X: Any, target: Any, *,
                 sample_weight: Any = None, chunk_size: int | None = None) -> np.ndarray:
    """The diagonal of G = s Σ_b w_b J_bᵀ H_b J_b (see :func:`ggn_vector_product`), never
    forming G: a Jacobi preconditioner for conjugate gradients on (G + μI)Δ = g.

    From the factored Jacobian: a parameter block's rows are L_b ⊗ x_bᵀ, so with
    A_b = √(s w_b) C_b L_b (the loss's root C_b times the back-propagated factor, r × k)
    the entry of weight (i, j) is Σ_b (Σ_r A_b[r, i]²) x_b[j]² — one (k × B)(B × n)
    product of squares per block. It costs about as much as m backward passes (one per
    output, to form L_b), once per θ.

    Parameters
    ----------
    model, loss, X, target, sample_weight, chunk_size
        As for :func:`ggn_vector_product`.

    Returns
    -------
    ndarray, shape (P,), the model's dtype: diag(G), non-negative.

    Examples
    --------
    >>> from jacnet.network import jacobian, mlp
    >>> model = mlp([2, 3, 2], seed=0, dtype="float64")
    >>> X, y = np.ones((4, 2)), np.zeros((4, 2))
    >>> J = jacobian(model, X, wrt="params").reshape(8, -1)
    >>> bool(np.allclose(ggn_diagonal(model, "mse", X, y), np.diag(J.T @ J) / 4))
    True
    """
    return GaussNewtonOperator(model, loss, X, target, sample_weight=sample_weight,
                               chunk_size=chunk_size).diagonal()


class TraceEstimate(NamedTuple):
    """A stochastic estimate of a trace and the standard error of its probe mean."""

    estimate: float
    standard_error: float


def stochastic_lanczos_trace(matvec: Callable[[np.ndarray], np.ndarray], size: int, *,
                             function: Callable[[np.ndarray], np.ndarray] = np.reciprocal,
                             n_probes: int = 30, n_steps: int = 30,
                             seed: int | np.random.Generator | None = None) -> TraceEstimate:
    """tr(f(A)) for a symmetric positive definite A given only as v ↦ A v, by stochastic
    Lanczos quadrature: e.g. tr((G + αI)⁻¹), which Bayesian regularisation needs for
    γ = P − α tr((G + αI)⁻¹), from ``lambda v: ggn_vector_product(...) + alpha * v``.

    Each probe z has independent ±1 entries (Rademacher), so E[zᵀ f(A) z] = tr(f(A))
    (Hutchinson). zᵀ f(A) z is computed as ‖z‖² e₁ᵀ f(T) e₁ from ``n_steps`` steps of
    Lanczos started at z/‖z‖ (T the tridiagonal matrix, fully re-orthogonalised): a
    Gauss quadrature with ``n_steps`` nodes. The estimate is the mean over the probes.
    Cost: ``n_probes`` × ``n_steps`` products with A, memory ``n_steps`` × ``size``.

    Error, in two parts:

    - **Sampling**: one probe's variance is 2 (‖F‖_F² − Σ_i F_ii²) ≤ 2 ‖F‖_F² for
      F = f(A), so the probe mean's standard error is at most √(2 / n_probes) ‖F‖_F; for
      F = (G + αI)⁻¹ with many comparable eigenvalues that is a relative error of about
      √(2 / (n_probes · P)). ``standard_error`` estimates it from the probes'
      spread (it is 0 when F is diagonal, where every probe is exact).
    - **Quadrature**: Gauss quadrature with k nodes is exact for polynomials of degree
      2k − 1, and exact altogether once k reaches the number of distinct eigenvalues
      (Lanczos then stops early). For f(x) = 1/x the error of each probe decays like
      ρ^(2k) with ρ = (√κ − 1)/(√κ + 1), κ = λ_max/λ_min (for G + αI, κ ≤ (λ_max(G) + α)/α),
      and has one sign: the quadrature never overestimates zᵀA⁻¹z, since every
      even derivative of 1/x is positive. Take k ≳ ½ √κ ln(1/ε) for a relative error ε.

    Parameters
    ----------
    matvec : callable
        v (size,) ↦ A v (size,); A symmetric positive definite.
    size : int
        The dimension of A.
    function : callable, default numpy.reciprocal
        f, applied elementwise to the eigenvalues of T.
    n_probes : int, default 30
    n_steps : int, default 30
        Lanczos steps per probe (at most ``size`` are taken).
    seed : int or Generator, optional
        Draws the probes: the same seed gives the same estimate.

    Returns
    -------
    TraceEstimate
        ``(estimate, standard_error)``.

    Raises
    ------
    ValueError
        A bad ``size``, ``n_probes`` or ``n_steps``, or ``matvec`` returns the wrong shape
        or a non-finite value.

    Examples
    --------
    >>> A = np.diag([1.0, 2.0, 4.0, 8.0])
    >>> value, error = stochastic_lanczos_trace(lambda v: A @ v, 4, seed=0)
    >>> round(value, 12), round(error, 12)        # 1 + 1/2 + 1/4 + 1/8
    (1.875, 0.0)
    """
    owner = "stochastic_lanczos_trace"
    size = check_positive_int(size, "size")
    n_probes = check_positive_int(n_probes, "n_probes")
    n_steps = min(check_positive_int(n_steps, "n_steps"), size)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    samples = np.empty(n_probes)
    basis = np.empty((n_steps, size))
    for p in range(n_probes):
        z = rng.choice(np.array([-1.0, 1.0]), size=size)
        basis[0] = z / np.sqrt(size)
        alpha: list[float] = []
        beta: list[float] = []
        for j in range(n_steps):
            w = np.asarray(matvec(basis[j]), dtype=np.float64)
            if w.shape != (size,) or not np.all(np.isfinite(w)):
                raise ValueError(f"{owner}: matvec must map a vector of shape ({size},) to "
                                 f"a finite one of the same shape; got "
                                 f"{w.shape if w.shape != (size,) else 'non-finite values'}.")
            a = float(basis[j] @ w)
            alpha.append(a)
            w = w - a * basis[j] - (beta[-1] * basis[j - 1] if j else 0.0)
            # Full re-orthogonalisation, twice: plain Lanczos loses orthogonality within a
            # few dozen steps and then counts eigenvalues twice.
            for _ in range(2):
                w -= basis[:j + 1].T @ (basis[:j + 1] @ w)
            b = float(np.linalg.norm(w))
            if j + 1 == n_steps or b <= 1e-12 * max(abs(a), 1e-300):
                break  # done, or an invariant subspace: the quadrature is exact
            beta.append(b)
            basis[j + 1] = w / b
        k = len(alpha)
        tridiagonal = np.diag(alpha) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
        nodes, vectors = np.linalg.eigh(tridiagonal)
        samples[p] = size * float(vectors[0] ** 2 @ function(nodes))
    error = float(samples.std(ddof=1) / np.sqrt(n_probes)) if n_probes > 1 else float("inf")
    return TraceEstimate(float(samples.mean()), error)


def per_sample_gradients(model: Sequential, X: Any, grad_output: Any) -> np.ndarray:
    """Each sample's gradient J_bᵀ g_b, one row per sample, from the factored Jacobian.

    Parameters
    ----------
    model : Sequential
    X : array-like, shape (B, in_features)
    grad_output : array-like, shape (B, out_features)
        ∂loss/∂output per sample (e.g. ``loss.grad(prediction, target)``, which includes
        the 1/B of a mean reduction — then the rows sum to ``model.grads``).

    Returns
    -------
    ndarray, shape (B, P), the model's dtype.

    Examples
    --------
    >>> from jacnet.network import mlp
    >>> model = mlp([2, 3, 1], seed=0, dtype="float64")
    >>> X, g = np.ones((4, 2)), np.full((4, 1), 0.25)
    >>> G = per_sample_gradients(model, X, g)
    >>> _ = model.backward(g)
    >>> G.shape, bool(np.allclose(G.sum(axis=0), model.grads))
    ((4, 13), True)
    """
    owner = "per_sample_gradients"
    model = _check_model(model, owner)
    X = model.check_input(X)
    g = _check_per_sample(grad_output, "grad_output", X.shape[0], model.out_features, owner,
                          model.dtype)
    out = np.empty((X.shape[0], model.n_params), dtype=model.dtype)
    for block in _factors(model, X, model.dtype):
        rows = g if block.left is None else np.einsum("bm,bmk->bk", g, block.left)
        out[:, block.cols] = (rows[:, :, None] * block.x[:, None, :]).reshape(X.shape[0], -1)
    return out


# ------------------------------------------------------------------------------ NTK
def ntk(model: Sequential, X1: Any, X2: Any = None, *, flatten: bool = True,
        block_weights: Any = None) -> np.ndarray:
    """The empirical neural tangent kernel J(X₁) J(X₂)ᵀ, never forming either Jacobian.

    Block by block, (L₁ ⊗ x₁ᵀ)(L₂ ⊗ x₂ᵀ)ᵀ = (L₁ L₂ᵀ)(x₁ · x₂): a kernel of the layer inputs
    times one of the back-propagated factors, summed over the parameter blocks.

    Parameters
    ----------
    model : Sequential
    X1 : array-like, shape (B1, in_features)
    X2 : array-like, shape (B2, in_features), optional
        Defaults to ``X1`` (then the result is J Jᵀ, symmetric positive semi-definite).
    flatten : bool, default True
        Return (B1·m, B2·m), rows in sample-then-output order (the row order of the
        stacked Jacobian J); otherwise (B1, m, B2, m).
    block_weights : sequence of float, optional
        One factor per parameter block (weight, bias, … in θ order): Σ_l w_l J_l J_lᵀ,
        i.e. J diag(w) Jᵀ for a diagonal constant on each block. Default all ones.

    Returns
    -------
    ndarray, shape (B1·m, B2·m) or (B1, m, B2, m), the model's dtype.

    Examples
    --------
    >>> from jacnet.network import jacobian, mlp
    >>> model = mlp([2, 3, 2], seed=0, dtype="float64")
    >>> X1, X2 = np.ones((4, 2)), np.zeros((3, 2))
    >>> J1 = jacobian(model, X1, wrt="params").reshape(8, -1)
    >>> J2 = jacobian(model, X2, wrt="params").reshape(6, -1)
    >>> bool(np.allclose(ntk(model, X1, X2), J1 @ J2.T))
    True
    """
    owner = "ntk"
    model = _check_model(model, owner)
    X1 = model.check_input(X1)
    X2 = X1 if X2 is None else model.check_input(X2)
    m = model.out_features
    blocks1 = _factors(model, X1, model.dtype)
    blocks2 = blocks1 if X2 is X1 else _factors(model, X2, model.dtype)
    if block_weights is None:
        factors = [1.0] * len(blocks1)
    else:
        factors = [float(f) for f in block_weights]
        if len(factors) != len(blocks1):
            raise ValueError(f"{owner}: block_weights needs one factor per parameter block "
                             f"({len(blocks1)}); got {len(factors)}.")
    n1, n2 = X1.shape[0], X2.shape[0]
    # A weight and its bias share L: (L₁L₂ᵀ) ⊙ Σ_group f (x₁ · x₂), the sum over the group
    # one product of the inputs side by side, [f x₁, f′ 1][x₂, 1]ᵀ.
    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    for a, b, factor in zip(blocks1, blocks2, factors):
        if factor == 0.0:
            continue
        if groups and a.left is groups[-1][2] and b.left is groups[-1][3]:
            x1, x2, left1, left2 = groups[-1]
            groups[-1] = (np.hstack([x1, factor * a.x]), np.hstack([x2, b.x]), left1, left2)
        else:
            groups.append((factor * a.x, b.x, a.left, b.left))
    if m == 1:
        return _single_output_kernel(groups, n1, n2, model.dtype, flatten)
    kernel = np.zeros((n1, m, n2, m), dtype=model.dtype)
    for x1, x2, left1, left2 in groups:
        inputs = x1 @ x2.T  # (B1, B2)
        if left1 is None and left2 is None:
            idx = np.arange(m)
            kernel[:, idx, :, idx] += inputs
            continue
        kernel += _left_kernel(left1, left2) * inputs[:, None, :, None]
    return kernel.reshape(n1 * m, n2 * m) if flatten else kernel


#: Entries of one row tile of the kernel in :func:`_single_output_kernel` (three such
#: arrays, 1.5 MB in float64, stay in a core's cache).
_NTK_TILE = 1 << 16


def _single_output_kernel(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                             np.ndarray | None]],
                          n1: int, n2: int, dtype: np.dtype[Any], flatten: bool) -> np.ndarray:
    """:func:`ntk` for one output, Σ_group (x₁x₂ᵀ) ⊙ (l₁l₂ᵀ), tile of rows by tile of rows.

    Each tile's products and their elementwise product stay in cache, and the (B1, B2)
    result is written once: elementwise passes over whole (B1, B2) arrays (six per
    parameter block, 128 MB each for 4000 rows) cost more than the products themselves.
    """
    kernel = np.empty((n1, n2), dtype=dtype)
    pieces = [(x1, np.ascontiguousarray(x2.T),
               None if left1 is None else left1[:, 0, :],
               None if left2 is None else np.ascontiguousarray(left2[:, 0, :].T))
              for x1, x2, left1, left2 in groups]
    rows = max(1, _NTK_TILE // max(1, n2))
    inputs, lefts = np.empty(rows * n2, dtype=dtype), np.empty(rows * n2, dtype=dtype)
    for r0 in range(0, n1, rows):
        r1 = min(r0 + rows, n1)
        out = kernel[r0:r1]
        tile = inputs[:out.size].reshape(out.shape)
        if not pieces:
            out[...] = 0.0
        for i, (x1, x2t, left1, left2t) in enumerate(pieces):
            target = out if i == 0 else tile
            np.matmul(x1[r0:r1], x2t, out=target)
            if left1 is not None and left2t is not None:
                product = lefts[:out.size].reshape(out.shape)
                np.matmul(left1[r0:r1], left2t, out=product)
                target *= product
            if i:
                out += tile
    return kernel if flatten else kernel.reshape(n1, 1, n2, 1)


def _left_kernel(left1: np.ndarray | None, left2: np.ndarray | None) -> np.ndarray:
    """L1_a L2_bᵀ for every pair of samples, shape (B1, m, B2, m) or broadcastable to it."""
    if left1 is None:
        assert left2 is not None
        return left2.transpose(2, 1, 0)[None]  # [·, c, b, d] = L2[b, d, c]
    if left2 is None:
        return left1[:, :, None, :]  # [a, c, ·, d] = L1[a, c, d]
    return np.einsum("ack,bdk->acbd", left1, left2, optimize=True)
