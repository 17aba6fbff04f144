"""Model zoo: a registry of flax modules, each built from a typed `ModelConfig`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

import flax.linen as nn

from bnnx.config.schema import check_values, setting, validate
from bnnx.errors import ConfigError, check, unknown_choice
from bnnx.layers import FULL_PRECISION, ROLES, QuantPolicy
from bnnx.quantizers import QUANTIZERS, SCALINGS, Identity, check_quantizer_args, make_quantizer

# name -> "module:attribute"; imported on demand so one broken model never breaks the rest.
MODELS = {
    "mlp": "bnnx.models.mlp:MLP",
    "convnet": "bnnx.models.convnet:ConvNet",
    "binarynet": "bnnx.models.vgg:BinaryNet",
    "resnet20": "bnnx.models.resnet:ResNet20",
    "resnet18": "bnnx.models.resnet:ResNet18",
    "resnet50": "bnnx.models.resnet:ResNet50",
    "googlenet": "bnnx.models.googlenet:GoogLeNet",
    "birealnet18": "bnnx.models.reactnet:BiRealNet18",
    "reactnet_a": "bnnx.models.reactnet:ReActNetA",
    "vit": "bnnx.models.vit:ViT",
}
EXTERNAL = "external"  # a user's flax module named by `target`, binarized by `rules`

FIXED = ("num_classes", "policy", "parent", "name")  # module attributes that are not options


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model by name plus its quantization policy; `options` go to the module itself."""

    name: str = setting("mlp", choices=(*MODELS, EXTERNAL))
    fp: bool = False
    binary_activations: bool = True
    kernel_quantizer: str = setting("sign_ste", choices=QUANTIZERS)
    kernel_quantizer_args: dict | None = None
    input_quantizer: str = setting("sign_ste", choices=QUANTIZERS)
    input_quantizer_args: dict | None = None
    scaling: str = setting("none", choices=SCALINGS)
    real_roles: tuple[str, ...] = setting(("first", "last", "shortcut"), choices=ROLES)
    real_paths: tuple[str, ...] = ()  # regexes over the '/'-joined module path
    options: dict = dataclasses.field(default_factory=dict)
    target: str | None = None  # model=external: "package.module:ClassName"
    rules: tuple[dict[str, Any], ...] = ()  # bnnx.binarizer rules for plain flax models

    def __post_init__(self):
        validate(self, "model")
        check(self.name != EXTERNAL or bool(self.target),
              "model=external needs model.target=package.module:ClassName")
        for key in ("kernel_quantizer", "input_quantizer"):
            args = getattr(self, f"{key}_args")
            if args is not None:
                object.__setattr__(self, f"{key}_args",
                                   check_quantizer_args(getattr(self, key), args, f"model.{key}_args"))
        for pattern in self.real_paths:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"model.real_paths has an invalid regex {pattern!r} ({error})") from None
        cls = model_class(self.name, self.target)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            object.__setattr__(self, "options", check_values(cls, self.options, "model", skip=FIXED))
        else:  # a partial, an NNX class or a function: checked against its signature when built
            object.__setattr__(self, "options", dict(self.options or {}))

    def policy(self) -> QuantPolicy:
        if self.fp:
            return FULL_PRECISION
        inputs = (make_quantizer(self.input_quantizer, **(self.input_quantizer_args or {}))
                  if self.binary_activations else Identity())
        return QuantPolicy(kernel_quantizer=make_quantizer(self.kernel_quantizer, **(self.kernel_quantizer_args or {})),
                           input_quantizer=inputs, scaling=self.scaling,
                           real_roles=tuple(self.real_roles), real_paths=tuple(self.real_paths))

    def full_precision_twin(self) -> "ModelConfig":
        return dataclasses.replace(self, fp=True)


def model_class(name: str, target: str | None = None) -> Any:
    if name == EXTERNAL:
        return import_target(target)
    if name not in MODELS:
        raise unknown_choice("model", name, [*MODELS, EXTERNAL])
    module, attribute = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def import_target(target: str | None):
    """The callable named by `model.target` (see `bnnx.models.external`)."""
    from bnnx.models.external import import_target as _import

    return _import(target)


def _is_plain(cls) -> bool:
    """A plain flax model (no bnnx policy field): binarized by interception."""
    return "policy" not in inspect.signature(cls).parameters


def model_options(name: str, target: str | None = None) -> dict[str, Any]:
    """The options a model accepts, with their defaults."""
    cls = model_class(name, target)
    if name == EXTERNAL:
        from bnnx.models.external import options_of

        return options_of(cls)
    return {p.name: p.default for p in inspect.signature(cls).parameters.values() if p.name not in FIXED}


def build_model(config: ModelConfig, num_classes: int) -> nn.Module:
    """The flax module; `config` checked its options against the module's attributes. A plain
    flax model (no bnnx policy field) is binarized by interception."""
    if config.name == EXTERNAL:
        from bnnx.binarizer import binarize
        from bnnx.models.external import external_module

        model = external_module(str(config.target), config.options, num_classes)
        if not _is_plain(type(model)):  # a bnnx-style model with a policy field of its own
            return model.clone(policy=config.policy())
        return binarize(model, rules=config.rules, policy=config.policy())
    cls = model_class(config.name, config.target)
    if not _is_plain(cls):
        return cls(num_classes=num_classes, policy=config.policy(), **config.options)
    from bnnx.binarizer import binarize

    try:
        model = cls(**config.options)
    except TypeError as error:
        raise ConfigError(f"model {config.name}: {error}") from None
    return binarize(model, rules=config.rules, policy=config.policy())
