"""``python -m interp`` is the ``interp`` command."""

from .cli import main

raise SystemExit(main())
