"""Synthetic tasks: the CoT-ICL Lab generator, its prompt strategies, CoT-Recipe schedules and the symbolic word tasks."""
