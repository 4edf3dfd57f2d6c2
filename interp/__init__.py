"""interp: measure why units of a CNN specialize.

The public API::

    import interp
    model = interp.load_model("efficientnet_lite0")          # embedded ImageNet weights
    interp.list_models("torchvision:resnet*")
    infos = interp.layers(model)                              # names, shapes, receptive fields
    acts = interp.capture(model, x, ["_blocks.3"])            # forward stops after _blocks.3
    top5 = interp.classify(model, ["cat.png"])
    result = interp.render_channels(model, "_blocks.5", range(16))   # feature visualizations
    h = interp.hierarchy(model, data="partsworld", control="random-init")  # edges -> parts?
    interp.report(model, "out/report")                        # all of it on one static page
    interp.study("out/study")                 # the check across a panel, and during training
"""

from . import objectives
from .activations import ActivationCapture, capture, layer_names, resolve_layer
from .attribution import Attribution, attribute
from .dataset_examples import Examples, examples
from .device import resolve_device
from .errors import (
    ChannelError,
    CheckpointError,
    DeviceError,
    ImageError,
    InterpError,
    UnknownClassError,
    UnknownLayerError,
    UnknownModelError,
    WeightsUnavailableError,
)
from .featvis import RenderResult, render, render_channels
from .inventory import LayerInfo, layers
from .models import Model, Preprocessing, list_models, load_model, save_checkpoint
from .pipeline.atlas import Atlas, atlas, visualize
from .pipeline.card import unit_card
from .pipeline.hierarchy import hierarchy
from .pipeline.report import report
from .pipeline.study import Study, study
from .predictions import Prediction, classify
from .probes import Dissection, Hierarchy, Verdict, dissect, edge_probe

__version__ = "0.1.0"

__all__ = [
    "ActivationCapture",
    "Atlas",
    "Attribution",
    "Dissection",
    "Examples",
    "Hierarchy",
    "Verdict",
    "ChannelError",
    "CheckpointError",
    "DeviceError",
    "ImageError",
    "InterpError",
    "LayerInfo",
    "Model",
    "Prediction",
    "RenderResult",
    "Preprocessing",
    "Study",
    "UnknownClassError",
    "UnknownLayerError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "atlas",
    "attribute",
    "capture",
    "classify",
    "dissect",
    "edge_probe",
    "examples",
    "hierarchy",
    "layer_names",
    "layers",
    "list_models",
    "load_model",
    "objectives",
    "render",
    "render_channels",
    "study",
    "report",
    "resolve_device",
    "resolve_layer",
    "save_checkpoint",
    "unit_card",
    "visualize",
    "__version__",
]
