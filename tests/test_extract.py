"""Feature extraction over a mixed folder: good clips, no audio, no face, corrupt, empty, wrong type."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from media_fixtures import write_synthetic_videos

from emotion_llama.datasets.features import FEATURE_DIRS, FeatureStore
from emotion_llama.encoders.extract import Manifest, extract_folder
from emotion_llama.model.config import ModelConfig

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = write_synthetic_videos(tmp_path_factory.mktemp("videos"))
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def tiny_encoders():
    from emotion_llama.encoders.build import build_encoders

    return build_encoders(ModelConfig())


def run(src, out, encoders, **kw):
    return extract_folder(src, out, ModelConfig(), encoders=encoders, progress=False, batch_size=3, **kw)


def test_mixed_folder_layout_and_manifest(mixed_folder, tmp_path, tiny_encoders):
    out = tmp_path / "features"
    counts = run(mixed_folder, out, tiny_encoders)
    assert (counts.ok, counts.failed, counts.skipped) == (3, 4, 0)
    manifest = {json.loads(line)["name"]: json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert set(manifest) == {"good", "silent", "noface", "corrupt", "truncated", "empty", "notes"}
    assert manifest["good"]["status"] == "ok" and manifest["good"]["face_found"] and manifest["good"]["audio_found"]
    assert manifest["silent"]["audio_found"] is False and manifest["silent"]["face_found"]
    assert manifest["noface"]["face_found"] is False and manifest["noface"]["audio_found"]
    assert 0 <= manifest["good"]["peak_frame"] < manifest["good"]["n_frames"]
    for bad in ("corrupt", "truncated", "empty", "notes"):
        entry = manifest[bad]
        assert entry["status"] == "failed" and entry["reason"] and "\n" not in entry["reason"]
    assert "unsupported extension .txt" in manifest["notes"]["reason"]
    assert "empty" in manifest["empty"]["reason"]

    store = FeatureStore(out)
    feats = store.load("good")
    dims = {m: tiny_encoders[m].num_features for m in FEATURE_DIRS}
    patches = tiny_encoders["eva"].num_patches
    assert feats["eva"].shape == (1 + patches, dims["eva"])
    assert np.load(out / "eva_448" / "good.npy").dtype == np.float16
    for m in ("mae", "videomae", "hubert"):
        assert feats[m].shape == (dims[m],)
    assert not feats["hubert"].abs().sum() == 0
    assert store.load("silent")["hubert"].abs().sum() == 0  # no audio -> zero audio features
    assert not store.has("corrupt")
    assert not list(out.rglob("*.tmp"))


def test_resume_and_identical_rerun(mixed_folder, tmp_path, tiny_encoders):
    out = tmp_path / "features"
    first = run(mixed_folder, out, tiny_encoders, limit=4)  # an "interrupted" run: only the first clips
    assert (first.ok, first.failed) == (2, 2)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.npy")}
    # A clip whose files went missing after its manifest line counts as partial and is redone.
    done = [e.name for e in Manifest(out / "manifest.jsonl").load().values() if e.status == "ok"]
    (out / "HL-UTT" / f"{done[0]}.npy").unlink()
    second = run(mixed_folder, out, tiny_encoders)
    assert second.skipped == first.ok - 1
    assert second.ok == 3 - second.skipped
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.npy")}
    for path, data in before.items():
        assert after[path] == data, path  # identical features on rerun
    third = run(mixed_folder, out, tiny_encoders)
    assert (third.ok, third.skipped) == (0, 3)


def test_missing_input_folder_is_a_clear_error(tmp_path):
    from emotion_llama.errors import UserError

    with pytest.raises(UserError, match="is not a folder"):
        extract_folder(tmp_path / "nope", tmp_path / "out", ModelConfig(), progress=False)


@pytest.mark.slow
def test_cli_exit_codes(mixed_folder, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "only_bad"
    src.mkdir()
    shutil.copy(mixed_folder / "corrupt.mp4", src)
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "extract_features.py"), f"input_dir={src}", f"output_dir={tmp_path / 'o'}",
         "num_workers=0", "progress=false"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "ok 0 / failed 1 / skipped 0" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "failed: corrupt:" in proc.stderr


def test_eva_frame_first_feeds_frame_zero_whole(mixed_folder, tmp_path, tiny_encoders):
    """model.eva_frame=first: EVA sees the video's first decoded frame, whole; peak_frame stays the apex."""
    import torch

    from emotion_llama.datasets.media import read_frames
    from emotion_llama.datasets.noise import Corruption
    from emotion_llama.encoders.extract import FeatureEncoders, decode_clip, fingerprint

    path = mixed_folder / "good.mp4"
    peak, first = decode_clip(path), decode_clip(path, eva_frame="first")
    frame0 = read_frames(path, np.array([0]))[0]
    assert first["peak_frame"] == peak["peak_frame"] != 0
    assert np.array_equal(first["eva_image"], frame0) and first["eva_image"].shape == first["frames"][0].shape
    assert np.array_equal(peak["eva_image"], peak["frames"][peak["peak"]])
    assert np.array_equal(first["frames"], peak["frames"])  # VideoMAE and the face crops are unchanged

    encoders = FeatureEncoders(tiny_encoders).eval()
    got_peak, got_first = (encoders([c])[0] for c in (peak, first))
    eva = tiny_encoders["eva"]
    with torch.no_grad():
        want = eva(eva.preprocess(frame0[None])).tokens[0].float().numpy().astype(np.float16)
    assert np.array_equal(got_first["eva"], want)
    assert not np.allclose(got_first["eva"], got_peak["eva"], atol=1e-2)
    for m in ("mae", "videomae", "hubert"):
        np.testing.assert_allclose(got_first[m], got_peak[m], rtol=1e-5, atol=1e-6)

    blur = Corruption(blur_sigma=2.0)  # a corruption reaches frame 0 too
    blurred = decode_clip(path, corruption=blur, eva_frame="first")
    assert np.array_equal(blurred["eva_image"], blur.apply("good", frame0[None], np.zeros(0, np.float32))[0][0])

    cfg_first = ModelConfig(eva_frame="first")
    assert fingerprint(cfg_first) != fingerprint(ModelConfig())
    out = tmp_path / "features"
    counts = extract_folder(mixed_folder, out, cfg_first, encoders=tiny_encoders, progress=False, names=["good"])
    assert counts.ok == 1
    assert np.array_equal(np.load(out / FEATURE_DIRS["eva"] / "good.npy"), want)
    entry = Manifest(out / "manifest.jsonl").load()["good"]
    assert entry.peak_frame == peak["peak_frame"] and entry.fingerprint == fingerprint(cfg_first)
    # A cache made with peak frames is not reused for first frames, nor the other way round.
    again = extract_folder(mixed_folder, out, ModelConfig(), encoders=tiny_encoders, progress=False, names=["good"])
    assert (again.ok, again.skipped) == (1, 0)


def test_eva_frame_is_validated():
    from emotion_llama.errors import UserError

    assert ModelConfig().eva_frame == "peak"
    with pytest.raises(UserError, match="model.eva_frame must be one of peak, first"):
        ModelConfig(eva_frame="middle")
