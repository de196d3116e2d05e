"""The seed's two-layer network, worked by hand.

x (n) → V → u = V x → y = f(u) → W → s = W y → z = g(s), E = ½‖d − z‖².
The seed derives, for the second layer, ∂E/∂W = δ yᵀ with δ = (z − d) ⊙ g′(s) and
the gradient handed down ∂E/∂y = δᵀ W; for the first layer ∂E/∂V = (∂E/∂y ⊙ f′(u)) xᵀ;
then gradient descent W ← W − η ∂E/∂W, V ← V − η ∂E/∂V.
"""

from __future__ import annotations

import numpy as np
import pytest

from jacnet import Identity, Kronecker, Linear, MSELoss, ReLU, Sequential, Sigmoid


def _seed_network(f: type, g: type, V: np.ndarray, W: np.ndarray) -> Sequential:
    first = Linear(V.shape[1], V.shape[0], dtype="float64")
    second = Linear(W.shape[1], W.shape[0], dtype="float64")
    model = Sequential([first, f(), second, g()])
    first.weight[...] = V
    second.weight[...] = W
    assert first.bias is not None and second.bias is not None
    first.bias[...] = 0.0
    second.bias[...] = 0.0
    return model


def test_hand_worked_numbers() -> None:
    """Every quantity by hand: f = ReLU, g = identity, integer-valued so nothing is rounded."""
    x = np.array([[1.0, 2.0]])
    V = np.array([[1.0, 0.0], [-1.0, 1.0]])  # u = V x = [1, 1], y = ReLU(u) = [1, 1]
    W = np.array([[2.0, -1.0]])             # s = W y = 1 = z
    d = np.array([[3.0]])                   # E = ½ (3 − 1)² = 2
    model = _seed_network(ReLU, Identity, V, W)
    first, _, second, _ = model.layers

    z = model(x)
    assert z.tolist() == [[1.0]]
    loss = MSELoss()
    E, dE_dz = loss.value_and_grad(z, d)
    assert E == 2.0
    assert dE_dz.tolist() == [[-2.0]]                      # ∂E/∂z = (z − d)ᵀ

    dE_dx = model.backward(dE_dz)
    assert second.grad_weight.tolist() == [[-2.0, -2.0]]   # δ yᵀ with δ = −2, y = [1, 1]
    assert second.grad_bias is not None and second.grad_bias.tolist() == [-2.0]
    # the gradient handed down: ∂E/∂y = δᵀ W = −2 · [2, −1]
    dE_dy = second.backward(dE_dz)
    assert dE_dy is not None and dE_dy.tolist() == [[-4.0, 2.0]]
    # first layer: (∂E/∂y ⊙ f′(u)) xᵀ = [−4, 2]ᵀ [1, 2]
    assert first.grad_weight.tolist() == [[-4.0, -8.0], [2.0, 4.0]]
    assert first.grad_bias is not None and first.grad_bias.tolist() == [-4.0, 2.0]
    assert dE_dx is not None and dE_dx.tolist() == [[-4.0 * 1 + 2.0 * -1, 2.0]]  # δ₁ᵀ V

    # one gradient-descent step, η = 0.05, as a whole-vector update of θ
    model.params -= 0.05 * model.grads
    np.testing.assert_allclose(second.weight, [[2.1, -0.9]], rtol=1e-15)
    np.testing.assert_allclose(first.weight, [[1.2, 0.4], [-1.1, 0.8]], rtol=1e-15)
    # u = [2.2, 0.4] (biases now [0.2, −0.1]); s = 2.1·2.2 − 0.9·0.4 + 0.1 = 4.36
    np.testing.assert_allclose(model(x), [[4.36]], rtol=1e-14)
    assert loss(model(x), d) == pytest.approx(0.5 * 1.36**2, rel=1e-13)  # down from 2


def test_sigmoid_network_matches_the_seeds_formulas() -> None:
    """f = g = sigmoid, as in the classic derivation, against formulas written out here."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3))
    V, W = rng.normal(size=(4, 3)), rng.normal(size=(2, 4))
    d = np.array([[0.2, 0.9]])
    model = _seed_network(Sigmoid, Sigmoid, V, W)
    first, _, second, _ = model.layers

    def sigmoid(t: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-t))

    u = V @ x[0]
    y = sigmoid(u)
    s = W @ y
    z = sigmoid(s)
    delta = (z - d[0]) * z * (1 - z)            # (z − d) ⊙ g′(s)
    dE_dW = np.outer(delta, y)                  # δ yᵀ
    dE_dy = delta @ W                           # δᵀ W, handed down
    dE_dV = np.outer(dE_dy * y * (1 - y), x[0])  # (∂E/∂y ⊙ f′(u)) xᵀ

    out = model(x)
    np.testing.assert_allclose(out[0], z, rtol=1e-15)
    model.backward(MSELoss().grad(out, d))
    np.testing.assert_allclose(second.grad_weight, dE_dW, rtol=1e-14)
    np.testing.assert_allclose(first.grad_weight, dE_dV, rtol=1e-14)

    # The same numbers as products of the structured Jacobians the seed names.
    dz_ds = model.layers[3].jacobian()                    # diag(g′(s))
    ds_dvecW = second.param_jacobian().blocks[0]           # I ⊗ yᵀ, shape m × (m·h)
    assert isinstance(ds_dvecW, Kronecker) and ds_dvecW.shape == (1, 2, 8)
    chain = dz_ds @ ds_dvecW                               # ∂z/∂vec(W)
    np.testing.assert_allclose((z - d) @ chain.dense()[0], dE_dW.reshape(1, -1), rtol=1e-14)
    np.testing.assert_allclose(
        (z - d) @ (dz_ds @ second.jacobian()).dense()[0], dE_dy[None, :], rtol=1e-14)
