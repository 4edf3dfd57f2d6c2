"""Figures (matplotlib, PNG) and the report page's HTML: a leaf library fed result objects.

The report *job* is :func:`interp.report` (:mod:`interp.pipeline.report`); this package was
``interp.report`` until the function of that name hid it.
"""
