"""The synthetic MERR-style set: real media, complete annotation files, cues that need fusion."""

import json
from pathlib import Path

import av
import cv2
import decord
import numpy as np
import pytest

from emotion_llama.datasets import synthetic as syn
from emotion_llama.datasets.common import read_subtitles
from emotion_llama.datasets.cues import cue_phrases_path, read_cue_phrases
from emotion_llama.datasets.dfew import read_dfew_split, read_dfew_txt
from emotion_llama.datasets.mer import read_mer2023_csv, read_mer2023_npz, read_mer2024_csv
from emotion_llama.datasets.merr import read_merr_json, read_merr_txt
from emotion_llama.errors import UserError
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS

CLIPS_PER_LABEL = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return syn.generate(tmp_path_factory.mktemp("synth") / "set", CLIPS_PER_LABEL, seed=0)


@pytest.fixture(scope="module")
def fine(root) -> dict[str, dict]:
    return read_merr_json(root / "MERR_fine_grained.json")


@pytest.fixture(scope="module")
def coarse(root) -> dict[str, dict]:
    return read_merr_json(root / "MERR_coarse_grained.json")


def decoded(path: Path) -> np.ndarray:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])


def test_same_seed_gives_same_files_serial_or_parallel(tmp_path):
    a = syn.generate(tmp_path / "a", 1, seed=5)
    b = syn.generate(tmp_path / "b", 1, seed=5, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".mp4":
            np.testing.assert_array_equal(decoded(a / rel), decoded(b / rel))
        elif rel.suffix == ".npz":  # zip members carry timestamps: compare the contents
            for corpus in ("train", "test1", "test2", "test3"):
                assert read_mer2023_npz(a / rel, corpus) == read_mer2023_npz(b / rel, corpus)
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = syn.generate(tmp_path / "c", 1, seed=6)
    assert (c / "MERR_fine_grained.json").read_bytes() != (a / "MERR_fine_grained.json").read_bytes()


def test_complete_folder_is_kept_and_other_arguments_refused(root):
    stamp = (root / "meta.json").stat().st_mtime_ns
    assert syn.generate(root, CLIPS_PER_LABEL, seed=0) == root
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other arguments"):
        syn.generate(root, CLIPS_PER_LABEL, seed=1)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["clips_per_label"] == CLIPS_PER_LABEL and meta["grid"] == [
        list(row) for row in syn.GRID]


def test_cue_vocabulary_is_written_next_to_the_data_and_added_to_an_old_set(root):
    # Library code (the reasoning cue check, the tiny encoders' pre-training) reads it instead of importing us.
    phrases = read_cue_phrases(root)
    assert phrases == syn.CUE_PHRASES == {"face": syn.FACE_PHRASES, "voice": syn.VOICE_PHRASES}
    assert [list(p) for p in phrases.values()] == [list(syn.FACE_PHRASES), list(syn.VOICE_PHRASES)]  # key order
    content, stamp = cue_phrases_path(root).read_bytes(), (root / "meta.json").stat().st_mtime_ns
    cue_phrases_path(root).unlink()  # a complete set made before the vocabulary was written
    assert syn.generate(root, CLIPS_PER_LABEL, seed=0) == root
    assert cue_phrases_path(root).read_bytes() == content
    assert (root / "meta.json").stat().st_mtime_ns == stamp


def test_videos_decode_with_their_frame_count_and_an_audio_track(root):
    samples = read_merr_txt(root / "MERR_fine_grained.txt")
    assert len(samples) == CLIPS_PER_LABEL * len(MERR_LABELS)
    for s in samples:
        path = root / "videos" / f"{s.name}.mp4"
        vr = decord.VideoReader(str(path))
        assert len(vr) == s.n_frames
        assert vr[0].shape == (syn.SIZE, syn.SIZE, 3)
        assert 12 <= vr.get_avg_fps() <= 15 and 1.4 <= s.n_frames / vr.get_avg_fps() <= 3.1
        audio = decoded_audio(path)
        assert abs(audio.size / syn.SAMPLE_RATE - s.n_frames / vr.get_avg_fps()) < 0.1


def test_labels_and_stratified_splits(root, fine):
    samples = read_merr_txt(root / "MERR_coarse_grained.txt")
    assert sorted({s.label for s in samples}) == sorted(MERR_LABELS)
    splits = {k: read_merr_txt(root / "splits" / f"{k}.txt") for k in ("train", "val", "test")}
    names = [s.name for part in splits.values() for s in part]
    assert sorted(names) == sorted(s.name for s in samples)  # disjoint and complete
    for part in splits.values():
        assert sorted(s.label for s in part) == sorted(MERR_LABELS)  # one clip per label each
    assert set(read_subtitles(root / "subtitles.csv")) == set(fine)
    assert all(fine[s.name]["pseu_emotion"] == s.label for s in samples)


def test_dfew_and_mer_files_hold_the_test_clips_of_their_labels(root):
    test = read_merr_txt(root / "splits" / "test.txt")
    train = read_merr_txt(root / "splits" / "train.txt")
    dfew = {(s.name, s.label) for s in test if s.label in DFEW_LABELS}
    split_dir = root / "dfew" / "EmoLabel_DataSplit" / "test(single-labeled)"
    folds = [read_dfew_split(split_dir / f"set_{k}.csv") for k in range(1, 6)]
    assert sorted((s.name, s.label) for f in folds for s in f) == sorted(dfew)
    txt = [s for k in range(1, 6) for s in read_dfew_txt(root / "dfew" / f"test_set_{k}.txt")]
    assert sorted((s.name, s.label) for s in txt) == sorted(dfew)
    mer = sorted((s.name, s.label) for s in test if s.label in MER_LABELS)
    for corpus in ("test1", "test2", "test3"):
        assert sorted((s.name, s.label) for s in read_mer2023_npz(root / "mer2023" / "label-6way.npz", corpus)) == mer
    mer_train = sorted((s.name, s.label) for s in train if s.label in MER_LABELS)
    assert sorted((s.name, s.label) for s in read_mer2023_npz(root / "mer2023" / "label-6way.npz", "train")) == mer_train
    assert sorted((s.name, s.label) for s in read_mer2023_csv(root / "mer2023" / "test-label.csv")) == mer
    assert sorted((s.name, s.label) for s in read_mer2024_csv(root / "mer2024" / "label-disdim.csv")) == mer


def test_haar_detector_finds_the_face_on_most_frames(root, fine):
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = []
    for name in fine:
        for frame in decoded(root / "videos" / f"{name}.mp4")[::4]:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(40, 40))
            found.append(len(faces) > 0)
    assert np.mean(found) >= 0.9


