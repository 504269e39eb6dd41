"""Weights in and out: the one model-spec front door, exports, importers, model cards, the Hub and the manifest."""
