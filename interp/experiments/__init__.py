"""Experiments on why units specialize."""
