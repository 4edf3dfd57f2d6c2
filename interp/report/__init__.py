"""Figures and the report page.

``interp.report(model, out, ...)`` builds the report (:func:`interp.report.page.report`): the
package itself is callable, so ``interp.report.figures`` and friends stay importable.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .page import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