def test_the_stored_peak_frame_shows_the_largest_expression(fine):
    peak_change: dict[bool, list[int]] = {True: [], False: []}
    for plan in syn.plan_clips(CLIPS_PER_LABEL, seed=0)[:12]:
        clip = syn.synthesize_clip(plan)
        assert int(fine[plan.name]["peak_index"]) == clip.peak
        # Render every frame's expression at one fixed pose: the pixels moved by the expression
        # (brows, lids, mouth) must be most different from the relaxed face at the peak.
        background, head = syn.render_background(clip.appearance), syn.render_head(clip.appearance)
        pose = np.array([0.0, 0.0, 0.0, 1.0])
        relaxed = syn.render_frame(clip.appearance, np.zeros(syn.N_EXPR), pose, background, head)
        change = [np.abs(syn.render_frame(clip.appearance, e, pose, background, head).astype(int) - relaxed).sum()
                  for e in clip.expression]
        weak = plan.weak == "face"
        peak_change[weak].append(change[clip.peak])
        if not weak:
            # Next to the peak the expression differs by a hair, and rasterising may round either way.
            assert abs(int(np.argmax(change)) - clip.peak) <= 1 and change[clip.peak] >= 0.95 * max(change)
            # Held over much of the clip, the expression still relaxes towards both ends.
            assert change[clip.peak] > 1.5 * max(change[0], change[-1], 1)
    assert peak_change[True] and max(peak_change[True]) < 0.5 * min(peak_change[False])  # a weak face barely moves


def test_one_modality_alone_leaves_three_labels_any_two_identify_it():
    for modality in ("face", "voice", "text"):
        groups = [syn.group_labels(modality, g) for g in range(3)]
        assert sorted(sum(groups, [])) == sorted(MERR_LABELS) and all(len(g) == 3 for g in groups)
    for pair in ((0, 1), (0, 2), (1, 2)):
        keys = {tuple(syn.label_groups(label)[i] for i in pair) for label in MERR_LABELS}
        assert len(keys) == len(MERR_LABELS)


def test_each_label_spreads_evenly_over_the_weak_modalities():
    plans = syn.plan_clips(8, seed=3)
    for label in MERR_LABELS:
        weak = [p.weak for p in plans if p.label == label]
        assert sorted(weak, key=str) == sorted(list(syn.WEAK_KINDS) * 2, key=str)
    assert len({p.seed for p in plans}) == len(plans)


def test_captions_and_reasons_name_exactly_the_cues_drawn(fine, coarse):
    for name, rec in fine.items():
        cues, label = rec["cues"], rec["pseu_emotion"]
        r, c, t = syn.label_groups(label)
        assert (cues["face_group"], cues["voice_group"], cues["text_group"]) == (r, c, t)
        reason, caption = rec["smp_reason_caption"].lower(), coarse[name]["caption"].lower()
        assert reason.endswith(f"suggest {label}.")
        for text in (reason, caption):
            for cue, phrase in syn.FACE_PHRASES.items():
                assert (phrase.lower() in text) == (cue in cues["face_cues"]), (name, phrase)
            for cue, phrase in syn.VOICE_PHRASES.items():
                assert (phrase.lower() in text) == (cue in cues["voice_cues"]), (name, phrase)
            assert rec["text"].lower() in text
        assert (cues["face_cues"] == ["face_still"]) == (cues["weak"] == "face")
        assert (cues["voice_cues"] == ["voice_flat"]) == (cues["weak"] == "voice")
        assert (syn.TEXT_PHRASES[None] in reason) == (cues["weak"] == "text")
        assert rec["visual_prior_list"] == [syn.FACE_PHRASES[k] for k in cues["face_cues"]]


def test_voice_loudness_follows_the_voice_group(root, fine):
    rms: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for name, rec in fine.items():
        if rec["cues"]["weak"] != "voice":
            audio = decoded_audio(root / "videos" / f"{name}.mp4")
            rms[rec["cues"]["voice_group"]].append(float(np.sqrt(np.mean(audio**2))))
    assert max(rms[1]) < min(rms[2]) and max(rms[2]) < min(rms[0])  # soft < medium < loud


def test_weak_text_is_an_everyday_sentence(fine):
    pools = {g: syn.TEXT_POOLS[g] for g in (0, 1, 2, None)}
    for rec in fine.values():
        group = None if rec["cues"]["weak"] == "text" else rec["cues"]["text_group"]
        words = set(rec["text"].lower().replace(",", "").replace(".", "").replace("?", "").split())
        own = {w for k, v in pools[group].items() if k != "templates" for s in v for w in s.lower().split()}
        others = {w for g, p in pools.items() if g != group for k, v in p.items() if k != "templates"
                  for s in v for w in s.lower().split()}
        assert words & (own - others), rec["text"]
