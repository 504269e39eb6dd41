"""Pretraining: the loop, its step, inputs, optimiser, checkpointed state, run control, logs and monitors."""
