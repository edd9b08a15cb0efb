"""Sweeps: the sweep file, its plan, the Ray Tune phases, one trial's pipeline, W&B tracking."""
