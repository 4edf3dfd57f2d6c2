"""Which layers the hierarchy check measures by default."""

from __future__ import annotations

from torch import nn

from ...inventory import declared_stages, default_layers
from ...inventory import layers as inventory
from ...models.base import Model
from ...models.registry import as_model

__all__ = ["default_hierarchy_layers"]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
)


def default_hierarchy_layers(model: Model | nn.Module) -> list[str]:
    """The first convolution's activation (or the conv itself), then the network's blocks:
    the stages the model declares (``model.info["feature_layers"]``: timm's ``feature_info``)
    where it declares them, else :func:`~interp.inventory.default_layers`."""
    model = as_model(model)
    traced = inventory(model, receptive_field=False)  # one trace for both
    blocks = declared_stages(model) or default_layers(model, traced)
    infos = [i for i in traced if i.order is not None]
    infos.sort(key=lambda i: i.order or 0)
    modules = dict(model.module.named_modules())
    first = next((i for i in infos if isinstance(modules[i.name], nn.Conv2d)), None)
    if first is None:
        return blocks
    after = [i for i in infos if (i.order or 0) > (first.order or 0)]
    act = next((i for i in after if isinstance(modules[i.name], _ACTIVATIONS)), None)
    head = act.name if act is not None else first.name
    order = {i.name: i.order for i in infos}
    if blocks and (order.get(head) or 0) >= (order.get(blocks[0]) or 0):
        return blocks
    if head in blocks or any(head.startswith(b + ".") for b in blocks):
        return blocks
    return [head, *blocks]
