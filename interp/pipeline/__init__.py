"""The jobs: caching, resume, torchrun sharding and writing around the instruments.

Each job takes a model and settings, runs the instruments (which compute and return result
objects), keeps finished stages in the one stage cache (:mod:`interp.pipeline.cache`: keyed by
a digest of the weights, the settings and the data spec) and writes the results with their
figures. The jobs: :func:`visualize`, :func:`atlas`, :func:`hierarchy`, :func:`examples`,
:func:`unit_card`, :func:`report` and the experiment suite (:mod:`interp.pipeline.suite`).
"""

# The verbs are re-exported by :mod:`interp` (``interp.atlas``, ``interp.hierarchy``...); here
# the names stay the modules' (``from interp.pipeline import atlas`` is the module).
from .atlas import Atlas
from .cache import StageCache, architecture_digest, stage_key, weights_digest

__all__ = ["Atlas", "StageCache", "architecture_digest", "stage_key", "weights_digest"]
