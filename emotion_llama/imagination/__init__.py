"""Text-only emotion recognition by imagination (WALL-E): picture the utterance with a text-to-image model
(:mod:`.imagine`), ask a multimodal model about text and picture, and map its free-text answer to a label
(:mod:`.mapper`). Neither module imports diffusers, transformers or sentence-transformers until it is used.
"""

from emotion_llama.imagination.imagine import (
    DEFAULT_TEMPLATE,
    ImageManifest,
    ImageRecord,
    Imagined,
    Imaginer,
    build_prompt,
    check_template,
    imagined_images,
    load_text_to_image,
    pipeline_fingerprint,
    utterance_seed,
)
from emotion_llama.imagination.mapper import (
    DEFAULT_DESCRIPTIONS,
    MAPPERS,
    EmbeddingMapper,
    Mapped,
    ParseMapper,
    ScoreMapper,
    build_mapper,
    default_embedding_model,
    label_descriptions,
    load_encoder,
)

__all__ = [
    "DEFAULT_DESCRIPTIONS", "DEFAULT_TEMPLATE", "MAPPERS", "EmbeddingMapper", "ImageManifest", "ImageRecord",
    "Imagined", "Imaginer", "Mapped", "ParseMapper", "ScoreMapper", "build_mapper", "build_prompt",
    "check_template", "default_embedding_model", "imagined_images", "label_descriptions", "load_encoder",
    "load_text_to_image", "pipeline_fingerprint", "utterance_seed",
]
