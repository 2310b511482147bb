from pathlib import Path

import av
import numpy as np
import pytest
from media_fixtures import draw_face, tone, write_wav

from emotion_llama.datasets.faces import crop_faces, detect_faces, select_peak_frame, track_face
from emotion_llama.datasets.media import (
    VideoInfo,
    load_audio,
    load_clip,
    open_video,
    probe_video,
    read_frames,
    uniform_indices,
    videomae_indices,
)
from emotion_llama.datasets.video_io import write_mp4
from emotion_llama.errors import MediaError

FPS = 25
N_FRAMES = 24
APEX = range(11, 15)  # frames drawn with the open mouth and raised brows
AAC_FRAME = 1024  # samples an AAC encoder may add (priming) or drop, at the source rate


def face_frames(n: int = N_FRAMES) -> np.ndarray:
    """A face drifting right by 8 px, neutral except for the APEX frames."""
    return np.stack([
        draw_face(centre=(76 + 8 * i // n, 80), height=80, expression=1.0 if i in APEX else 0.0)
        for i in range(n)
    ])


def no_face_frames(n: int = 12) -> np.ndarray:
    """120x160 frames of a moving grey ramp: texture without anything face-like."""
    ramp = np.linspace(40, 200, 160, dtype=np.float32)[None, :, None]
    return np.stack([np.broadcast_to((ramp + 3 * i) % 256, (120, 160, 3)) for i in range(n)]).astype(np.uint8)


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(0.064, 16000)[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    face = face_frames()
    paths = {
        "face": write_mp4(root / "face.mp4", face, FPS, audio=tone(1.0, 44100), sample_rate=44100),
        "tone16k": write_mp4(root / "tone16k.mp4", face[:8], FPS, audio=tone(0.5, 16000)),
        "silent": write_mp4(root / "silent.mp4", face[:8], FPS),
        "sidecar": write_mp4(root / "sidecar.mp4", face[:8], FPS),
        "noface": write_mp4(root / "noface.mp4", no_face_frames(), FPS),
        "audio_only": write_audio_only(root / "audio_only.mp4"),
        "wav": write_wav(root / "speech.wav", tone(0.5, 22050), 22050, channels=2),
    }
    write_wav(root / "sidecar.wav", tone(0.5, 22050), 22050, channels=2)
    good = paths["face"].read_bytes()
    for name, data in {
        "corrupt": np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        "truncated": good[: int(0.3 * len(good))],
        "empty": b"",
    }.items():
        paths[name] = root / f"{name}.mp4"
        paths[name].write_bytes(data)
    paths["text"] = root / "notes.txt"
    paths["text"].write_text("not a video")
    paths["missing"] = root / "missing.mp4"
    return paths


def test_probe_reports_size_rate_and_length(media):
    info = probe_video(media["face"])
    assert info == VideoInfo(media["face"], N_FRAMES, float(FPS), 160, 160, N_FRAMES / FPS)


def test_uniform_indices_are_segment_centres():
    np.testing.assert_array_equal(uniform_indices(100, 4), [12, 37, 62, 87])
    short = uniform_indices(5, 16)
    assert len(short) == 16 and set(short) == set(range(5)) and np.all(np.diff(short) >= 0)
    with pytest.raises(ValueError):
        uniform_indices(0, 16)


def test_videomae_indices_span_the_whole_clip():
    idx = videomae_indices(300)
    assert len(idx) == 16 and idx[0] < 20 and idx[-1] > 280
    assert len(videomae_indices(7)) == 16


def test_read_frames_returns_exactly_the_requested_frames(media):
    source = face_frames()
    indices = np.array([13, 0, 13, N_FRAMES - 1])
    for handle in (media["face"], open_video(media["face"])):
        frames = read_frames(handle, indices)
        assert frames.shape == (4, 160, 160, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames[0], frames[2])
        assert np.abs(frames.astype(int) - source[indices]).mean() < 6  # H.264 at crf 23
    with pytest.raises(IndexError):
        read_frames(media["face"], np.array([N_FRAMES]))


def test_load_clip_samples_frames_and_audio(media):
    clip = load_clip(media["face"], num_frames=16)
    assert clip.name == "face" and clip.n_frames == N_FRAMES and clip.fps == FPS
    assert clip.frames.shape == (16, 160, 160, 3)
    np.testing.assert_array_equal(clip.frame_indices, videomae_indices(N_FRAMES))
    assert clip.audio_found and clip.audio_source == "video" and clip.audio.dtype == np.float32


@pytest.mark.parametrize(("name", "source_rate", "seconds"), [("face", 44100, 1.0), ("tone16k", 16000, 0.5)])
def test_video_audio_is_resampled_to_16k(media, name, source_rate, seconds):
    audio, source = load_audio(media[name], sample_rate=16000)
    assert source == "video" and audio.ndim == 1
    assert abs(len(audio) - seconds * 16000) <= AAC_FRAME * 16000 / source_rate
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(spectrum.argmax() * 16000 / len(audio) - 440) < 5  # a wrong rate would shift the pitch


def test_clip_without_audio_gives_an_empty_waveform(media):
    audio, source = load_audio(media["silent"])
    assert source is None and audio.shape == (0,) and audio.dtype == np.float32
    clip = load_clip(media["silent"], num_frames=4)
    assert not clip.audio_found and clip.audio.shape == (0,)


def test_sidecar_wav_is_used_when_the_video_has_no_audio(media):
    clip = load_clip(media["sidecar"], num_frames=4)
    assert clip.audio_found and clip.audio_source == "sidecar"
    assert abs(len(clip.audio) - 8000) <= 1  # 0.5 s of 22.05 kHz stereo -> 16 kHz mono


def test_standalone_audio_file(media):
    audio, source = load_audio(media["wav"])
    assert source == "file" and abs(len(audio) - 8000) <= 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt", "corrupt or truncated"),
        ("truncated", "corrupt or truncated"),
        ("empty", "empty"),
        ("text", "unsupported extension .txt"),
        ("missing", "file not found"),
        ("audio_only", "no video stream"),
    ],
)
def test_unusable_files_raise_one_line_media_error(media, name, reason):
    for load in (probe_video, load_clip):
        with pytest.raises(MediaError) as err:
            load(media[name])
        message = str(err.value)
        assert message.startswith(f"{media[name]}: ") and reason in message and "\n" not in message


def test_drawn_face_is_detected_and_tracked(media):
    clip = load_clip(media["face"], num_frames=16)
    assert len(detect_faces(clip.frames[0])) == 1
    track = track_face(clip.frames)
    assert track.found and track.boxes.shape == (16, 4)
    x0, y0, x1, y1 = track.boxes.T
    np.testing.assert_allclose(x1 - x0, y1 - y0, atol=1e-3)  # square
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 160).all() and (y1 <= 160).all()
    drawn_x = 76 + 8 * clip.frame_indices / N_FRAMES
    assert np.abs((x0 + x1) / 2 - drawn_x).max() < 6 and np.abs((y0 + y1) / 2 - 80).max() < 8
    assert ((x1 - x0) > 80).all()  # the whole 80 px head plus a margin
    assert crop_faces(clip.frames, track, 64).shape == (16, 64, 64, 3)


def test_peak_frame_is_the_widest_expression(media):
    clip = load_clip(media["face"], num_frames=16)
    crops = crop_faces(clip.frames, track_face(clip.frames), 64)
    assert clip.frame_indices[select_peak_frame(crops)] in APEX
    darker = crops.copy()
    darker[0] = (darker[0] * 0.5).astype(np.uint8)  # a lighting change is not an expression
    assert clip.frame_indices[select_peak_frame(darker)] in APEX


def test_peak_frame_of_an_expression_held_over_most_of_the_clip():
    # Relaxed only at both ends: the clip's median face already shows the expression, the ends do not.
    levels = [0.0, 0.3, 0.6, 0.75, 0.8, 0.85, 0.9, 1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.6, 0.3, 0.0]
    crops = np.stack([draw_face(expression=e) for e in levels])
    assert select_peak_frame(crops) == 7


def test_no_face_falls_back_to_a_centre_square(media):
    frames = load_clip(media["noface"], num_frames=4).frames
    track = track_face(frames)
    assert not track.found
    np.testing.assert_allclose(track.boxes, np.tile([[20, 0, 140, 120]], (4, 1)))
    assert crop_faces(frames, track, 32).shape == (4, 32, 32, 3)
