"""``interp models``: list model specs."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp models`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "models",
        parents=[common],
        help="list model specs",
        description="List loadable model specs, optionally filtered by a glob or substring.",
    )
    p.add_argument("pattern", nargs="?", default="*", help="glob or substring (e.g. 'resnet*')")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from ..models import list_models
    from ..models.registry import describe_models

    names = list_models(args.pattern)
    if args.json:
        print(json.dumps(names, indent=1))
        return 0
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    print("\n".join(names))
    if not args.quiet and args.pattern == "*":
        print("\nfamilies:", file=sys.stderr)
        for name, desc in describe_models().items():
            print(f"  {name:<22} {desc}", file=sys.stderr)
    return 0
