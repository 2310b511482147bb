"""One ``face_detector=`` key of the demo reaches tiny-encoder pre-training, feature extraction, evaluation and
inference alike (the demo's steps are stubbed: only the detector they are handed is checked)."""

import demo
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import emotion_llama.inference.video as video
from conftest import CONF_DIR
from emotion_llama.training import synthetic as prepare


@pytest.fixture(autouse=True)
def hydra_conf():
    """The demo composes its steps' configs itself, as under its launcher."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def demo_cfg(tmp_path, *overrides):
    return compose(config_name="demo", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def test_the_default_detector_is_mtcnn_everywhere(tmp_path):
    cfg = demo_cfg(tmp_path)
    assert cfg.face_detector == "mtcnn"
    assert demo._train_cfg(cfg, "tiny_coarse").face_detector == "mtcnn"


def test_the_demo_key_reaches_pretraining_extraction_evaluation_and_inference(tmp_path, monkeypatch):
    cfg = demo_cfg(tmp_path, "face_detector=haar")
    seen = {}
    monkeypatch.setattr(prepare, "generate", lambda *a, **k: None)
    monkeypatch.setattr(prepare, "write_synthetic_unibench", lambda *a, **k: None)
    monkeypatch.setattr(prepare, "pretrain_tiny_encoders",
                        lambda *a, face_detector=None, **k: seen.setdefault("pretrain", face_detector))
    monkeypatch.setattr(prepare, "extract_folder",
                        lambda *a, face_detector=None, **k: seen.setdefault("extract", face_detector))
    train_cfg = demo._train_cfg(cfg, "tiny_coarse")
    prepare.prepare_synthetic(train_cfg)
    assert seen == {"pretrain": "haar", "extract": "haar"}

    def evaluate(eval_cfg):
        seen["eval"] = eval_cfg.face_detector
        return dict.fromkeys(("war", "uar", "weighted_f1", "macro_f1"), 1.0)

    monkeypatch.setattr(demo, "evaluate", evaluate)
    demo._eval(cfg, str(tmp_path), "synthetic")
    assert seen["eval"] == "haar"

    class Stop(Exception):
        pass

    def predictor(*args, face_detector=None, **kwargs):
        seen["infer"] = face_detector
        raise Stop

    monkeypatch.setattr(video, "Predictor", predictor)
    synthetic_dir = tmp_path / "synthetic"
    synthetic_dir.mkdir()
    (synthetic_dir / "subtitles.csv").write_text("name,sentence\n")
    with pytest.raises(Stop):
        demo._infer(cfg, str(tmp_path), tmp_path / "clip.mp4")
    assert seen["infer"] == "haar"
