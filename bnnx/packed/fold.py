"""BatchNorm folded into integer thresholds, exactly: a consumer's input bit at channel c is
`multiplier[c]·y ≥ threshold[c]` on the producer's integer sums y.

The thresholds are not derived from the BN's formula in other arithmetic: the float32 path
itself (the producer's `scaled`, flax's own `BatchNorm` module in eval, the link's exact
elementwise ops, the consumer's input quantizer, `sign(v) > 0`, so BN output 0.0 and −0.0 give
+1) is evaluated on every integer y with |y| ≤ K (a superset of the attainable sums: a conv's
zero-padded taps change their parity at the border), and the rule is fitted and checked against
every entry. XLA contracts a multiply and an add into one FMA in some fusions and not in others
(on this CPU: in an elementwise fusion, not in one with a max-pool), so the float path's own
bit near 0 depends on the program around it: the table is evaluated twice, jitted (contracted)
and op by op (every op rounded), and a layer where the two disagree anywhere keeps the float path.
A scaled layer has two multiply-adds (y·scale − mean, and BN's own); a program contracting one
and not the other is not evaluated.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnnx.packed.layer import PackedLayer, scaled

MAX_REDUCTION = 2 ** 24  # sums up to K are exact in float32 below this
ROWS, CHANNELS = 1024, 128  # one evaluation: values of y × channels


@flax.struct.dataclass
class SignThresholds:
    """Input bits of a consumer from a producer's integer sums y, per output channel of the
    producer: multiplier·y ≥ threshold (multiplier +1: the BN path increases in y, −1: it
    decreases, 0: the bit is constant)."""

    multiplier: jax.Array  # int32 (N,)
    threshold: jax.Array  # int32 (N,)
    producer: str = flax.struct.field(pytree_node=False)
    batch_norm: str = flax.struct.field(pytree_node=False)
    elementwise: tuple = flax.struct.field(pytree_node=False)  # graph.ElementOp after the BN
    nondecreasing: bool = flax.struct.field(pytree_node=False)  # scaled sums never decrease in y

    def bits(self, y: jax.Array) -> jax.Array:
        return self.multiplier * y >= self.threshold


def fit_step(bits: np.ndarray, k: int):
    """(multiplier, threshold), int32 (N,), with bits[y + k, c] == (multiplier[c]·y ≥ threshold[c])
    for every y in [−k, k], or None where some channel is not such a step."""
    ones = bits.sum(0)
    multiplier = np.sign(bits[-1].astype(np.int32) - bits[0].astype(np.int32)).astype(np.int32)
    threshold = (k + 1 - ones).astype(np.int32)  # the count of y with bit 1 fixes the step
    ys = np.arange(-k, k + 1, dtype=np.int32)[:, None]
    if not np.array_equal(multiplier * ys >= threshold, bits):
        return None
    return multiplier, threshold


def table_bits(layer: PackedLayer, variables, ys, batch_norm, elementwise, quantizer) -> jax.Array:
    """The consumer's input bits for producer sums `ys` (rows, N) on the float32 path."""
    v = batch_norm.apply(variables, scaled(layer, ys))
    for op in elementwise:
        v = op(v)
    return quantizer(v, train=False) > 0


_contracted_table_bits = jax.jit(table_bits, static_argnames=("batch_norm", "elementwise", "quantizer"))


def _channel_block(tree, start: int):
    """Channels start…start + CHANNELS of every per-channel array, the last repeated past the end."""
    def block(values):
        values = np.asarray(values)[start:start + CHANNELS]
        return jnp.asarray(np.pad(values, (0, CHANNELS - values.shape[0]), mode="edge"))

    return jax.tree.map(block, tree)


def _tables(layer: PackedLayer, batch_norm, variables, elementwise, quantizer):
    """(jitted, op-by-op) bits over y = −K…K, evaluated in blocks of ROWS × CHANNELS: one shape
    for every layer, so each path compiles once per BN and ops (op by op: once per op)."""
    k, n = layer.reduction, layer.kernel_shape[-1]
    ys = np.arange(-k, -k + ROWS * -(-(2 * k + 1) // ROWS), dtype=np.int32)
    rows = [jnp.asarray(np.broadcast_to(ys[s:s + ROWS, None], (ROWS, CHANNELS))) for s in range(0, len(ys), ROWS)]
    tables = ([], [])
    for start in range(0, n, CHANNELS):
        scale, bias = _channel_block((layer.scale, layer.bias), start)
        block = PackedLayer({}, scale, bias, kernel_shape=(), binary_inputs=True), _channel_block(variables, start)
        for evaluate, table in zip((_contracted_table_bits, table_bits), tables):
            bits = [evaluate(*block, chunk, batch_norm, elementwise, quantizer) for chunk in rows]
            table.append(np.concatenate([np.asarray(b) for b in bits])[:2 * k + 1, :n - start])
    return [np.concatenate(table, axis=1) for table in tables]


def sign_thresholds(layer: PackedLayer, producer: str, batch_norm_path: str, batch_norm, variables,
                    elementwise: tuple, quantizer, pooled: bool) -> SignThresholds | str:
    """The folded bits of one link, or why it keeps the float path. `pooled`: a max-pool stands
    between the producer and the BN; it commutes with y ↦ y·scale + bias only where that never
    decreases in y (no negative scale)."""
    k = layer.reduction
    if k >= MAX_REDUCTION:
        return f"K = {k} sums are not exact in float32"
    nondecreasing = layer.scale is None or bool(np.all(np.asarray(layer.scale) >= 0))
    if pooled and not nondecreasing:
        return "a negative scale before a max-pool: max and the scaled sums do not commute"
    jitted, op_by_op = _tables(layer, batch_norm, variables, elementwise, quantizer)
    if not np.array_equal(jitted, op_by_op):
        y, channel = np.argwhere(jitted != op_by_op)[0]
        return f"the float path's bit depends on FMA contraction (y = {y - k}, channel {channel})"
    fitted = fit_step(jitted, k)
    if fitted is None:
        return "the float path's bits are not a step in y"
    return SignThresholds(jnp.asarray(fitted[0]), jnp.asarray(fitted[1]), producer, batch_norm_path,
                          tuple(elementwise), nondecreasing)
