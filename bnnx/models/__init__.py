"""Model zoo: a registry of flax modules, each built from a typed `ModelConfig`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

import flax.linen as nn

from bnnx.errors import ConfigError, unknown_choice
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
}


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


def model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise unknown_choice("model", name, MODELS)
    module, attribute = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts, with their defaults."""
    cls = model_class(name)
    fixed = {"num_classes", "policy", "parent", "name"}
    return {p.name: p.default for p in inspect.signature(cls).parameters.values() if p.name not in fixed}


def build_model(config: ModelConfig, num_classes: int) -> nn.Module:
    cls = model_class(config.name)
    valid = model_options(config.name)
    unknown = set(config.options) - set(valid)
    if unknown:
        raise ConfigError(f"model '{config.name}' has no option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(valid))}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in config.options.items()}
    return cls(num_classes=num_classes, policy=config.policy(), **options)
