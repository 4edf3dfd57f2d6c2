"""The top-level flow of the ``interp`` command: the parser, the command table, the
torchrun path and the one-line error messages."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import InterpError
from . import (
    atlas,
    attribute,
    classify,
    data,
    examples,
    experiment,
    hierarchy,
    layers,
    models,
    report,
    study,
    train,
    unit,
    visualize,
)
from ._common import ANSI, Parser, common_options, print_error

#: command name -> its module (``add_parser`` and ``run``), in the order of ``interp --help``
COMMANDS = {
    "models": models,
    "layers": layers,
    "classify": classify,
    "visualize": visualize,
    "atlas": atlas,
    "train": train,
    "hierarchy": hierarchy,
    "examples": examples,
    "attribute": attribute,
    "unit": unit,
    "experiment": experiment,
    "report": report,
    "study": study,
    "data": data,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = common_options()
    parser = Parser(
        prog="interp",
        description="Measure why units of a CNN specialize: load models, list their layers, "
        "capture activations, classify images.",
        epilog="MODEL is a spec: efficientnet_lite0 (embedded default), torchvision:<name>, "
        "lucent:inceptionv1, timm:<name> (pip install 'interp[timm]'), or a checkpoint path. "
        "`interp models` lists them.",
    )
    parser.add_argument("--version", action="version", version=f"interp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub, common)
    return parser


#: commands sharded over torchrun ranks (units for atlas/visualize, the data for examples and
#: hierarchy; rank 0 writes and prints)
SHARDED = ("atlas", "visualize", "examples", "hierarchy", "report", "study")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` command; returns the exit status."""
    global _left_group
    _left_group = False
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        os.environ["INTERP_OFFLINE"] = "1"
    if args.command in SHARDED and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ..distributed import setup, teardown

        setup(getattr(args, "device", "auto"))  # under torchrun: shard the data by rank
        status = None
        try:
            status = run_command(args)
        finally:
            teardown(ok=status == 0)
        _left_group = status == 0
        return status
    return run_command(args)


#: set by :func:`main` when a sharded job finished and its rank left the process group
_left_group = False


def console(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``interp`` executable (and ``python -m interp``): :func:`main`, then exit.

    A torchrun rank whose sharded job finished exits without interpreter finalization
    (``os._exit`` after flushing), because gloo's worker threads can still abort a rank there
    ("terminate called without an active exception", pytorch/pytorch#190489) even after the
    group was destroyed; every file the job wrote is closed and renamed by then."""
    status = main(argv)
    if _left_group:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                status = status or 1
        os._exit(status)
    raise SystemExit(status)


def os_error(exc: OSError) -> str:
    """A one-line message for a file-system error that reached the top: a write refused
    (disk full, read-only, no permission) in the words of :func:`~interp.utils.output_error`,
    any other error with what to check."""
    import errno

    from ..utils import output_error, write_refused

    if write_refused(exc) is not None:
        return str(output_error(exc.filename or "the output", exc))
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or type(exc).__name__
    advice = {
        errno.ENOENT: "check the path",
        errno.EISDIR: "give a file, not a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    }.get(exc.errno or -1, "check the path and the disk")
    return f"{what}:{where}; {advice}"


def run_command(args: argparse.Namespace) -> int:
    verbose = getattr(args, "verbose", False)
    try:
        return COMMANDS[args.command].run(args)
    except (InterpError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # piped into `head` and closed: not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        message = str(exc) if isinstance(exc, InterpError) else os_error(exc)
        print_error(args.command, message)
        if verbose:
            import traceback

            detail = getattr(exc, "detail", None)
            if detail:
                print(ANSI.sub("", detail), file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
