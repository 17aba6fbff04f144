"""BatchNorm folded into integer thresholds: crafted BN parameters against the float path and a
NumPy reference on every |y| ≤ K, and the places where folding is refused."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnnx.models.common import hardtanh
from bnnx.packed.fold import SignThresholds, fit_step, sign_thresholds
from bnnx.packed.graph import ElementOp
from bnnx.packed.layer import PackedLayer, scaled
from bnnx.quantizers import SignSTE

K = 12  # a dense layer's reduction length: its sums are the even integers in [−12, 12]
EPSILON = 1e-5
BATCH_NORM = nn.BatchNorm(use_running_average=True, epsilon=EPSILON)
HARDTANH = (ElementOp(lax.max_p, (-1.0, None)), ElementOp(lax.min_p, (1.0, None)))  # jnp.clip's ops
# channel: (the layer's scale, BN scale γ, BN bias β, running mean, running variance)
CRAFTED = {
    "output exactly +0.0 at y = 4": (1.0, 1.0, 0.0, 4.0, 1.0),
    "output exactly -0.0 at y = 2, negative γ": (1.0, -2.0, -0.0, 2.0, 1.0),
    "γ = 0, β > 0: always +1": (1.0, 0.0, 0.5, 0.0, 1.0),
    "γ = 0, β < 0: always -1": (1.0, 0.0, -0.5, 0.0, 1.0),
    "γ = 0, β = -0.0: ±0, always +1": (1.0, 0.0, -0.0, 3.0, 1.0),
    "huge variance": (1.0, 1.0, 0.0, 0.5, 1e30),
    "zero variance": (1.0, 1.0, 0.0, -0.25, 0.0),
    "negative layer scale": (-0.75, 1.0, 0.1, 0.0, 1.0),
    "zero layer scale": (0.0, 1.0, 0.0, 0.0, 1.0),
    "step beyond K: always -1": (1.0, 1.0, 0.0, 100.0, 1.0),
}
MULTIPLIERS = [1, -1, 0, 0, 0, 1, 1, -1, 0, 0]


def crafted_layer(channels: dict):
    scale, gamma, beta, mean, var = (jnp.asarray(column, jnp.float32) for column in zip(*channels.values()))
    layer = PackedLayer({}, scale, None, kernel_shape=(K, len(channels)), binary_inputs=True)
    variables = {"params": {"scale": gamma, "bias": beta}, "batch_stats": {"mean": mean, "var": var}}
    return layer, variables


def float_path_bits(layer, variables, ys):
    """The engine's float path, as a jitted program of its own: scale, flax's BN, hardtanh, sign."""
    forward = lambda v, y: SignSTE()(hardtanh(BATCH_NORM.apply(v, scaled(layer, y))), train=False) > 0  # noqa: E731
    return np.asarray(jax.jit(forward)(variables, ys))


def numpy_bits(channels: dict, ys):
    """float32 op by op in NumPy, sign(0) = +1 (-0.0 ≥ 0); 1/√ in float64 is as good as rsqrt here:
    the ties are exact zeros of y − mean, and the other channels are far from 0."""
    scale, gamma, beta, mean, var = (np.asarray(column, np.float32) for column in zip(*channels.values()))
    multiplier = (1 / np.sqrt(var.astype(np.float64) + EPSILON)).astype(np.float32) * gamma
    out = (ys.astype(np.float32) * scale - mean) * multiplier + beta
    return np.clip(out, -1, 1) >= 0


def test_thresholds_equal_the_float_path_on_every_sum_with_ties_and_degenerate_channels():
    layer, variables = crafted_layer(CRAFTED)
    ys = np.arange(-K, K + 1, dtype=np.int32)[:, None]
    folded = sign_thresholds(layer, "producer", "bn", BATCH_NORM, variables, HARDTANH, SignSTE(), pooled=False)
    assert isinstance(folded, SignThresholds), folded
    bits = np.asarray(folded.bits(jnp.asarray(ys)))
    np.testing.assert_array_equal(
        bits, float_path_bits(layer, variables, jnp.broadcast_to(ys, (2 * K + 1, len(CRAFTED))))
    )
    np.testing.assert_array_equal(bits, numpy_bits(CRAFTED, ys))
    assert np.asarray(folded.multiplier).tolist() == MULTIPLIERS
    at = lambda y, channel: bits[y + K, list(CRAFTED).index(channel)]  # noqa: E731
    assert at(4, "output exactly +0.0 at y = 4") and not at(3, "output exactly +0.0 at y = 4")
    assert at(2, "output exactly -0.0 at y = 2, negative γ") and not at(3, "output exactly -0.0 at y = 2, negative γ")
    bn_at_two = BATCH_NORM.apply(variables, scaled(layer, jnp.full((1, len(CRAFTED)), 2)))
    assert np.signbit(np.asarray(bn_at_two)[0, 1])  # the tie really is -0.0


def test_an_exact_zero_from_the_bias_is_a_tie_under_any_rounding():
    """β = −(4·m) with m the BN's own multiplier: 4·m is exact, so y = 4 gives 0.0 with or without FMA."""
    gamma, var = np.float32(1.3), np.float32(2.0)
    multiplier = np.float32(jax.jit(lambda v, g: lax.rsqrt(v + EPSILON) * g)(var, gamma))
    channels = {"zero from β at y = 4": (1.0, gamma, -4 * multiplier, 0.0, var)}
    layer, variables = crafted_layer(channels)
    folded = sign_thresholds(layer, "producer", "bn", BATCH_NORM, variables, (), SignSTE(), pooled=False)
    assert isinstance(folded, SignThresholds), folded
    assert (int(folded.multiplier[0]), int(folded.threshold[0])) == (1, 4)  # y ≥ 4 → +1


