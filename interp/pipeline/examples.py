"""The dataset-examples job: one streaming pass (:func:`interp.dataset_examples.examples`) in
the stage cache, resumable mid-pass from its ranks' checkpoints, saved with its grids.

The stage is keyed by the weights, every setting that changes a list (k, bottom, dedup, the
image count and size, the seed, the layers) and the data spec: the same ones reuse the saved
lists (``OUT/examples.pt``), anything else reruns the pass::

    interp examples efficientnet_lite0 --data photos --out out/examples           # one GPU
    torchrun --standalone --nproc_per_node=8 -m interp examples efficientnet_lite0 \\
        --images 100000 --out out/examples                                         # 8 GPUs
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import distributed as dist
from ..activations import resolve_layers
from ..dataset_examples import Examples, Units, examples_data
from ..dataset_examples import examples as find_examples
from ..inventory import default_layers
from ..models.base import Model
from ..models.registry import as_model
from ..settings import EXAMPLES, ExamplesSettings, recorded, with_overrides
from ..utils import prepare_output
from ..views.examples_figures import save_examples
from .cache import StageCache, stage_key
from .sharding import RankStream

__all__ = ["examples_job"]


def examples_job(
    model: Model,
    out: str | Path,
    data: str | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    settings: ExamplesSettings = EXAMPLES,
    batch_size: int | None = None,
    units: Units = None,
    title: str = "",
    force: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Examples:
    """Dataset examples of ``model`` on the data spec ``data`` (default ``settings.data``),
    saved in ``out`` (``examples.json``, grid PNGs of ``units`` — default all; a
    ``{layer: channels}`` mapping gives each layer its own — and ``examples.pt``).

    ``settings``: an :class:`~interp.settings.ExamplesSettings` (k, bottom, dedup, n, size,
    seed, precision; default ``EXAMPLES``); ``**overrides``: fields of it to replace
    (``k=5``, ``bottom=True``...). A finished pass with the same weights, settings and data is
    reused (``force``: rerun).
    """
    s = with_overrides(settings, job="examples_job", **overrides)
    data = s.data if data is None else data
    model = as_model(model)
    out = prepare_output(out)
    size = s.size
    if size is None and data == "photos":
        size = model.input_size[0]
    dataset = examples_data(data, size=size, n=s.n, seed=s.seed)
    names = resolve_layers(model, layers) if layers is not None else default_layers(model)
    # the record: every recorded field, the data's count and size as resolved
    settings_record = {"layers": names, **recorded(s), "n": len(dataset), "size": size}
    cache = StageCache(out, force=force, progress=progress)
    key = stage_key(model=model, settings=settings_record, data=data)
    found = cache.get("examples", key)
    dist.barrier()  # every rank has looked before rank 0 rewrites anything
    if found is not None and (out / Examples.STATE).is_file():
        cache.log["examples"] = "reused"
        result = Examples.load(out, data=dataset)
    else:
        cache.discard("examples")  # the files in OUT are rewritten in place
        result = find_examples(
            model,
            dataset,
            names,
            k=s.k,
            bottom=s.bottom,
            dedup=s.dedup,
            batch_size=batch_size,
            precision=s.precision,
            # sharded over ranks; an interrupted pass resumes from OUT (removed when complete)
            stream=RankStream(out, "examples"),
            progress=progress,
        )
        result.data_name = data
        cache.log["examples"] = "computed"
    if dist.is_main():
        save_examples(result, out, units=units, title=title or model.name)
        cache.put("examples", key, {"layers": list(result), "images": len(dataset)})
    dist.barrier()
    return result
