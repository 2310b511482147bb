"""Everything a training run on the synthetic sets needs before it starts: the set, tiny encoders, features
(and, for the image set, its instruction data).

``data=synthetic`` names :func:`prepare_synthetic` in its ``generate`` block (a Hydra ``_partial_`` target), and
``train(cfg)`` calls it right after seeding; no other module of the library imports the generator.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from emotion_llama.datasets.emoset import SPLITS, read_emoset
from emotion_llama.datasets.synthetic.images import generate_images
from emotion_llama.datasets.synthetic.unibench import write_synthetic_unibench
from emotion_llama.datasets.synthetic.writer import generate
from emotion_llama.encoders.extract import extract_folder
from emotion_llama.encoders.tiny_pretrain import pretrain_tiny_encoders
from emotion_llama.instructions.generators import TemplateGenerator
from emotion_llama.instructions.pipeline import Options, make_instructions
from emotion_llama.model.config import ModelConfig


def prepare_synthetic(cfg: DictConfig, clips_per_label: int = 40, seed: int = 0, workers: int = 2) -> None:
    """Generate the synthetic set, pre-train the tiny encoders and extract features when absent, all on the face
    crops of ``cfg.face_detector`` (None: the default detector); lay its test clips out as MER-UniBench's sets
    (``unibench/``, with the synthetic ``wheel/``) when missing, also in a set made before they were."""
    generate(cfg.data.root, clips_per_label=clips_per_label, seed=seed, workers=workers)
    write_synthetic_unibench(cfg.data.root)  # MER-UniBench's layouts of the test clips, when missing: milliseconds
    model_cfg = ModelConfig.from_cfg(cfg)
    face_detector = cfg.get("face_detector")
    if model_cfg.encoder_size == "tiny" and model_cfg.encoder_paths:
        pretrain_tiny_encoders(cfg.data.root, cfg.paths.tiny_encoders, workers=workers, face_detector=face_detector)
    extract_folder(
        cfg.data.videos_dir, cfg.data.features_dir, model_cfg, feature_dirs=cfg.data.feature_dirs,
        num_workers=workers, batch_size=8, face_detector=face_detector,
    )


def prepare_synthetic_images(cfg: DictConfig, images_per_label: int = 40, seed: int = 0, workers: int = 2) -> None:
    """Generate the synthetic image set, write its instruction data with the offline ``template`` generator
    and extract its image features, each only when absent (every step resumes). A model that reads the pixels
    itself (the InstructBLIP backbone) needs no features: none are extracted for it."""
    root = Path(generate_images(cfg.data.root, images_per_label=images_per_label, seed=seed, workers=workers))
    labels = list(cfg.data.labels)
    out = Path(cfg.data.instructions_dir)
    if not all((out / f"{k}.json").is_file() for k in ("conversation", "reasoning")):
        records = read_emoset(root, "train", labels=labels)
        make_instructions(records, out, kinds=["conversation", "reasoning"], generator=TemplateGenerator(),
                          options=Options(labels=labels, image_root=root, progress=False))
    model_cfg = ModelConfig.from_cfg(cfg)
    if model_cfg.reads_pixels:
        return
    names = [Path(r.image).stem for split in SPLITS for r in read_emoset(root, split, labels=labels,
                                                                           load_annotations=False)]
    for label_dir in sorted(p for p in (root / "image").iterdir() if p.is_dir()):
        extract_folder(label_dir, cfg.data.features_dir, model_cfg, feature_dirs=cfg.data.feature_dirs,
                       num_workers=0, batch_size=16, names=names, progress=False)
