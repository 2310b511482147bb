"""Emotion-LLaMA: multimodal emotion recognition and reasoning with an instruction-tuned LLaMA."""

__version__ = "0.1.0"
