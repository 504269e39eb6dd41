"""Datasets, augmentations and the built-in procedural dataset."""
