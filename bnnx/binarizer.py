"""Binarize an unmodified flax linen model: `binarize(model, rules, policy)`.

The returned module shares the model's scope (`nn.share_scope`), so its parameter tree is the
model's own, names, shapes and initial values included, and the model's checkpoints load. While
it runs, a method interceptor (`nn.intercept_methods`) replaces each call of an `nn.Dense`,
`nn.DenseGeneral`, `nn.Conv` or `nn.Einsum` that is binary-bound by a clone of that layer bound to
the same scope whose `promote_dtype` step (the last thing flax does before the contraction)
quantizes the kernel and the inputs exactly as `QuantDense`/`QuantConv` do: same quantizers,
scaling, precision masks and β in the `quant` collection, so the label tree, every method,
`record_layers`, the summary, the analysis and the export treat the layer like a zoo layer.

Which layers: an ordered list of `Rule`s, regexes searched in the '/'-joined module path; the
first that matches decides (`binary`: the policy's kernel quantizer, `ternary`: the ternary one,
`real`: untouched), with optional quantizer overrides. A layer no rule matches follows the policy,
which by default keeps the first and the last weight layer (in call order) real, as the papers
do. A layer called more than once (shared) is one layer: one kernel, one set of masks.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Sequence

import flax.linen as nn
import jax

from bnnx.errors import ConfigError, check
from bnnx.layers import LayerRecord, QuantPolicy, quantize_operands, report_layer
from bnnx.quantizers import Identity, Ternary, make_quantizer

PRECISIONS = ("binary", "ternary", "real")
LAYER_KINDS = ((nn.Conv, "conv"), (nn.Dense, "dense"), (nn.DenseGeneral, "dense"), (nn.Einsum, "dense"))
NORMS = (nn.BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)  # the layers with a named batch axis
SHORTCUT_NAMES = r"shortcut|downsample|conv_proj|skip"  # searched in a layer's own name (the path's last part)
OVERRIDES = ("kernel_quantizer", "kernel_quantizer_args", "input_quantizer", "input_quantizer_args", "scaling")
TRAIN_FLAGS = {"train": lambda train: train, "training": lambda train: train, "is_training": lambda train: train,
               "deterministic": lambda train: not train}


@dataclasses.dataclass(frozen=True)
class Rule:
    """Layers whose path matches `pattern` (re.search) get `precision`; `overrides` replace the
    policy's quantizers for them: kernel_quantizer, input_quantizer ('identity' keeps the layer's
    inputs real), their *_args, scaling."""

    pattern: str
    precision: str = "binary"
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        check(self.precision in PRECISIONS,
              f"rule '{self.pattern}': unknown precision '{self.precision}'; valid options: {', '.join(PRECISIONS)}")
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise ConfigError(f"rule '{self.pattern}' is not a regular expression: {error}") from None
        bad = sorted(set(dict(self.overrides)) - set(OVERRIDES))
        check(not bad,
              f"rule '{self.pattern}': unknown override '{bad[0] if bad else ''}'; valid: {', '.join(OVERRIDES)}")

    def matches(self, path: str) -> bool:
        return re.search(self.pattern, path) is not None

    def policy(self, base: QuantPolicy) -> QuantPolicy:
        """The policy of a matching layer, which it applies to itself as a hidden layer."""
        values = dict(self.overrides)
        kernel = base.kernel_quantizer
        if self.precision == "ternary":
            kernel = Ternary()
        if "kernel_quantizer" in values:
            kernel = make_quantizer(values["kernel_quantizer"], **(values.get("kernel_quantizer_args") or {}))
        inputs = base.input_quantizer
        if "input_quantizer" in values:
            inputs = make_quantizer(values["input_quantizer"], **(values.get("input_quantizer_args") or {}))
        return dataclasses.replace(base, kernel_quantizer=kernel, input_quantizer=inputs, real_roles=(),
                                   real_paths=(), scaling=values.get("scaling", base.scaling))


def parse_rule(rule) -> Rule:
    """A `Rule` from itself, a dict {pattern, precision, **overrides} or a sequence
    (pattern, precision[, overrides])."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, dict):
        values = dict(rule)
        check("pattern" in values, f"rule {rule} has no 'pattern'")
        pattern, precision = values.pop("pattern"), values.pop("precision", "binary")
        return Rule(str(pattern), str(precision), tuple(sorted(values.items())))
    if isinstance(rule, (list, tuple)) and 1 <= len(rule) <= 3 and isinstance(rule[0], str):
        overrides = dict(rule[2]) if len(rule) == 3 else {}
        return Rule(rule[0], rule[1] if len(rule) > 1 else "binary", tuple(sorted(overrides.items())))
    raise ConfigError(f"rule {rule!r} must be a dict {{pattern, precision, ...}} or a list [pattern, precision]")


