"""Experiments: the demo and the paper reproductions, with their reports."""
