"""Frozen pretrained encoders, one per modality, behind one interface (:class:`Encoder`)."""

from emotion_llama.encoders.base import Encoder, EncoderOutput
from emotion_llama.encoders.eva import EvaEncoder
from emotion_llama.encoders.face_mae import FaceMAEEncoder
from emotion_llama.encoders.hubert import HubertEncoder
from emotion_llama.encoders.videomae import VideoMAEEncoder

ENCODERS: dict[str, type[Encoder]] = {
    "hubert": HubertEncoder,
    "mae": FaceMAEEncoder,
    "videomae": VideoMAEEncoder,
    "eva": EvaEncoder,
}

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderOutput",
    "EvaEncoder",
    "FaceMAEEncoder",
    "HubertEncoder",
    "VideoMAEEncoder",
]
