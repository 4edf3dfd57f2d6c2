"""The ``interp`` command line: one subcommand per job.

Examples::

    interp models resnet                      # specs matching "resnet"
    interp layers efficientnet_lite0 --json   # inventory with output shapes and receptive fields
    interp layers torchvision:resnet18 --weights none
    interp classify efficientnet_lite0 cat.png --top 5
    interp classify efficientnet_lite0 --photos --out out/classify   # skimage.data photos
    interp visualize efficientnet_lite0 --layer _blocks.5 --channels 0:16 --out out/vis
    interp atlas efficientnet_lite0 --per-layer 8 --steps 128 --size 96 --out out/atlas
    torchrun --standalone --nproc_per_node=8 -m interp atlas efficientnet_lite0 --per-layer all
                                              # atlas, examples, hierarchy: one GPU per rank

Every subcommand takes --device auto|cpu|cuda, --quiet, --weights, --offline,
--trust-checkpoint and --seed.

Layout: :mod:`._main` holds :func:`main`, :func:`build_parser` and the command table;
:mod:`._common` the argparse machinery the commands share; every command is a module
(``models``, ``layers``, ..., ``data``) with ``add_parser(subparsers, common)``, which adds
the subcommand and its flags, and ``run(args) -> int``. A ``run`` imports the job it calls
(and so torch and friends) inside its body, not at the module's top, so that building the
parser, and ``interp --help``, does not wait for them.
"""

from __future__ import annotations

from ._main import build_parser, console, main

__all__ = ["main", "console", "build_parser"]
