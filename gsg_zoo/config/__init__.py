"""Recipes: typed configuration sections read from YAML with ``--set`` overrides."""
