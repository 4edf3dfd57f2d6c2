"""Figures (PNG) and, later, the HTML report."""
