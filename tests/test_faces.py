"""The face detectors (MTCNN, the default, and OpenCV's Haar cascade) on drawn and real faces."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import torch

from emotion_llama.datasets import face_detectors, faces
from emotion_llama.datasets.faces import (
    DEFAULT_FACE_DETECTOR,
    FACE_DETECTORS,
    FaceDetectorError,
    detect_faces,
    track_face,
)
from emotion_llama.datasets.synthetic import plan_clips, render_background, synthesize_clip
from emotion_llama.datasets.synthetic.face import sample_appearance

# A real photograph that matplotlib (a dependency) ships; the face box was checked by eye (brows to chin).
HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
HOPPER_FACE = (174, 120, 356, 340)


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(HOPPER)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def synthetic_clip():
    return synthesize_clip(plan_clips(1, seed=0)[0])


@pytest.fixture
def fresh_weights():
    """Clears the loaded MTCNN nets so a test loads them anew, and again after it (for the tests after)."""
    face_detectors._mtcnn_nets.cache_clear()
    yield
    face_detectors._mtcnn_nets.cache_clear()


def centre(box: np.ndarray) -> np.ndarray:
    return (box[:2] + box[2:]) / 2


def inside(point: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    return bool(box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3])


def test_mtcnn_is_the_default_and_haar_stays_available():
    assert DEFAULT_FACE_DETECTOR == "mtcnn" and set(FACE_DETECTORS) == {"mtcnn", "haar"}


@pytest.mark.parametrize("detector", FACE_DETECTORS)
def test_finds_the_drawn_face_of_a_synthetic_frame(synthetic_clip, detector):
    for frame in synthetic_clip.frames[[0, len(synthetic_clip.frames) // 2, -1]]:
        boxes = detect_faces(frame, detector)
        assert len(boxes) == 1
        # The head is drawn at (80, 84) and moves by at most ~10 px; its face is about 90 px.
        assert np.abs(centre(boxes[0]) - (80, 84)).max() < 16
        side = boxes[0, 2] - boxes[0, 0]
        assert 70 < side < 130 and np.isclose(side, boxes[0, 3] - boxes[0, 1])


@pytest.mark.parametrize("detector", FACE_DETECTORS)
def test_finds_the_face_of_a_real_photograph(hopper, detector):
    boxes = detect_faces(hopper, detector)
    assert len(boxes) == 1
    assert inside(centre(boxes[0]), HOPPER_FACE)
    true_side = max(HOPPER_FACE[2] - HOPPER_FACE[0], HOPPER_FACE[3] - HOPPER_FACE[1])
    assert 0.8 < (boxes[0, 2] - boxes[0, 0]) / true_side < 1.25


def test_mtcnn_finds_a_tilted_real_face(hopper):
    # A head tilted by 25 degrees: Haar's frontal cascade loses it, MTCNN keeps it (BENCHMARKS.md).
    m = cv2.getRotationMatrix2D((265.0, 230.0), 25, 1.0)
    tilted = cv2.warpAffine(hopper, m, hopper.shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)
    boxes = detect_faces(tilted)
    assert len(boxes) == 1
    face_centre = m @ np.array([265.0, 230.0, 1.0])
    assert np.linalg.norm(centre(boxes[0]) - face_centre) < 40


@pytest.mark.parametrize("detector", FACE_DETECTORS)
def test_no_face_on_blank_and_faceless_frames(detector):
    rng = np.random.default_rng(0)
    frames = [np.zeros((160, 160, 3), np.uint8), np.full((240, 320, 3), 128, np.uint8),
              render_background(sample_appearance(rng)), render_background(sample_appearance(rng))]
    for frame in frames:
        assert len(detect_faces(frame, detector)) == 0
    track = track_face(np.stack([frames[0]] * 4), detector=detector)
    assert not track.found


def test_both_detectors_track_the_same_face(synthetic_clip):
    tracks = {d: track_face(synthetic_clip.frames, detector=d) for d in FACE_DETECTORS}
    assert all(t.found for t in tracks.values())
    haar, mtcnn = (np.asarray(tracks[d].boxes) for d in ("haar", "mtcnn"))
    assert np.abs((haar[:, :2] + haar[:, 2:]) / 2 - (mtcnn[:, :2] + mtcnn[:, 2:]) / 2).max() < 12
    # MTCNN's boxes are scaled to Haar's framing: the crops differ in size by well under a third.
    ratio = (mtcnn[:, 2] - mtcnn[:, 0]) / (haar[:, 2] - haar[:, 0])
    assert (0.75 < ratio).all() and (ratio < 1.3).all()


def test_default_track_uses_mtcnn(synthetic_clip, monkeypatch):
    calls = []
    real = face_detectors.detect
    monkeypatch.setattr(faces, "detect", lambda name, *a: calls.append(name) or real(name, *a))
    track_face(synthetic_clip.frames, detect_frames=3)
    assert calls == ["mtcnn"] * 3


def test_unknown_detector_is_one_line_error(hopper):
    with pytest.raises(FaceDetectorError) as err:
        detect_faces(hopper, "retina")
    assert "mtcnn, haar" in str(err.value) and "\n" not in str(err.value)


def test_weights_load_offline_from_the_installed_package(fresh_weights, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access during weight loading")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.delitem(sys.modules, "facenet_pytorch", raising=False)
    folder = face_detectors.mtcnn_weights_dir()
    assert sorted(p.name for p in folder.glob("*.pt")) == ["onet.pt", "pnet.pt", "rnet.pt"]
    assert "site-packages" in folder.parts or "dist-packages" in folder.parts
    pnet, rnet, onet = face_detectors.load_mtcnn()
    assert not any(m.training for m in (pnet, rnet, onet))
    # The loaded state is the file's, bit for bit; the package's own code (old pins) was never imported.
    saved = torch.load(folder / "onet.pt", weights_only=True)
    assert saved.keys() == onet.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in onet.state_dict().items())
    assert "facenet_pytorch" not in sys.modules


def test_loaded_nets_score_a_face_above_a_blank_crop(hopper):
    _, _, onet = face_detectors.load_mtcnn()
    x0, y0, x1, y1 = HOPPER_FACE
    face = cv2.resize(hopper[y0:y1, x0:x1], (48, 48), interpolation=cv2.INTER_AREA)
    blank = np.full((48, 48, 3), 128, np.uint8)
    with torch.no_grad():
        _, scores = onet(face_detectors._to_input(np.stack([face, blank])))
    assert scores[0] > 0.9 and scores[1] < 0.1


def test_missing_weight_file_is_refused_with_one_line(tmp_path):
    with pytest.raises(FaceDetectorError) as err:
        face_detectors.load_mtcnn(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "pnet.pt") in message and "pip install" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong net"])
def test_corrupt_weight_file_is_refused_with_one_line(tmp_path, damage):
    source = face_detectors.mtcnn_weights_dir()
    for name in face_detectors.MTCNN_FILES:
        shutil.copy(source / f"{name}.pt", tmp_path / f"{name}.pt")
    target = tmp_path / "rnet.pt"
    if damage == "garbage":
        target.write_bytes(b"not a state dict" * 64)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    else:
        shutil.copy(source / "pnet.pt", target)  # loads, but its keys and shapes are P-Net's
    with pytest.raises(FaceDetectorError) as err:
        face_detectors.load_mtcnn(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(target) in message and "--force-reinstall" in message


def test_missing_package_says_how_to_install(hopper, fresh_weights, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "facenet_pytorch" else real_find_spec(name, *a))
    with pytest.raises(FaceDetectorError) as err:
        detect_faces(hopper)
    message = str(err.value)
    assert "\n" not in message and "pip install 'facenet-pytorch==2.5.3'" in message and "face_detector=haar" in message
    assert len(detect_faces(hopper, "haar")) == 1  # Haar needs no extra package


def test_matches_the_reference_mtcnn_of_facenet_pytorch(hopper):
    reference = pytest.importorskip("facenet_pytorch")
    ref_boxes, _ = reference.MTCNN(device="cpu", keep_all=True, min_face_size=40).detect(hopper)
    ref_boxes = np.asarray(ref_boxes, dtype=np.float64).reshape(-1, 4)
    ours = face_detectors.mtcnn(hopper, 40)
    assert len(ref_boxes) == len(ours) == 1
    # Same face centre; ours is the reference box squared and scaled to Haar's framing.
    assert np.linalg.norm(centre(ours[0]) - centre(ref_boxes[0])) < 0.05 * (ref_boxes[0, 2] - ref_boxes[0, 0])
    ref_side = max(ref_boxes[0, 2] - ref_boxes[0, 0], ref_boxes[0, 3] - ref_boxes[0, 1])
    assert abs((ours[0, 2] - ours[0, 0]) / ref_side - face_detectors.MTCNN_TO_HAAR_SIDE) < 0.08


def test_feature_fingerprint_names_the_detector(monkeypatch):
    from emotion_llama.encoders.extract import fingerprint
    from emotion_llama.model.config import ModelConfig

    cfg = ModelConfig()
    with_mtcnn = fingerprint(cfg)
    monkeypatch.setattr(faces, "DEFAULT_FACE_DETECTOR", "haar")
    with_haar = fingerprint(cfg)
    assert with_mtcnn != with_haar