def fma_dependent_channel():
    """A channel whose bit at y = 3 is +1 when 3·m + β is rounded in two steps (3·m rounds to −β)
    and −1 when contracted into one FMA (3·m is just below −β)."""
    for gamma in np.arange(0.05, 2.0, 0.05, dtype=np.float32):
        multiplier = np.float32(jax.jit(lambda v, g: lax.rsqrt(v + EPSILON) * g)(np.float32(1.0), gamma))
        product = np.float32(3 * np.float64(multiplier))
        if product > 3 * np.float64(multiplier):
            return (1.0, gamma, -product, 0.0, 1.0)
    raise AssertionError("no γ in the list rounds 3·m up")


def test_a_bit_that_depends_on_fma_contraction_is_not_folded():
    """Where XLA contracts the multiply-add (this project's CPUs do), the channel's bit at y = 3
    depends on the program and the layer keeps the float path; where it does not, the bit is
    the same either way and the fold must reproduce it."""
    channels = {"fma-dependent": fma_dependent_channel(), "plain": (1.0, 1.0, 0.0, 0.0, 1.0)}
    layer, variables = crafted_layer(channels)
    y = jnp.full((1, 2), 3)
    jitted_bit = np.asarray(jax.jit(lambda v, y: BATCH_NORM.apply(v, scaled(layer, y)))(variables, y))[0, 0] >= 0
    op_by_op_bit = np.asarray(BATCH_NORM.apply(variables, scaled(layer, y)))[0, 0] >= 0
    found = sign_thresholds(layer, "producer", "bn", BATCH_NORM, variables, (), SignSTE(), pooled=False)
    if jitted_bit != op_by_op_bit:
        assert isinstance(found, str) and "FMA" in found and "y = 3, channel 0" in found
    else:
        assert isinstance(found, SignThresholds), found
        assert bool(found.bits(jnp.asarray([3, 3]))[0]) == bool(jitted_bit)


def test_a_negative_scale_before_a_max_pool_is_not_folded():
    channels = {"negative scale": (-1.0, 1.0, 0.0, 0.0, 1.0)}
    layer, variables = crafted_layer(channels)
    assert isinstance(sign_thresholds(layer, "p", "bn", BATCH_NORM, variables, (), SignSTE(), pooled=False),
                      SignThresholds)
    found = sign_thresholds(layer, "p", "bn", BATCH_NORM, variables, (), SignSTE(), pooled=True)
    assert isinstance(found, str) and "max-pool" in found


def test_fit_step_finds_each_direction_and_rejects_what_is_no_step():
    k = 2  # y = -2 … 2
    columns = {"increasing": [0, 0, 1, 1, 1], "decreasing": [1, 1, 1, 0, 0], "ones": [1] * 5, "zeros": [0] * 5}
    multiplier, threshold = fit_step(np.array(list(columns.values()), bool).T, k)
    assert multiplier.tolist() == [1, -1, 0, 0] and threshold.tolist() == [0, 0, -2, 3]
    assert fit_step(np.array([[0, 1, 0, 1, 1]], bool).T, k) is None


def test_a_binarized_flax_model_folds_the_batch_norm_between_its_binary_layers(tmp_path):
    """No bnnx layers and no flags: nn.Conv → nn.BatchNorm → jnp.clip → max-pool → reshape →
    nn.Dense, read off the engine's program like a zoo model's."""
    from bnnx.models import ModelConfig
    from bnnx.packed.engine import load, packed_apply
    from tests.test_packed import export_model

    config = ModelConfig(name="external", target="tests.models_external:BatchNormNet")
    model, variables, x = export_model(config, (8, 8, 1), tmp_path)
    packed_model, packed, _ = load(tmp_path / "model.npz")
    assert set(packed.layers) == {"Conv_1", "Dense_0"} and set(packed.folds) == {"Dense_0"}
    assert (packed.folds["Dense_0"].producer, packed.folds["Dense_0"].batch_norm) == ("Conv_1", "BatchNorm_1")
    expected = model.apply(variables, x, train=False)
    got = jax.jit(lambda p, x: packed_apply(packed_model, p, x))(packed, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-4)
