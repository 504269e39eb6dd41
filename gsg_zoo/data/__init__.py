"""Datasets, augmentations and the built-in procedural dataset.

:mod:`.registry` (torch-free) names every dataset, pretraining's and evaluation's, with its layout and
splits; :mod:`.loaders` holds the readers; :mod:`.datasets` builds pretraining datasets, samplers, collates.
"""
