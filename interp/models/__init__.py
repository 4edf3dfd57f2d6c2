"""Model loading: the registry, the embedded EfficientNet-Lite0, checkpoints."""

from .base import Model, Preprocessing
from .checkpoints import read_checkpoint, save_checkpoint
from .registry import as_model, describe_models, list_models, load_model, register_model

__all__ = [
    "Model",
    "Preprocessing",
    "as_model",
    "describe_models",
    "list_models",
    "load_model",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
