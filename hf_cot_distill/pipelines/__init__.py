"""Pipelines: recipe parsing and the train / compress / evaluate / sweep runs as functions (the CLI calls them)."""