def layer_kind(module) -> str | None:
    for cls, kind in LAYER_KINDS:
        if isinstance(module, cls):
            return kind
    return None


def train_flags(model: nn.Module, train: bool) -> dict[str, bool]:
    """How `model.__call__` is told it is training, from its signature (none if it is not)."""
    parameters = inspect.signature(type(model).__call__).parameters
    for name, value in TRAIN_FLAGS.items():
        if name in parameters:
            return {name: value(train)}
    return {}


class Binarized(nn.Module):
    """`model` with the layers selected by `rules` and `policy` quantized (see the module doc)."""

    model: nn.Module
    rules: tuple[Rule, ...] = ()
    policy: QuantPolicy = QuantPolicy()

    def setup(self):
        nn.share_scope(self, self.model)

    def __call__(self, x, *args, train: bool = False, **kwargs):
        # the layer order is read from an evaluation-mode trace: no dropout or other train-time rng
        evaluating = {**kwargs, **train_flags(self.model, False)}
        plan = self.plan(lambda model, *inputs: model(*inputs, **evaluating), x, *args)
        with nn.intercept_methods(_Interceptor(self, plan, train)):
            return self.model(x, *args, **kwargs, **train_flags(self.model, train))

    def policy_of(self, path: tuple[str, ...]) -> QuantPolicy:
        """The policy a binary-bound layer at `path` quantizes with."""
        rule = self._rule_for("/".join(path))
        return rule.policy(self.policy) if rule else self.policy

    def _rule_for(self, name: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(name)), None)

    def plan(self, call, *inputs) -> dict[str, tuple[str, QuantPolicy]]:
        """(role, policy) of every quantizable layer by path, from an abstract trace of the model."""
        prefix = tuple(self.scope.path) if self.scope is not None else ()
        calls = _layer_calls(self.model.clone(parent=None), call, inputs, prefix=prefix)
        order, shortcuts = list(calls), shortcut_layers(calls)
        check(bool(order), f"{type(self.model).__name__} calls no nn.Dense, nn.DenseGeneral, nn.Conv or nn.Einsum")
        for rule in self.rules:
            check(any(rule.matches(name) for name in order),
                  f"rule '{rule.pattern}' matches no layer of {type(self.model).__name__}; layers: {', '.join(order)}")
        plan = {}
        for index, name in enumerate(order):
            role = "first" if index == 0 else "last" if index == len(order) - 1 else \
                "shortcut" if name in shortcuts else "hidden"
            rule = self._rule_for(name)
            policy = self.policy if rule is None else None if rule.precision == "real" else rule.policy(self.policy)
            full_precision = isinstance(self.policy.kernel_quantizer, Identity)  # the fp twin: rules do not apply
            binary = policy is not None and policy.binarizes(role, name) and not full_precision
            plan[name] = (role, policy if binary else None)
        return plan


