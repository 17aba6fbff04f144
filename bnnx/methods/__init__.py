"""Training methods by name. Each is one module with one typed config class."""

from __future__ import annotations

from bnnx.methods.base import MethodConfig, MethodContext, Recipe
from bnnx.methods.registry import METHODS, method_class

__all__ = ["METHODS", "MethodConfig", "MethodContext", "Recipe", "method_class"]
