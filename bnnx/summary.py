"""Per-layer size, storage and compute of a model: the numbers behind `bnnx summary`.

Storage counts bits per weight once packed: a binary kernel 1 bit, a ternary kernel 2 bits
(two bit-planes, the layout `bnnx export` writes; the information bound would be
log2 3 ≈ 1.585 bits), every other parameter (first/last/shortcut kernels, BN, biases,
learned scales) 32 bits. A layer with `scaling: mean_abs` also stores its per-channel scale
(32 bits per output channel), which is not a parameter. The compression ratio is
32 × parameters / packed bits.

MACs are multiply-accumulates per example; those of layers with quantized (binary or ternary)
kernels are "binary" (additions only), and those that also see binary inputs are "xnor"
(XNOR-popcount, the BOPs of Bi-Real Net and ReActNet).

Works from the data set's name alone (known input shapes), or `dataset=shapes`'s own shapes, so
nothing needs to be downloaded.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from bnnx.data import DatasetConfig, dataset_class, dataset_shape  # noqa: F401 (API: dataset_shape)
from bnnx.layers import LayerRecord, flat, record_layers
from bnnx.models import ModelConfig, build_model

FLOAT_BITS = 32
TERNARY_BITS = 2  # two bit-planes; log2(3) ≈ 1.585 is the entropy bound
BITS = {"binary": 1, "ternary": TERNARY_BITS, "real": FLOAT_BITS}

@dataclasses.dataclass(frozen=True)
class LayerSummary:
    name: str
    kind: str
    role: str
    precision: str  # "binary" | "ternary" | "real"
    binary_inputs: bool
    kernel_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    bits: int
    macs: int

    @property
    def mac_kind(self) -> str:
        if self.precision == "real":
            return "real"
        return "xnor" if self.binary_inputs else "binary"


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    model: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    layers: list[LayerSummary]
    other_params: int  # BN, biases, learned scales: stored as float32

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers) + self.other_params

    def params_of(self, precision: str) -> int:
        extra = self.other_params if precision == "real" else 0
        return sum(layer.params for layer in self.layers if layer.precision == precision) + extra

    @property
    def packed_bits(self) -> int:
        return sum(layer.bits for layer in self.layers) + FLOAT_BITS * self.other_params

    @property
    def float_bits(self) -> int:
        return FLOAT_BITS * self.params

    @property
    def compression(self) -> float:
        return self.float_bits / self.packed_bits

    def macs_of(self, *kinds: str) -> int:
        return sum(layer.macs for layer in self.layers if layer.mac_kind in kinds)

    def totals(self) -> dict:
        return {
            "params": self.params,
            "binary_params": self.params_of("binary"),
            "ternary_params": self.params_of("ternary"),
            "real_params": self.params_of("real"),
            "packed_bits": self.packed_bits,
            "float32_bits": self.float_bits,
            "packed_kib": kib(self.packed_bits),
            "float32_kib": kib(self.float_bits),
            "compression_ratio": self.compression,
            "macs": self.macs_of("real", "binary", "xnor"),
            "binary_macs": self.macs_of("binary", "xnor"),
            "xnor_macs": self.macs_of("xnor"),
            "real_macs": self.macs_of("real"),
        }

    def to_dict(self) -> dict:
        layers = [{**dataclasses.asdict(layer), "mac_kind": layer.mac_kind, "packed_kib": kib(layer.bits),
                   "float32_kib": kib(FLOAT_BITS * layer.params)} for layer in self.layers]
        return {"model": self.model, "dataset": self.dataset, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "bits_per_weight": BITS,
                "ternary_convention": "2 bits (two bit-planes); log2(3)=1.585 is the entropy bound",
                "layers": layers, "other_params": self.other_params, "total": self.totals()}


def kib(bits: int) -> float:
    return bits / 8 / 1024


def precision_of(record: LayerRecord, config: ModelConfig) -> str:
    if not record.binary:
        return "real"
    return "ternary" if record.kernel_levels == 3 else "binary"


def run_precision(records: list[LayerRecord], config: ModelConfig, params, quant) -> dict[str, int]:
    """A trained state's parameters by the precision its forward pass gives them: the weights of
    a binary-bound kernel count as binary (ternary) where its precision mask is on and as real
    where it is off (PPT's FP phase, ILB's layers not yet binarized, RPR's relaxed weights)."""
    masks = flat(quant)
    counts = {"params": sum(math.prod(jnp.shape(leaf)) for leaf in flat(params).values()),
              "binary_params": 0, "ternary_params": 0}
    for record in records:
        precision = precision_of(record, config)
        if precision != "real":
            mask = jnp.broadcast_to(masks.get((*record.path, "kernel_mask"), 1.0), record.kernel_shape)
            counts[f"{precision}_params"] += int(jnp.sum(mask > 0))
    counts["real_params"] = counts["params"] - counts["binary_params"] - counts["ternary_params"]
    return counts


def layer_summary(record: LayerRecord, config: ModelConfig) -> LayerSummary:
    precision = precision_of(record, config)
    params = math.prod(record.kernel_shape)
    scale_bits = FLOAT_BITS * record.kernel_shape[-1] if precision != "real" and config.scaling == "mean_abs" else 0
    return LayerSummary(record.name, record.kind, record.role, precision, record.binary_inputs,
                        record.kernel_shape, record.output_shape, params,
                        params * BITS[precision] + scale_bits, record.macs)


def summarize(config: ModelConfig, dataset: str | DatasetConfig, image_size: int = 224) -> ModelSummary:
    """The summary of `config` on the input shape of `dataset` (a name, or a data set's config:
    `shapes` states its own), from abstract shapes only (no init)."""
    if isinstance(dataset, str):
        dataset = dataset_class(dataset)(name=dataset, image_size=image_size)
    shape, classes = dataset.shapes()
    model = build_model(config, classes)
    example = jnp.zeros((1, *shape), jnp.float32)
    records = record_layers(model, example)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), example, train=False))["params"]
    total = sum(math.prod(leaf.shape) for leaf in flat(params).values())
    layers = [layer_summary(record, config) for record in records]
    return ModelSummary(config.target or config.name, dataset.name, shape, classes, layers,
                        total - sum(layer.params for layer in layers))