def _layer_calls(model: nn.Module, call, inputs, prefix: tuple[str, ...]) -> dict[str, tuple[Any, tuple]]:
    """{path (below `prefix`, where the binarized model sits): (its input, its kernel's spatial
    size)} of the quantizable layers in first-call order; other interceptors (a caller's capture,
    `record_layers`) do not see this trace."""
    calls: dict[str, tuple[Any, tuple]] = {}

    def scan(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and layer_kind(context.module) and args:
            window = tuple(getattr(context.module, "kernel_size", None) or ())
            calls.setdefault("/".join((*prefix, *context.module.scope.path)), (args[0], window))
        return next_fun(*args, **kwargs)

    structs = [jax.ShapeDtypeStruct(jax.numpy.shape(x), jax.numpy.result_type(x)) for x in inputs]
    with _only_interceptor(scan):
        jax.eval_shape(lambda *xs: model.init(jax.random.key(0), *xs, method=call), *structs)
    return calls


def shortcut_layers(calls: dict[str, tuple[Any, tuple]]) -> set[str]:
    """The shortcut projections among `calls` (see `_layer_calls`): a layer named like one
    (SHORTCUT_NAMES: `conv_proj`, `shortcut`, `downsample`, `skip`), or a 1×1 convolution fed the
    very array a wider convolution is fed (a block's input forking into its main path and its
    projection, as in ResNet's basic blocks)."""
    found = {path for path in calls if re.search(SHORTCUT_NAMES, path.rsplit("/", 1)[-1])}
    for path, (inputs, window) in calls.items():
        pointwise = bool(window) and all(size == 1 for size in window)
        if pointwise and any(other is inputs and any(size > 1 for size in other_window)
                             for name, (other, other_window) in calls.items() if name != path):
            found.add(path)
    return found


class _only_interceptor:
    """`nn.intercept_methods(fn)` with every interceptor already installed set aside."""

    def __init__(self, fn):
        from flax.linen import module as flax_module

        self.stack = flax_module._global_interceptor_stack
        self.fn = fn

    def __enter__(self):
        self.saved = []
        while len(self.stack):
            self.saved.append(self.stack.pop())
        self.stack.push(self.fn)

    def __exit__(self, *exc):
        self.stack.pop()
        for fn in reversed(self.saved):
            self.stack.push(fn)


class _Interceptor:
    def __init__(self, owner: Binarized, plan: dict, train: bool):
        self.owner, self.plan, self.train = owner, plan, train

    def __call__(self, next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, NORMS) and module.axis_name is not None:
            # bound to bnnx's data axis: the step's statistics already span the whole sharded batch
            return module.clone(parent=module.scope, axis_name=None, axis_index_groups=None)(*args, **kwargs)
        kind = layer_kind(module) if context.method_name == "__call__" else None
        if kind is None or isinstance(module.promote_dtype, _QuantizingPromote):
            return next_fun(*args, **kwargs)
        assert module.scope is not None  # an intercepted call runs inside a bound module
        path = tuple(module.scope.path)
        role, policy = self.plan.get("/".join(path), ("hidden", None))
        active = policy if policy is not None else QuantPolicy(kernel_quantizer=Identity(), input_quantizer=Identity())
        promote = _QuantizingPromote(module.promote_dtype, module.scope, active, role, "/".join(path), self.train)
        out = module.clone(parent=module.scope, promote_dtype=promote)(*args, **kwargs)
        report_layer(LayerRecord(path, kind, role, policy is not None,
                                 policy is not None and policy.quantizes_inputs(role, "/".join(path)),
                                 promote.kernel_shape, tuple(out.shape[1:]), active.kernel_quantizer.levels))
        return out


class _QuantizingPromote:
    """A layer's `promote_dtype` followed by the quantization of (inputs, kernel)."""

    def __init__(self, promote, scope, policy: QuantPolicy, role: str, path: str, train: bool):
        self.promote, self.scope, self.policy = promote, scope, policy
        self.role, self.path, self.train = role, path, train
        self.kernel_shape: tuple[int, ...] = ()

    def __call__(self, inputs, kernel, *rest, **kwargs):
        inputs, kernel, *rest = self.promote(inputs, kernel, *rest, **kwargs)
        self.kernel_shape = tuple(kernel.shape)
        kernel, inputs = quantize_operands(self.scope, self.policy, self.role, self.path, kernel, inputs, self.train)
        return (inputs, kernel, *rest)


def binarize(model, rules: Sequence = (), policy: QuantPolicy = QuantPolicy()) -> Binarized:
    """`model`, unmodified, with its Dense/DenseGeneral/Conv/Einsum layers quantized by `rules`
    (see `Rule`, `parse_rule`) and `policy` (the quantizers, scaling and real roles of the layers
    no rule matches). Call it like the model, plus `train=`, which it passes on as the model's
    own `train`/`training`/`is_training`/`deterministic` argument. An NNX module (an instance:
    its own weights are the initial values) runs as linen (`bnnx.nnx_bridge`), its
    Linear/LinearGeneral/Conv/Einsum layers quantized the same way."""
    from flax import nnx

    if isinstance(model, nnx.Module):
        from bnnx.nnx_bridge import from_instance

        model = from_instance(model)
    check(isinstance(model, nn.Module), f"binarize needs a flax linen or NNX module, not {type(model).__name__}")
    return Binarized(model, tuple(parse_rule(rule) for rule in rules), policy)
