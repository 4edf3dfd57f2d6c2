"""The argparse machinery and helpers that more than one command uses."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from ..checks import check_float, check_int
from ..data.specs import DATASETS
from ..device import PRECISIONS
from ..errors import RangeError
from ..settings import RenderSettings

SEED_MAX = 2**32 - 1
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def one_line(text: str) -> str:
    """``text`` as one line without terminal escape codes."""
    return " ".join(part.strip() for part in ANSI.sub("", text).splitlines() if part.strip())


def print_error(command: str, message: str) -> None:
    """Print ``interp COMMAND: error: MESSAGE`` on stderr as one line: the form of every error,
    also of those a command reports and then goes on past (an unreadable image in a folder)."""
    print(f"interp {command}: error: {one_line(message)}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def integer(low: int | None = 1, high: int | None = None):  # noqa: ANN202
    """An argparse type: an integer in ``[low, high]`` (the range check of the API)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check_int("value", value, low=low, high=high)  # type: ignore[return-value]
        except RangeError as exc:
            raise argparse.ArgumentTypeError(
                str(exc).replace("value must be", "expected")
            ) from None

    parse.__name__ = "integer"
    return parse


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = True,
    open_high: bool = True,
):  # noqa: ANN202
    """An argparse type: a finite number in the range (open ends by default)."""

    def parse(text: str) -> float:
        try:
            return check_float(  # type: ignore[return-value]
                "value", text, low=low, high=high, open_low=open_low, open_high=open_high
            )
        except RangeError as exc:
            raise argparse.ArgumentTypeError(
                str(exc).replace("value must be", "expected")
            ) from None

    parse.__name__ = "number"
    return parse


def seed_list(text: str) -> list[int]:
    """``0,1,2`` as a list of seeds (each >= 0)."""
    parse = integer(0, SEED_MAX)
    seeds = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, got {text!r}")
    return seeds


def step_list(text: str) -> list[int]:
    """``0,100,1000`` as a list of training steps (each >= 0); empty is none."""
    parse = integer(0)
    return [parse(part.strip()) for part in text.split(",") if part.strip()]


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options")
    group.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N [default: auto]",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars or notes")
    group.add_argument(
        "--weights",
        default="default",
        help="'default' (pretrained), 'none' (random init: the control), a torchvision "
        "weights name (IMAGENET1K_V2) or a state-dict file [default: default]",
    )
    group.add_argument(
        "--offline",
        action="store_true",
        help="never download; fail at once when weights are not cached (also INTERP_OFFLINE=1)",
    )
    group.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow checkpoints that unpickle arbitrary code (full pickled modules); "
        "only for files you trust",
    )
    group.add_argument(
        "--seed", type=integer(0, SEED_MAX), default=0, help="seed of random init [default: 0]"
    )
    group.add_argument(
        "--verbose",
        action="store_true",
        help="on an error, also print the underlying library's message and the traceback",
    )
    return parent


def count_or_all(text: str) -> str:
    if text.strip().lower() == "all" or (text.isdigit() and int(text) > 0):
        return text.strip().lower()
    raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {text!r}")


def _render_flags() -> list[dataclasses.Field]:
    """The fields of :class:`~interp.settings.RenderSettings` that are render flags here."""
    return [f for f in dataclasses.fields(RenderSettings) if f.metadata.get("cli", True)]


def _flag_type(f: dataclasses.Field) -> Any:
    """The argparse type of a setting's flag, from its metadata and default."""
    meta = f.metadata
    if isinstance(f.default, float):
        closed = meta.get("closed", False)
        return number(meta.get("low"), meta.get("high"), open_low=not closed, open_high=not closed)
    if "low" in meta:
        return integer(meta["low"], meta.get("high"))
    return None


def render_options() -> argparse.ArgumentParser:
    """The rendering flags of ``visualize`` and ``atlas`` (a parent parser), one per field of
    :class:`~interp.settings.RenderSettings` (but ``seed``: the common ``--seed``; and
    ``per_layer``, atlas's own), with its default and help."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("rendering")
    for f in _render_flags():
        meta = f.metadata
        if "what" in meta:  # --precision, worded as in every command
            add_precision(group, f.default, meta["what"])
            continue
        if "flag" in meta:  # a boolean on by default: its --no-X flag
            group.add_argument(meta["flag"], action="store_true", help=meta["help"])
            continue
        shown = meta.get("default_help", f.default)
        help_text = f"{meta['help']} [{shown}]" if shown != "" else meta["help"]
        extra: dict[str, Any] = {"choices": list(meta["choices"])} if "choices" in meta else {}
        kind = _flag_type(f)
        if kind is not None:
            extra["type"] = kind
        group.add_argument(
            "--" + f.name.replace("_", "-"), default=f.default, help=help_text, **extra
        )
    return parent


def layer_list(args: argparse.Namespace) -> list[str] | None:
    """``--layers A,B`` as a list (``None`` when not given: the command's default layers)."""
    return [x.strip() for x in args.layers.split(",")] if args.layers else None


def model_dir(args: argparse.Namespace, what: str) -> Path:
    return Path("out") / f"{what}-{Path(str(args.model)).name.replace(':', '_')}"


def render_kwargs(args: argparse.Namespace) -> dict:
    """The render settings of the parsed flags (:func:`render_options`, and the common
    ``--seed``) as keyword overrides of :class:`~interp.settings.RenderSettings`, with
    ``progress``."""
    kwargs: dict[str, Any] = {}
    for f in _render_flags():
        if "flag" in f.metadata:
            kwargs[f.name] = not getattr(args, f.metadata["flag"][2:].replace("-", "_"))
            continue
        value = getattr(args, f.name)
        # an optional text setting (the reference set) is switched off by the word none
        kwargs[f.name] = None if "None" in str(f.type) and value == "none" else value
    return {**kwargs, "seed": args.seed, "progress": not args.quiet}


def load(args: argparse.Namespace):  # noqa: ANN202
    from ..models import load_model

    return load_model(
        args.model,
        device=args.device,
        weights=args.weights,
        offline=True if args.offline else None,
        trust_checkpoint=args.trust_checkpoint,
        quiet=args.quiet,
        seed=args.seed,
    )


def add_precision(parser: Any, default: str, what: str = "of the forward passes") -> None:
    """``--precision``, with one meaning in every command (:func:`interp.device.use_bf16`)."""
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default=default,
        help=f"bf16 autocast {what}; auto: bf16 on a CUDA GPU with bf16, fp32 on the CPU "
        f"[{default}]",
    )


def data_help(use: str, default: str) -> str:
    """The ``--data`` help of a command, from the data registry (``use``: splits, images or
    concepts); ``interp data list`` explains each."""
    specs = ", ".join(e.usage for e in DATASETS.values() if getattr(e, use))
    return f"{specs} (see `interp data list`) [{default}]"
