"""Evaluation: feature cache, weighted kNN, linear probes, the fine-grained transfer suite.

Light to import: submodules load torch when imported themselves. The pretraining monitor uses
:func:`gsg_zoo.eval.knn.knn_evaluate` (through :func:`gsg_zoo.train.monitor.knn_top1`).
"""
