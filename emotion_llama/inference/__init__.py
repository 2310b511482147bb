"""Inference: the core every caller scores and generates with, and the video pipeline on top of it."""
