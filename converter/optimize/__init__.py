"""Optimization steps over the HF model in torch: calibrate, prune (and its plan), refit, heal."""