def render(summary: ModelSummary):
    """A rich table: one row per layer, one for the other parameters, one for the total."""
    from rich.table import Table

    table = Table(title=f"{summary.model} on {summary.dataset} {summary.input_shape}, {summary.num_classes} classes",
                  caption=f"bits per weight: binary 1, ternary {TERNARY_BITS} (two bit-planes; log2 3 = 1.585 is "
                          f"the bound), real {FLOAT_BITS}; KiB = 1024 bytes")
    for column in ("layer", "role", "kernel", "output", "params", "precision", "bin. in", "bits",
                   "KiB packed", "KiB fp32", "MACs", "MAC kind"):
        table.add_column(column, justify="left" if column in ("layer", "role", "precision", "MAC kind") else "right",
                         overflow="fold")
    for layer in summary.layers:
        table.add_row(layer.name, layer.role, "×".join(map(str, layer.kernel_shape)),
                      "×".join(map(str, layer.output_shape)), f"{layer.params:,}", layer.precision,
                      "yes" if layer.binary_inputs else "no", f"{layer.bits:,}", f"{kib(layer.bits):,.2f}",
                      f"{kib(FLOAT_BITS * layer.params):,.2f}", f"{layer.macs:,}", layer.mac_kind)
    other_bits = FLOAT_BITS * summary.other_params
    table.add_row("other (BN, biases, scales)", "", "", "", f"{summary.other_params:,}", "real", "", f"{other_bits:,}",
                  f"{kib(other_bits):,.2f}", f"{kib(other_bits):,.2f}", "", "", end_section=True)
    totals = summary.totals()
    table.add_row("total", "", "", "", f"{totals['params']:,}", "", "", f"{totals['packed_bits']:,}",
                  f"{totals['packed_kib']:,.2f}", f"{totals['float32_kib']:,.2f}", f"{totals['macs']:,}", "")
    return table


def totals_text(summary: ModelSummary) -> str:
    """The whole-model figures as plain lines (under the table)."""
    t = summary.totals()
    return "\n".join([
        f"parameters: {t['params']:,} = binary {t['binary_params']:,} + ternary {t['ternary_params']:,} "
        f"+ real {t['real_params']:,}",
        f"storage: {t['packed_kib']:,.2f} KiB packed vs {t['float32_kib']:,.2f} KiB float32",
        f"MACs: {t['macs']:,} = binary {t['binary_macs']:,} (xnor {t['xnor_macs']:,}) + real {t['real_macs']:,}",
        f"compression ratio: {t['compression_ratio']:.4f}x (float32 bits / packed bits)",
    ])
