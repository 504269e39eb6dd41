"""Transfer benchmarks on downstream tasks (detection with Detectron2, segmentation with mmseg).

Nothing is imported here: each task module pulls in its heavy framework only when used.
"""
