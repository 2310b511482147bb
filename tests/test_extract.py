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
