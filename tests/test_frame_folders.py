"""Frame folders as clips (DFEW's ``Clip/clip_224x224/<id>/*.jpg``) in extraction, evaluation and inference; DFEW's
two layouts; the face detector setting and the feature cache it marks.

The DFEW-style tree is made from the synthetic generator: three clips written as mp4 (``Clip/original/``) and the
same videos decoded into frame folders of jpgs (``Clip/clip_224x224/``), with a split file that says ``1`` for
``00001`` as spreadsheets leave it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from media_fixtures import tone, write_wav

from conftest import save_tiny_checkpoint
from emotion_llama.commands import evaluate as eval_cmd
from emotion_llama.commands import extract as extract_cmd
from emotion_llama.commands import infer as infer_cmd
from emotion_llama.datasets.common import Sample
from emotion_llama.datasets.dfew import check_clip_folder, write_dfew_split
from emotion_llama.datasets.face_detectors import FACE_DETECTORS as DETECTORS
from emotion_llama.datasets.face_detectors import FaceDetectorError
from emotion_llama.datasets.features import FEATURE_DIRS, MODALITIES, FeatureStore
from emotion_llama.datasets.media import clip_name, load_clip, open_video, read_frames
from emotion_llama.datasets.synthetic import plan_clips, synthesize_clip
from emotion_llama.datasets.video_io import write_mp4
from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import (
    FeatureEncoders,
    Manifest,
    decode_clip,
    extract_folder,
    fingerprint,
    list_inputs,
)
from emotion_llama.errors import UserError
from emotion_llama.inference.video import expand_inputs
from emotion_llama.labels import DFEW_LABELS
from emotion_llama.model.config import ModelConfig
from emotion_llama.settings import FACE_DETECTORS

NAMES = ["00001", "00002", "00003"]
# The tiny preset with seeded random encoders (its pre-trained ones exist only after `make demo`).
RANDOM_ENCODERS = [f"model.encoder_paths.{m}=null" for m in ("eva", "mae", "videomae", "hubert")]

pytestmark = pytest.mark.usefixtures("restore_logging", "one_thread")


def write_frames(folder: Path, frames: np.ndarray, ext: str = ".jpg") -> Path:
    """``frames`` (N, H, W, 3) RGB as ``00001.jpg`` ... in ``folder``, as DFEW numbers them."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        assert cv2.imwrite(str(folder / f"{i:05d}{ext}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def decoded(video: Path) -> np.ndarray:
    """Every frame of ``video``, as the project's decoder gives them."""
    reader = open_video(video)
    return read_frames(reader, np.arange(len(reader)))


