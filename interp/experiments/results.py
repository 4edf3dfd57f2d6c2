"""What an experiment returns: a result object holding its JSON document, and the one writer.

Every experiment's result is an :class:`ExperimentResult` subclass naming its JSON file
(``json_name``). A result holds data only: ``to_dict()`` is its document, ``save(folder)``
writes it (atomically, :func:`write_json`: the only way experiment JSON is written),
``load(folder)`` reads it back. Its figures are drawn by :mod:`interp.views.experiment_figures`
from the result object; the suite (:mod:`interp.pipeline.suite`) writes both.

For reading, a result is also a read-only mapping of its document (``result["findings"]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InterpError
from ..utils import atomic_write_text, make_dir

__all__ = ["ExperimentResult", "write_json"]


def write_json(path: str | Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as indented JSON, atomically (numpy scalars and arrays, sets as lists)."""
    return atomic_write_text(path, json.dumps(doc, indent=1, default=_default) + "\n")


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, set | frozenset):
        return sorted(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@dataclass
class ExperimentResult(Mapping[str, Any]):
    """One experiment's measurements: ``doc`` is the document its JSON file holds, with
    ``"findings"``, sentences that carry their numbers."""

    #: the experiment's JSON file name (a subclass sets it)
    json_name: ClassVar[str] = "result.json"

    doc: dict[str, Any]

    @property
    def findings(self) -> list[str]:
        """The experiment's conclusions: sentences that carry their numbers."""
        return list(self.doc.get("findings", []))

    def to_dict(self) -> dict[str, Any]:
        return self.doc

    def save(self, folder: str | Path) -> Path:
        """Write the document to ``folder/json_name`` (atomically); returns the path."""
        return write_json(make_dir(folder) / self.json_name, self.doc)

    @classmethod
    def load(cls, folder: str | Path) -> ExperimentResult:
        """The result saved in ``folder``."""
        path = Path(folder) / cls.json_name
        if not path.is_file():
            raise InterpError(f"{folder} holds no {cls.json_name}: run the experiment there")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ExperimentResult:
        """The result of a document (what ``load`` reads); a subclass rebuilds derived data."""
        return cls(doc)

    # a read-only mapping of the document
    def __getitem__(self, key: str) -> Any:
        return self.doc[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.doc)

    def __len__(self) -> int:
        return len(self.doc)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExperimentResult):
            return type(self) is type(other) and self.doc == other.doc
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
