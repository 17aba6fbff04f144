"""Model zoo: a registry of flax modules, each built from a typed `ModelConfig`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from typing import Any

import flax.linen as nn

from bnnx.errors import ConfigError, check, unknown_choice
from bnnx.layers import FULL_PRECISION, QuantPolicy
from bnnx.quantizers import Identity, make_quantizer

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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model by name plus its quantization policy; `options` go to the module itself."""

    name: str = "mlp"
    fp: bool = False
    binary_activations: bool = True
    kernel_quantizer: str = "sign_ste"
    kernel_quantizer_args: dict | None = None
    input_quantizer: str = "sign_ste"
    input_quantizer_args: dict | None = None
    scaling: str = "none"
    real_roles: tuple[str, ...] = ("first", "last", "shortcut")
    real_paths: tuple[str, ...] = ()
    options: dict = dataclasses.field(default_factory=dict)
    target: str | None = None  # model=external: "package.module:ClassName"
    rules: tuple[dict[str, Any], ...] = ()  # bnnx.binarizer rules for plain flax models

    def __post_init__(self):
        check(self.name != EXTERNAL or bool(self.target),
              "model=external needs model.target=package.module:ClassName")

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


def model_class(name: str, target: str | None = None) -> type[nn.Module]:
    if name == EXTERNAL:
        return import_target(target)
    if name not in MODELS:
        raise unknown_choice("model", name, [*MODELS, EXTERNAL])
    module, attribute = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def import_target(target: str | None) -> type[nn.Module]:
    """The flax module class named "package.module:ClassName", importable from the working
    directory or an installed package."""
    check(bool(target) and target.count(":") == 1, f"model.target must be package.module:ClassName (got {target!r})")
    module_name, attribute = target.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module: any error while importing it is theirs
        raise ConfigError(f"model.target {target}: cannot import {module_name}: "
                          f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    cls = getattr(module, attribute, None)
    check(cls is not None, f"model.target {target}: {module_name} has no {attribute}")
    check(isinstance(cls, type) and issubclass(cls, nn.Module), f"model.target {target} is not a flax linen Module class")
    return cls


def _is_plain(cls) -> bool:
    """A plain flax model (no bnnx policy field): binarized by interception."""
    return "policy" not in inspect.signature(cls).parameters


def model_options(name: str, target: str | None = None) -> dict[str, Any]:
    """The options a model accepts, with their defaults."""
    cls = model_class(name, target)
    fixed = {"num_classes", "policy", "parent", "name"}
    return {p.name: p.default for p in inspect.signature(cls).parameters.values() if p.name not in fixed}


def build_model(config: ModelConfig, num_classes: int) -> nn.Module:
    cls = model_class(config.name, config.target)
    valid = model_options(config.name, config.target)
    unknown = set(config.options) - set(valid)
    if unknown:
        raise ConfigError(f"model '{config.name}' has no option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(valid))}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in config.options.items()}
    if not _is_plain(cls):
        return cls(num_classes=num_classes, policy=config.policy(), **options)
    from bnnx.binarizer import binarize

    if "num_classes" in inspect.signature(cls).parameters:
        options = {"num_classes": num_classes, **options}
    try:
        model = cls(**options)
    except TypeError as error:
        raise ConfigError(f"model {config.target or config.name}: {error}") from None
    return binarize(model, rules=config.rules, policy=config.policy())
