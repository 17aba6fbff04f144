"""The zoo's ViT: a plain flax model whose attention and MLP layers bnnx.binarize makes binary."""

from __future__ import annotations

import pytest

from bnnx.layers import flat, param_labels, record_layers

TINY = ("model=vit", "model.patch_size=4", "model.dim=32", "model.depth=2", "model.heads=2", "model.mlp_dim=64")


def vit_layers(compose, *overrides):
    import jax
    import jax.numpy as jnp

    from bnnx.models import build_model

    config = compose(*TINY, "dataset=digits", *overrides).trained_model
    model = build_model(config, num_classes=10)
    x = jnp.zeros((1, 8, 8, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return record_layers(model, x), variables


@pytest.mark.parametrize("activations, binary_inputs", [("false", False), ("true", True)])
def test_attention_and_mlp_are_binary_embeddings_norms_and_head_real(compose, activations, binary_inputs):
    layers, variables = vit_layers(compose, f"model.binary_activations={activations}")
    expected = [f"block{i}/{name}" for i in range(2)
                for name in ("attn/query", "attn/key", "attn/value", "attn/out", "mlp_in", "mlp_out")]
    assert [r.name for r in layers if r.binary] == expected
    assert [r.name for r in layers if not r.binary] == ["patch_embed", "head"]
    assert all(r.binary_inputs == binary_inputs for r in layers if r.binary)
    labels = flat(param_labels(variables["params"], variables["quant"]))
    assert {"/".join(p) for p, label in labels.items() if label == "binary"} == {f"{n}/kernel" for n in expected}
    assert labels[("pos_embed",)] == labels[("block0", "norm1", "scale")] == labels[("head", "kernel")] == "real"


def test_fp_twin_has_no_binary_layer(compose):
    layers, variables = vit_layers(compose, "method=fp")
    assert not any(r.binary for r in layers) and "quant" not in variables


def test_tiny_binary_vit_learns_digits(compose, tmp_path, digits):
    from bnnx.train.loop import train

    result = train(compose(*TINY, "dataset=digits", "epochs=10", f"out_dir={tmp_path / 'run'}"), dataset=digits)
    # measured: 0.869 (W1A32, 10 epochs, seed 0; 0.50 after the first epoch)
    assert result.summary["test_accuracy"] > 0.75
