"""Run by tests/test_distributed.py, once alone and once under ``torchrun --nproc_per_node=2``:
an atlas, examples and dissection of a small CNN; rank 0 saves the merged examples and
dissection to ``argv[1]``, the atlas goes to the folder ``argv[2]``."""

from __future__ import annotations

import sys

import numpy as np
import torch

import interp
from interp import distributed as dist
from interp.data.concepts import PartsWorldConcepts
from interp.data.partsworld import PartsWorld
from interp.dataset_examples import examples
from interp.pipeline.atlas import atlas
from interp.pipeline.sharding import RankStream
from interp.probes.dissect import dissect


def main(out: str, atlas_out: str) -> None:
    dist.setup("cpu")
    torch.set_num_threads(1)
    model = interp.load_model("simplecnn", weights="none", seed=0, width=0.25, input_size=32)
    layers = ["features.relu2", "features.relu4"]
    atlas(
        model,
        atlas_out,
        layers=layers,
        per_layer=5,
        batch=2,
        steps=4,
        size=24,
        reference="photos",
        n_reference=8,
        progress=False,
    )
    # the instruments shard only through the stream they are given (the pipeline's)
    data = PartsWorld(50, 32, seed=5)
    ex = examples(model, data, layers, k=4, bottom=True, stream=RankStream(), progress=False)
    concepts = PartsWorldConcepts(n=45, size=32)
    dis = dissect(model, concepts, layers, batch_size=8, stream=RankStream(), progress=False)
    if dist.is_main():
        arrays = {}
        for name in layers:
            r = ex[name]
            arrays[f"{name}/top_items"] = r.top.items.numpy()
            arrays[f"{name}/top_values"] = r.top.result().numpy()
            arrays[f"{name}/top_positions"] = r.top.positions.numpy()
            arrays[f"{name}/bottom_items"] = r.bottom.items.numpy()
            d = dis[name]
            arrays[f"{name}/thresholds"] = d.thresholds
            arrays[f"{name}/iou"] = d.iou
            arrays[f"{name}/class_means"] = d.class_means
        np.savez(out, world=dist.world(), **arrays)
    dist.teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
