"""bnnx.binarize on flax models that know nothing of bnnx (defined here, no bnnx imports in them)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest


class Mixer(nn.Module):
    """setup-style submodules, a Dense shared by two calls, Dense on 3-D inputs, attention, Einsum."""

    def setup(self):
        self.embed = nn.Dense(8)
        self.shared = nn.Dense(8, use_bias=False)
        self.attn = nn.MultiHeadDotProductAttention(num_heads=2)
        self.mix = nn.Einsum((8, 8), "btd,de->bte", use_bias=False)
        self.head = nn.Dense(3)

    def __call__(self, x):
        x = self.embed(x)
        x = self.shared(jnp.tanh(self.shared(x)))
        x = x + self.attn(x)
        return self.head(self.mix(x).mean(axis=1))


def sign(x):
    return jnp.where(x >= 0, 1.0, -1.0)


def forward_calls(model, variables, x):
    """{path: (module, input, output)} of every Dense/DenseGeneral/Conv/Einsum call, as run."""
    calls = {}

    def capture(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(
            context.module, (nn.Dense, nn.Conv, nn.DenseGeneral, nn.Einsum)
        ):
            calls["/".join(context.module.scope.path)] = (context.module, args[0], out)
        return out

    with nn.intercept_methods(capture):
        model.apply(variables, x, train=False)
    return calls


def reference_output(module, x, kernel, bias):
    if isinstance(module, nn.Conv):
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
        y = jnp.dot(x, kernel)
    return y if bias is None else y + bias


def layer_params(params, path):
    node = params
    for key in path.split("/"):
        node = node[key]
    return node


@pytest.mark.parametrize("method", ["ste", "bop", "bnew", "rpr"])
def test_external_model_trains_binary_through_every_method(method, compose, tmp_path, digits):
    """tests/models_external.py's SmallNet, as the CLI and sweep tests below train it: the same
    model, batch and (for STE and RPR's FP start) epochs, so their compiled steps are shared."""
    from bnnx.train.experiment import build_experiment
    from bnnx.train.loop import train

    model = ("model=external", "model.target=tests.models_external:SmallNet", "dataset=digits")
    extra = []
    if method == "rpr":  # RPR starts from a full-precision run, as in its paper (the sweep's FP cell)
        start = train(compose(*model, "method=fp", "epochs=2", f"out_dir={tmp_path / 'fp'}"), dataset=digits)
        extra = [f"method.init_from={start.run_dir}"]
    result = train(compose(*model, f"method={method}", "epochs=12", f"out_dir={tmp_path / method}", *extra),
                   dataset=digits)
    assert result.status == "completed"
    # measured (12 epochs, seed 0): ste 0.960, bop 0.964, bnew 0.902, rpr 0.949 (after 2 fp epochs: 0.944)
    assert result.summary["test_accuracy"] > 0.80

    from bnnx.train.restore import restore_trained

    run = restore_trained(result.run_dir, digits)
    config, model, variables = run.config, run.model, run.variables
    layers = {r.name: r for r in build_experiment(config, dataset=digits).layers}
    assert [n for n, r in layers.items() if r.binary] == ["Conv_1", "Dense_0"]
    assert {layers["Conv_0"].role, layers["Dense_1"].role} == {"first", "last"}
    x = digits.normalize(jnp.asarray(digits.test_images[:16], jnp.float32))
    for path, (module, inputs, out) in forward_calls(model, variables, x).items():
        p = layer_params(variables["params"], path)
        record = layers[path]
        if record.binary:
            assert np.all(np.asarray(layer_params(variables["quant"], path)["kernel_mask"]) == 1.0)
            kernel = sign(p["kernel"])
            inputs = sign(inputs) if record.binary_inputs else inputs
        else:
            kernel = p["kernel"]
            assert not np.all(np.isin(np.asarray(kernel), (-1.0, 1.0)))
        np.testing.assert_allclose(out, reference_output(module, inputs, kernel, p.get("bias")), rtol=1e-4, atol=1e-3)
    assert layers["Conv_1"].binary_inputs == (method != "rpr")  # RPR quantizes weights only


def test_parameter_tree_and_values_are_the_models_own():
    from bnnx import binarize

    x = jnp.ones((2, 5, 4))
    plain = Mixer().init(jax.random.key(3), x)
    binarized = binarize(Mixer()).init(jax.random.key(3), x, train=False)
    assert jax.tree.structure(plain["params"]) == jax.tree.structure(binarized["params"])
    for a, b in zip(jax.tree.leaves(plain["params"]), jax.tree.leaves(binarized["params"])):
        np.testing.assert_array_equal(a, b)
    # the user's checkpoint loads: its params plus bnnx's masks give the binarized forward
    y = binarize(Mixer()).apply({"params": plain["params"], "quant": binarized["quant"]}, x)
    assert y.shape == (2, 3)


def test_shared_module_nested_attention_and_einsum_are_binarized_once():
    from bnnx import binarize
    from bnnx.layers import param_labels, record_layers

    model = binarize(Mixer())
    x = jnp.ones((2, 5, 4))
    records = record_layers(model, x)
    names = [r.name for r in records]
    assert names == ["embed", "shared", "attn/query", "attn/key", "attn/value", "attn/out", "mix", "head"]
    assert [r.role for r in records][0] == "first" and records[-1].role == "last"
    assert [r.name for r in records if r.binary] == names[1:-1]
    assert records[1].output_shape == (5, 8)  # Dense on (batch, tokens, features)
    variables = model.init(jax.random.key(0), x, train=False)
    labels = param_labels(variables["params"], variables["quant"])
    assert labels["attn"]["query"]["kernel"] == "binary" and labels["attn"]["query"]["bias"] == "real"
    assert labels["embed"]["kernel"] == "real" and labels["head"]["kernel"] == "real"
    # the shared Dense: one kernel, one mask, and both calls see sign(kernel) and sign(input)
    calls = []

    def capture(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if "/".join(context.module.scope.path) == "shared" and context.method_name == "__call__":
            calls.append((args[0], out))
        return out

    with nn.intercept_methods(capture):
        model.apply(variables, x)
    kernel = sign(variables["params"]["shared"]["kernel"])
    assert len(calls) >= 2
    for inputs, out in calls:
        np.testing.assert_allclose(out, jnp.dot(sign(inputs), kernel), rtol=1e-5, atol=1e-4)


def test_rules_choose_precision_and_overrides():
    from bnnx import binarize
    from bnnx.layers import record_layers

    rules = [("attn/(query|key)", "real"), {"pattern": "mix", "precision": "ternary"},
             ("shared", "binary", {"input_quantizer": "identity"}), ("head", "binary")]
    records = {r.name: r for r in record_layers(binarize(Mixer(), rules=rules), jnp.ones((1, 5, 4)))}
    assert not records["attn/query"].binary and not records["attn/key"].binary and records["attn/value"].binary
    assert records["mix"].binary and records["mix"].kernel_levels == 3
    assert records["shared"].binary and not records["shared"].binary_inputs
    assert records["head"].binary  # an explicit rule wins over the real last layer
    assert not records["embed"].binary


@pytest.mark.parametrize("rules, message", [
    ([("nothing_here", "binary")], "matches no layer"),
    ([("embed", "octal")], "unknown precision"),
    ([("embed", "binary", {"kernel_quantizer": "nope"})], "unknown quantizer"),
    ([("(", "real")], "not a regular expression"),
])
def test_bad_rules_are_one_line_config_errors(rules, message):
    from bnnx import binarize
    from bnnx.errors import ConfigError
    from bnnx.layers import record_layers

    with pytest.raises(ConfigError, match=message):
        record_layers(binarize(Mixer(), rules=rules), jnp.ones((1, 5, 4)))


def test_cli_trains_summarizes_and_exports_the_external_model(run_cli, tmp_path):
    out = tmp_path / "run"
    code, text = run_cli("train", "model=external", "model.target=tests.models_external:SmallNet", "dataset=digits",
                         "epochs=2", f"out_dir={out}")
    assert code == 0, text
    code, text = run_cli("summary", "model=external", "model.target=tests.models_external:SmallNet", "dataset=digits")
    assert code == 0 and "Conv_1" in text and "xnor" in text
    code, text = run_cli("export", str(out))
    assert code == 0 and (out / "export.npz").exists()


@pytest.mark.parametrize("target, message", [
    ("no_such_package.models:Net", "cannot import no_such_package.models"),
    ("tests.models_external:Missing", "has no Missing"),
    ("tests.models_external", "package.module:ClassName"),
])
def test_cli_bad_target_exits_2_with_one_line(run_cli, tmp_path, target, message):
    code, text = run_cli("train", "model=external", f"model.target={target}", "dataset=digits", "epochs=1",
                         f"out_dir={tmp_path / 'bad'}")
    assert code == 2 and message in text and "Traceback" not in text
    assert not (tmp_path / "bad").exists()


class DropoutBlock(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = nn.Dropout(0.5)(nn.Dense(16)(nn.LayerNorm()(x)), deterministic=deterministic)
        return x + nn.Dense(x.shape[-1])(nn.gelu(y))


class RematNet(nn.Module):
    """A `deterministic` flag instead of `train`, dropout, nn.remat'd blocks, BatchNorm."""

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.Dense(8)(x)
        for i in range(2):
            x = nn.remat(DropoutBlock, static_argnums=(2,))(name=f"block{i}")(x, deterministic)
        x = nn.BatchNorm(use_running_average=deterministic)(x)
        return nn.Dense(3)(x.mean(axis=1))


def test_deterministic_flag_dropout_and_remat():
    from bnnx import binarize
    from bnnx.layers import record_layers

    model, x = binarize(RematNet()), jnp.ones((2, 5, 4))
    assert [r.name for r in record_layers(model, x) if r.binary] == [
        "block0/Dense_0", "block0/Dense_1", "block1/Dense_0", "block1/Dense_1"]
    variables = model.init(jax.random.key(0), x, train=False)
    train = [model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(k)})[0]
             for k in (1, 2)]
    assert not np.allclose(train[0], train[1])  # train=True reached the model as deterministic=False
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


def test_sweep_runs_an_external_model_with_distillation(run_cli, tmp_path):
    import yaml

    spec = {
        "name": "external", "title": "t", "source": "s",
        "base": ["model=external", "model.target=tests.models_external:SmallNet", "dataset=digits"],
        "axes": [{"name": "method", "values": [
            {"key": "fp", "name": "Real", "overrides": ["method=fp"]},
            {"key": "bop", "name": "Bop", "overrides": ["method=bop", "distill.teacher=${cell:fp}"]}]}],
        "rows": ["method"], "columns": [], "presets": {"smoke": {"seeds": 1, "overrides": ["epochs=2"]}},
    }
    path = tmp_path / "external.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, text = run_cli("sweep", str(path), "--preset", "smoke", "--out", str(tmp_path / "sweep"))
    assert code == 0, text
    summaries = sorted((tmp_path / "sweep").rglob("summary.json"))
    assert len(summaries) == 2


class Outer(nn.Module):
    """A model built inside a bigger one and binarized there."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        from bnnx import binarize

        return nn.Dense(2)(binarize(Mixer(), rules=[("Mixer_0/head", "binary")])(x, train=train))


def test_a_binarized_submodule_sees_its_full_paths():
    from bnnx.layers import record_layers

    records = {r.name: r for r in record_layers(Outer(), jnp.ones((1, 5, 4)))}
    names = ["embed", "shared", "attn/query", "attn/key", "attn/value", "attn/out", "mix", "head"]
    assert list(records) == [f"Mixer_0/{name}" for name in names]  # the submodule's own scope, shared
    assert [name for name, r in records.items() if r.binary] == [f"Mixer_0/{name}" for name in names[1:]]
