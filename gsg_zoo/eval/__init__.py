"""Evaluation: feature cache, weighted kNN, linear probes, the fine-grained transfer suite.

Light to import: submodules load torch when imported themselves.
"""