@pytest.fixture(scope="module")
def dfew(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("DFEW")
    plans = plan_clips(clips_per_label=1, seed=3)[:3]
    (root / "Clip" / "original").mkdir(parents=True)
    for name, plan in zip(NAMES, plans, strict=True):
        clip = synthesize_clip(plan)
        video = write_mp4(root / "Clip" / "original" / f"{name}.mp4", clip.frames, clip.fps, clip.audio)
        write_frames(root / "Clip" / "clip_224x224" / name, decoded(video))
    split = root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    write_dfew_split(split, [Sample(str(int(n)), DFEW_LABELS[i]) for i, n in enumerate(NAMES)])
    assert split.read_text().splitlines()[1] == "1,1"  # the spreadsheet form of 00001
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def encoders():
    return build_encoders(ModelConfig())


@pytest.fixture
def no_model(monkeypatch):
    """Any model build fails the test: a refusal must come before the model loads."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was built before the bad input was refused")

    import emotion_llama.model.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "build_model", forbidden)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def refused(capsys, main, argv: list[str], *expected: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ")
    for text in expected:
        assert text in line, line
    return line


def eval_argv(dfew: Path, checkpoint: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["data=dfew", f"data.root={dfew}", f"data.split_csv='{dfew}/EmoLabel_DataSplit/test(single-labeled)/"
            "set_{fold}.csv'", "data.folds=[1]", "data.subtitles=null", f"checkpoint={checkpoint}",
            f"run_dir={run_dir}", "device=cpu", "eval.num_workers=0", *extra]


# ---------------------------------------------------------------------------------------------- reading


def test_a_frame_folder_is_sampled_and_encoded_as_its_video(dfew, tmp_path, encoders):
    """Lossless frames of a decoded video give the video's frames, indices and visual features exactly; the
    folder has no audio, so HuBERT is absent rather than zero. JPEG frames (DFEW's) differ by the JPEG loss only."""
    video = dfew / "Clip" / "original" / "00001.mp4"
    folder = write_frames(tmp_path / "png" / "00001", decoded(video), ext=".png")
    from_video, from_folder = load_clip(video), load_clip(folder)
    assert from_folder.name == "00001" and from_folder.n_frames == from_video.n_frames
    np.testing.assert_array_equal(from_folder.frame_indices, from_video.frame_indices)
    np.testing.assert_array_equal(from_folder.frames, from_video.frames)
    assert from_video.audio_found and not from_folder.audio_found and from_folder.audio_source is None

    clips = [decode_clip(video), decode_clip(folder)]
    assert clips[0]["peak_frame"] == clips[1]["peak_frame"] and clips[1]["absent"] == ("hubert",)
    feats = FeatureEncoders(encoders).eval()(clips)
    assert set(feats[0]) == set(MODALITIES) and set(feats[1]) == {"eva", "mae", "videomae"}
    for m in ("eva", "mae", "videomae"):
        np.testing.assert_array_equal(feats[0][m], feats[1][m], err_msg=m)

    jpg = load_clip(dfew / "Clip" / "clip_224x224" / "00001")
    loss = np.abs(jpg.frames.astype(np.int16) - from_video.frames.astype(np.int16))
    assert 0 < loss.mean() < 3  # the same frames, through JPEG


def test_frames_are_in_name_order_with_numbers_compared_as_numbers(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(12):  # 1.png, 2.png, ..., 10.png, 11.png, 12.png: frame i is grey level 10 * i
        cv2.imwrite(str(folder / f"{i + 1}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
    (folder / "notes.txt").write_text("not a frame")
    clip = load_clip(folder, num_frames=12)
    assert clip.n_frames == 12
    assert clip.frames[:, 0, 0, 0].tolist() == [10 * i for i in range(12)]
    assert clip_name(folder) == "clip" and clip_name(tmp_path / "x.mp4") == "x"


def test_a_sidecar_wav_beside_the_folder_is_its_audio(dfew, tmp_path):
    folder = tmp_path / "00002"
    shutil.copytree(dfew / "Clip" / "clip_224x224" / "00002", folder)
    write_wav(tmp_path / "00002.wav", tone(1.0, 16000), 16000)
    clip = load_clip(folder)
    assert clip.audio_found and clip.audio_source == "sidecar" and len(clip.audio) == 16000
    assert decode_clip(folder)["absent"] == ()
    assert [p.name for p in list_inputs(tmp_path)] == ["00002"]  # the wav is the folder's audio, not a clip


def test_empty_unreadable_and_mixed_folders_are_one_line_naming_them(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "00001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "00001.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(mixed / "00002.png"), np.zeros((16, 8, 3), np.uint8))
    for folder, reason in [(empty, "empty folder"), (broken, "frame 00001.jpg: not a readable image"),
                           (mixed, "frames differ in size: 00001.png is 8x8, 00002.png is 8x16")]:
        result = decode_clip(folder)
        assert result["name"] == folder.name and reason in result["error"] and "\n" not in result["error"]
    with pytest.raises(UserError, match=f"{tmp_path}: holds folders, no frames"):
        load_clip(tmp_path)


# ---------------------------------------------------------------------------------------------- extraction


def test_extraction_over_frame_folders_skips_and_reports_bad_ones(dfew, tmp_path, capsys):
    src = tmp_path / "clip_224x224"
    shutil.copytree(dfew / "Clip" / "clip_224x224", src)
    (src / "00004").mkdir()
    (src / "00005").mkdir()
    (src / "00005" / "00001.jpg").write_bytes(b"garbage")
    out = tmp_path / "features"
    argv = [f"input_dir={src}", f"output_dir={out}", "num_workers=0", "progress=false", "device=cpu",
            *RANDOM_ENCODERS]
    assert extract_cmd.main(argv) == 0
    captured = capsys.readouterr()
    assert "ok 3 / failed 2 / skipped 0" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert failed == ["failed: 00004: empty folder: no frames in it (frames are images: "
                      ".jpg, .jpeg, .png, .webp, .bmp)",
                      "failed: 00005: frame 00001.jpg: not a readable image (corrupt or truncated?)"]
    entries = Manifest(out / "manifest.jsonl").load()
    for name in NAMES:
        entry = entries[name]
        assert entry.status == "ok" and entry.present == ["eva", "mae", "videomae"] and entry.audio_found is False
        assert entry.source == "frames" and entry.face_detector == "mtcnn"
        assert not (out / FEATURE_DIRS["hubert"] / f"{name}.npy").exists()
    feats = FeatureStore(out).load("00001")
    assert feats["present"].tolist() == [True, True, True, False] and "hubert" not in feats
    assert extract_cmd.main(argv) == 0  # a rerun keeps the done clips and tries the bad ones again
    assert "ok 0 / failed 2 / skipped 3" in capsys.readouterr().out


def test_output_folder_sidecars_and_hidden_folders_are_not_clips(tmp_path):
    (tmp_path / "00001").mkdir()
    (tmp_path / "00001.wav").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "features").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "lone.wav").write_bytes(b"")
    names = [p.name for p in list_inputs(tmp_path, skip=[tmp_path / "features"])]
    assert names == ["00001", "a.mp4", "lone.wav"]


# ---------------------------------------------------------------------------------------------- face detector


def test_face_detector_names_match_and_enter_the_fingerprint():
    assert set(FACE_DETECTORS) == set(DETECTORS)
    cfg = ModelConfig()
    prints = {d: fingerprint(cfg, face_detector=d) for d in DETECTORS}
    assert len(set(prints.values())) == len(DETECTORS)
    assert fingerprint(cfg) == prints["mtcnn"]  # the default
    with pytest.raises(FaceDetectorError, match="face_detector must be one of mtcnn, haar, got 'foo'"):
        fingerprint(cfg, face_detector="foo")


@pytest.mark.parametrize("command,argv", [
    (extract_cmd, ["input_dir={d}", "output_dir={t}/f"]),
    (eval_cmd, ["checkpoint={c}", "run_dir={t}/run"]),
    (infer_cmd, ["{d}", "checkpoint={c}"]),
], ids=["extract", "eval", "infer"])
def test_a_bad_face_detector_is_one_line_naming_the_key(command, argv, dfew, checkpoint, tmp_path, capsys, no_model):
    argv = [a.format(d=dfew / "Clip" / "clip_224x224", t=tmp_path, c=checkpoint) for a in argv]
    refused(capsys, command.main, [*argv, "face_detector=foo"], "face_detector=foo: use one of mtcnn, haar")
    assert not (tmp_path / "f").exists() and not (tmp_path / "run").exists()


def test_a_haar_cache_is_redone_by_an_mtcnn_extraction(dfew, tmp_path, encoders):
    src, out = dfew / "Clip" / "clip_224x224", tmp_path / "features"

    def run(detector: str):
        counts = extract_folder(src, out, ModelConfig(), encoders=encoders, progress=False, face_detector=detector)
        return counts.ok, counts.skipped

    assert run("haar") == (3, 0)
    assert {e.face_detector for e in Manifest(out / "manifest.jsonl").load().values()} == {"haar"}
    assert run("haar") == (0, 3)
    assert run("mtcnn") == (3, 0)  # made with another detector: redone, not mixed in
    assert {e.face_detector for e in Manifest(out / "manifest.jsonl").load().values()} == {"mtcnn"}
    assert run("mtcnn") == (0, 3)


def test_evaluation_refuses_a_cache_of_another_detector(dfew, checkpoint, tmp_path, capsys, encoders):
    out = tmp_path / "features"
    extract_folder(dfew / "Clip" / "clip_224x224", out, ModelConfig(), encoders=encoders, progress=False,
                   face_detector="haar")
    argv = eval_argv(dfew, checkpoint, tmp_path / "run", f"data.features_dir={out}", "data.videos_dir=null")
    refused(capsys, eval_cmd.main, [*argv, "face_detector=mtcnn"], "3 clips", "another face detector",
            str(out), "data.videos_dir")
    assert not (tmp_path / "run").exists()
    assert eval_cmd.main([*argv, "face_detector=haar"]) == 0  # read with the detector it was made with
    # With the clips at hand the stale features are recomputed with the detector asked for.
    assert eval_cmd.main([*argv, "face_detector=mtcnn", f"data.videos_dir={dfew}/Clip/clip_224x224"]) == 0
    assert {e.face_detector for e in Manifest(out / "manifest.jsonl").load().values()} == {"mtcnn"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["missing"]["count"] == 0


# ---------------------------------------------------------------------------------------------- DFEW layouts


def test_dfew_layout_is_detected_and_checked(dfew, checkpoint, tmp_path, capsys, no_model):
    clips = dfew / "Clip"
    assert check_clip_folder(clips / "original") == "original"
    assert check_clip_folder(clips / "clip_224x224") == "frames"
    assert check_clip_folder(clips / "clip_224x224", "frames") == "frames" and check_clip_folder(None) is None
    base = eval_argv(dfew, checkpoint, tmp_path / "run", f"data.features_dir={tmp_path / 'features'}")
    for given, hint in [(dfew, f"{clips}/original"), (clips, f"{clips}/original")]:
        refused(capsys, eval_cmd.main, [*base, f"data.videos_dir={given}"], "holds DFEW's clip folders", hint,
                f"{clips}/clip_224x224")
    refused(capsys, eval_cmd.main, [*base, f"data.videos_dir={clips}/original", "data.layout=frames"],
            "data.layout=frames but", "holds videos (e.g. 00001.mp4), no frame folders", "data.layout=original")
    refused(capsys, eval_cmd.main, [*base, "data.layout=sideways"], "data.layout=sideways", "auto, original, frames")
    assert not (tmp_path / "run").exists()


def test_evaluation_on_either_dfew_layout_computes_features_and_predicts_every_clip(dfew, checkpoint, tmp_path):
    """``tools/eval.py data=dfew data.videos_dir=.../clip_224x224``: the split's ``1`` finds the frame folder
    ``00001``, the missing features are computed from the frame folders (HuBERT absent), every clip is
    predicted; the same with the videos of ``Clip/original`` (HuBERT present)."""
    for layout, folder, present in [("frames", "clip_224x224", ["eva", "mae", "videomae"]),
                                    ("original", "original", None)]:
        features, run_dir = tmp_path / f"features_{layout}", tmp_path / f"run_{layout}"
        argv = eval_argv(dfew, checkpoint, run_dir, f"data.videos_dir={dfew}/Clip/{folder}",
                         f"data.layout={layout}", f"data.features_dir={features}")
        assert eval_cmd.main(argv) == 0
        report = json.loads((run_dir / "metrics.json").read_text())
        assert report["missing"]["count"] == 0 and report["subsets"]["fold1"]["n"] == 3
        with open(run_dir / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["name"] for r in rows] == NAMES and [r["truth"] for r in rows] == list(DFEW_LABELS[:3])
        assert all(r["prediction"] in DFEW_LABELS for r in rows)
        entries = Manifest(features / "manifest.jsonl").load()
        assert all(entries[n].present == present and entries[n].source == ("frames" if present else "video")
                   for n in NAMES)


# ---------------------------------------------------------------------------------------------- inference


def test_folder_arguments_frame_folders_and_folders_of_inputs(tmp_path):
    def images(folder: Path, *names: str) -> Path:
        folder.mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
        return folder

    numbered = images(tmp_path / "00001", "00001.jpg", "00002.jpg")
    named = images(tmp_path / "photos", "cat.jpg", "dog.png")
    parent = tmp_path / "clips"
    images(parent / "00007", "1.jpg")
    (parent / "00007.wav").write_bytes(b"")
    (parent / "talk.mp4").write_bytes(b"")
    assert expand_inputs([numbered]) == [numbered]
    assert expand_inputs([named]) == [named / "cat.jpg", named / "dog.png"]
    assert expand_inputs([parent]) == [parent / "00007", parent / "talk.mp4"]
    assert expand_inputs([named], "clip") == [named]
    assert expand_inputs([numbered], "images") == [numbered / "00001.jpg", numbered / "00002.jpg"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="no videos, images or frame folders in .*nothing"):
        expand_inputs([tmp_path / "nothing"])


def test_infer_on_one_frame_folder(dfew, checkpoint, tmp_path, capsys):
    folder = dfew / "Clip" / "clip_224x224" / "00001"
    cards = tmp_path / "cards"
    argv = [str(folder), "json=true", f"checkpoint={checkpoint}", "device=cpu", f"card={cards}"]
    assert infer_cmd.main(argv) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.strip().splitlines()
    result = json.loads(line)
    assert result["video"] == str(folder) and result["media"] == "video" and result["audio_found"] is False
    assert abs(sum(result["scores"].values()) - 1) < 1e-3 and 0 <= result["peak_frame"] < 26
    assert "read as one clip" in captured.err
    assert [p.name for p in cards.iterdir()] == ["00001.png"]


def test_infer_on_an_empty_or_unreadable_frame_folder(checkpoint, tmp_path, capsys):
    empty = tmp_path / "00001"
    empty.mkdir()
    refused(capsys, infer_cmd.main, [str(empty), f"checkpoint={checkpoint}", "device=cpu"], str(empty))
    broken = tmp_path / "00002"
    broken.mkdir()
    for i in (1, 2):
        (broken / f"{i:05d}.jpg").write_bytes(b"garbage")
    assert infer_cmd.main([str(broken), f"checkpoint={checkpoint}", "device=cpu", "json=true"]) == 1
    assert one_error(capsys) == f"error: {broken}: frame 00001.jpg: not a readable image (corrupt or truncated?)"


def test_inference_matches_the_cached_features_of_a_frame_folder(dfew, checkpoint, tmp_path, encoders):
    """A frame folder is scored from the features extraction writes for it (HuBERT absent in both)."""
    from emotion_llama.evaluation.evaluate import Evaluator
    from emotion_llama.inference.core import InferenceCore
    from emotion_llama.inference.video import Predictor

    core = InferenceCore.load(checkpoint, device="cpu")
    folder = dfew / "Clip" / "clip_224x224" / "00002"
    (pred,) = Predictor(core, labels=DFEW_LABELS).predict([folder])
    out = tmp_path / "features"
    extract_folder(folder.parent, out, core.config, encoders=build_encoders(core.config), progress=False,
                   names=["00002"])
    from emotion_llama.datasets.features import LazyFeatures

    (scored,) = Evaluator(core, DFEW_LABELS).run(["00002"], {}, LazyFeatures(FeatureStore(out), ["00002"]), "score")
    logp = torch.tensor([scored.scores[label] for label in DFEW_LABELS])
    # The cache keeps EVA tokens in float16; inference keeps them in float32.
    torch.testing.assert_close(torch.tensor([pred.scores[label] for label in DFEW_LABELS]), logp.softmax(-1),
                               atol=2e-3, rtol=0)
