"""larq/Keras model → a `KerasGraph` node list and its bnnx variables.

Each layer maps as `bnnx.interop.larq_layers` and each quantizer as `bnnx.interop.larq_quantizers`
say (inference forward identical; docs/larq-migration.md has the table and the gradients). A
Sequential, a functional Model or a subclass of Model saved with a functional config (larq-zoo's
BinaryDenseNet) is read; a final softmax is dropped: bnnx models return logits."""

from __future__ import annotations

from bnnx.errors import ConfigError
from bnnx.interop.keras_file import KerasFile
from bnnx.interop.keras_graph import INPUT
from bnnx.interop.larq_layers import layer_node


def import_model(keras: KerasFile) -> tuple[list[dict], dict, tuple[int, ...]]:
    """(graph, variables {"params", "batch_stats"}, input shape without batch)."""
    kind, config = str(keras.config.get("class_name")), keras.config.get("config") or {}
    if kind != "Sequential" and not {"layers", "input_layers", "output_layers"} <= set(config):
        raise ConfigError(f"cannot import a Keras {kind!r}; expected a Sequential or functional Model")
    layers = config.get("layers") or []
    if kind == "Sequential":
        layers = _chain(layers)
    aliases: dict[str, str] = {}
    graph, params, stats, shape = [], {}, {}, None
    for layer in layers:
        class_name, layer_config = layer["class_name"], layer.get("config") or {}
        name = str(layer_config.get("name") or layer.get("name"))
        where = f"layer {name} ({class_name})"
        inputs = [aliases.get(i, i) for i in _inbound(layer, where)]
        shape = shape or _input_shape(layer_config)
        if class_name == "InputLayer":
            aliases[name] = INPUT
            continue
        node, layer_params, layer_stats = layer_node(class_name, layer_config, keras.weights.get(name, []), where)
        if node is None:
            aliases[name] = inputs[0]
            continue
        graph.append({"name": name, "inputs": inputs, **node})
        if layer_params:
            params[name] = layer_params
        if layer_stats:
            stats[name] = layer_stats
    if shape is None:
        raise ConfigError("the model records no input shape; build it with an Input or input_shape before saving")
    return _finish(graph, keras, aliases, kind, config), {"params": params, "batch_stats": stats}, shape


def _finish(graph: list[dict], keras: KerasFile, aliases: dict, kind: str, config: dict) -> list[dict]:
    """The graph ending at the model's output, a final softmax dropped (bnnx returns logits)."""
    if kind != "Sequential":
        outputs = config.get("output_layers") or []
        if len(outputs) != 1:
            raise ConfigError(f"the model has {len(outputs)} outputs; bnnx imports single-output classifiers")
        output = aliases.get(_history(outputs[0])[0], _history(outputs[0])[0])
        if output != graph[-1]["name"]:
            graph = graph + [{"name": "output", "op": "activation", "activation": "linear", "inputs": [output]}]
    last = graph[-1]
    if last.get("activation") == "softmax":
        graph = graph[:-1] if last["op"] == "activation" else graph[:-1] + [{**last, "activation": "linear"}]
    for node in graph:
        if node.get("activation") == "softmax":
            raise ConfigError(f"layer {node['name']}: softmax inside the model is not supported (only a final one)")
    return graph


def _chain(layers: list[dict]) -> list[dict]:
    """A Sequential's layers with the inbound links a functional model would record."""
    out, previous = [], INPUT
    for layer in layers:
        name = (layer.get("config") or {}).get("name")
        out.append({**layer, "inbound_nodes": [[[previous, 0, 0, {}]]]})
        previous = name
    return out


def _inbound(layer: dict, where: str) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ConfigError(f"{where} is called {len(nodes)} times; shared layers are not supported")
    return [] if not nodes else _history(nodes[0])


def _history(value) -> list[str]:
    """The layer names a serialized Keras call refers to (legacy [name, node, tensor, kwargs]
    lists or keras_history entries), first operand first."""
    if isinstance(value, dict):
        if "keras_history" in value:
            return [value["keras_history"][0]]
        return [name for item in value.values() for name in _history(item)]
    if isinstance(value, (list, tuple)):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int) and isinstance(value[2], int):
            return [value[0]] + (_history(value[3]) if len(value) > 3 else [])
        return [name for item in value for name in _history(item)]
    return []


def _input_shape(config: dict) -> tuple[int, ...] | None:
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if shape is None:
        return None
    if any(side is None for side in shape[1:]):
        raise ConfigError(f"the model's input shape {shape[1:]} is not fixed; save it with a fixed input shape")
    return tuple(int(side) for side in shape[1:])


TARGET = "bnnx.interop.keras_graph:KerasGraph"


def output_classes(graph: list[dict], variables: dict, shape: tuple[int, ...]) -> int:
    """The logits' width, once the graph is checked to run on `shape` inputs and end in (N, classes)."""
    import json

    import jax
    import jax.numpy as jnp
    from flax.errors import FlaxError

    from bnnx.interop.keras_graph import KerasGraph

    model = KerasGraph(num_classes=0, graph=json.dumps(graph))
    try:
        out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *shape))), _with_quant(model, variables, shape))
    except (TypeError, ValueError, FlaxError) as error:
        raise ConfigError(f"the imported graph does not run on {shape} inputs: {' '.join(str(error).split())[:200]}"
                          ) from None
    if len(out.shape) != 2:
        sides = ", ".join(map(str, out.shape[1:]))
        raise ConfigError(f"the model outputs (N, {sides}), not (N, classes) logits; bnnx imports classifiers "
                          "(larq-zoo: build with include_top=True)")
    return int(out.shape[-1])


def _with_quant(model, variables: dict, shape: tuple[int, ...]) -> dict:
    """`variables` as shapes, with the `quant` collection (masks, β) a fresh bnnx model has."""
    import jax
    import jax.numpy as jnp

    fresh = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    shapes = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.float32), variables)
    return {**shapes, **{k: v for k, v in fresh.items() if k not in variables}}
