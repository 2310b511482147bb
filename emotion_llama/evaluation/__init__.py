"""Evaluation: zero-shot benchmarks, metrics, answer parsing and EMER-style reasoning."""
