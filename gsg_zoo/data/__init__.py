"""Data: the dataset registry, readers and writers of every format, views and the pretraining datasets.

:mod:`.registry` (torch-free) names every dataset with its layout and splits; :mod:`.readers` reads
them; :mod:`.pretraining` builds pretraining datasets, the epoch-keyed sampler and collates.
"""
