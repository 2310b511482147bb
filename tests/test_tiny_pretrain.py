"""The tiny encoders' cue pre-training writes real-format weights that the real loaders read."""

import json

import pytest
import torch

from emotion_llama.datasets.synthetic import generate
from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import fingerprint
from emotion_llama.encoders.tiny_pretrain import pretrain_tiny_encoders
from emotion_llama.errors import UserError
from emotion_llama.model.config import ModelConfig
from emotion_llama.runtime import tiny_encoder_paths


def test_pretrained_tiny_encoders_load_through_the_real_loaders(tmp_path):
    data = generate(tmp_path / "syn", clips_per_label=3, seed=1, workers=1)
    out = tmp_path / "enc"
    meta = pretrain_tiny_encoders(data, out, epochs=1, batch_size=8, workers=1)
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["face_detector"] == "mtcnn"  # the default detector's crops, as extraction cuts them
    assert (out / "eva.pth").is_file() and (out / "hubert" / "config.json").is_file()

    cfg = ModelConfig(encoder_paths=tiny_encoder_paths(out))
    loaded = build_encoders(cfg)
    random = build_encoders(ModelConfig())
    for name in ("mae", "eva", "hubert"):  # trained: no longer the seeded random weights
        a, b = loaded[name].state_dict(), random[name].state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a if k in b), name
    assert all(not p.requires_grad for e in loaded.values() for p in e.parameters())
    # Features made with other encoders are never taken for these ones.
    assert fingerprint(cfg) != fingerprint(ModelConfig())
    # A second call finds the finished folder and does nothing.
    stamp = (out / "eva.pth").stat().st_mtime_ns
    assert pretrain_tiny_encoders(data, out, epochs=1, workers=1) == meta
    assert (out / "eva.pth").stat().st_mtime_ns == stamp

    # Encoders that learnt one detector's crops are never reused for another's: one line naming the folder.
    with pytest.raises(UserError, match=r"enc: these tiny encoders were pre-trained on face_detector=mtcnn crops, "
                                        r"not face_detector=haar: remove the folder"):
        pretrain_tiny_encoders(data, out, epochs=1, workers=1, face_detector="haar")
    legacy = {k: v for k, v in meta.items() if k != "face_detector"}
    (out / "meta.json").write_text(json.dumps(legacy))
    with pytest.raises(UserError, match="the crops of an unrecorded face detector"):
        pretrain_tiny_encoders(data, out, epochs=1, workers=1)
