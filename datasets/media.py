"""Decoding clips for the encoders: probing, frame sampling, frames and audio (decord), with clear errors.

A clip is a video file or a *frame folder*: a folder of images (``.jpg .jpeg .png .webp .bmp``) that are the
clip's frames in name order, numbers compared as numbers (``1.jpg`` < ``2.jpg`` < ``10.jpg``; DFEW's
``Clip/clip_224x224/00001/00001.jpg ...``). Its frames are sampled as a decoded video's are
(:func:`videomae_indices` over the images), and its audio is ``<folder name>.wav`` beside the folder (the rule of
a video's sidecar, ``NAME.wav`` beside ``NAME.mp4``); without one the clip has no audio. Files of other kinds in
a frame folder are ignored.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torchaudio
from decord import AudioReader, DECORDError, VideoReader, cpu
from PIL import Image

from emotion_llama.errors import MediaError
from emotion_llama.runtime import MAX_IMAGE_PIXELS_ENV, max_image_pixels

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3")
SAMPLE_RATE = 16000  # HuBERT's rate
SIDECAR_SUFFIX = ".wav"

# decord prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: "; users need only the rest.
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")
# decord raises both its own error and plain RuntimeError ("Error reading x.mp4...") when opening fails.
_DECORD_ERRORS = (DECORDError, RuntimeError)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds


@dataclass
class Clip:
    name: str
    path: Path
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    frame_indices: np.ndarray  # (N,) int, into the video's frames
    n_frames: int  # frames in the whole video
    fps: float
    audio: np.ndarray  # (S,) float32 mono at the requested rate; empty when the clip has no audio
    audio_found: bool
    audio_source: str | None = None  # "video", "sidecar" or None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _DECORD_PREFIX.sub("", lines[0]) if lines else type(exc).__name__


def _check_file(path: str | os.PathLike, extensions: tuple[str, ...]) -> Path:
    path = Path(path)
    if path.suffix.lower() not in extensions:
        shown = path.suffix or "(none)"
        raise MediaError(path, f"unsupported extension {shown} (expected {', '.join(extensions)})")
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    return path


def _open_failure(path: Path, exc: BaseException) -> MediaError:
    """Explain why decord could not open ``path``: its own messages are vague ("Error reading x.mp4...")."""
    try:
        with av.open(str(path)) as container:  # reads the header only
            if not container.streams.video:
                return MediaError(path, "no video stream")
    except av.FFmpegError as av_exc:
        return MediaError(path, f"file is corrupt or truncated (ffmpeg: {av_exc.strerror})")
    return MediaError(path, f"file is corrupt or truncated (decord: {_first_line(exc)})")


def open_video(path: str | os.PathLike, num_threads: int = 1) -> VideoReader:
    """Open a video for random frame access, or raise MediaError saying why it is unusable.

    decord indexes the packets when opening but decodes nothing. One decoding thread by default:
    loaders parallelise across clips, and decord's automatic count oversubscribes shared machines.
    """
    path = _check_file(path, VIDEO_EXTENSIONS)
    try:
        with av.open(str(path)) as container:  # the header's frame size, before anything is decoded
            streams = container.streams.video
            if streams:
                check_pixels(path, streams[0].width, streams[0].height)
    except av.FFmpegError:
        pass  # decord names what is wrong with the file below
    try:
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=num_threads)
    except _DECORD_ERRORS as exc:
        raise _open_failure(path, exc) from None
    if len(reader) == 0:
        raise MediaError(path, "zero frames")
    return reader


def _video_info(reader: VideoReader, path: Path) -> VideoInfo:
    height, width = _read_batch(reader, np.array([0]), path).shape[1:3]
    fps = float(reader.get_avg_fps())
    n_frames = len(reader)
    return VideoInfo(path, n_frames, fps, int(width), int(height), n_frames / fps if fps > 0 else 0.0)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, rate and size of a video; decodes only its first frame."""
    path = Path(path)
    return _video_info(open_video(path), path)


def uniform_indices(n_frames: int, num: int) -> np.ndarray:
    """Centres of ``num`` equal segments of ``n_frames`` frames; indices repeat when ``n_frames < num``."""
    if n_frames <= 0 or num <= 0:
        raise ValueError(f"need n_frames > 0 and num > 0, got n_frames={n_frames}, num={num}")
    return ((np.arange(num) + 0.5) * n_frames / num).astype(np.int64)


def videomae_indices(n_frames: int, num_frames: int = 16) -> np.ndarray:
    """The 16 frames VideoMAE sees: segment centres over the whole clip (TSN-style, as VideoMAE on SSv2).

    Labels are utterance-level, so the frames span the whole utterance; Kinetics-style dense sampling
    (16 frames at stride 4) would see only the first ~2.5 s of a 25 fps clip. Centres are deterministic,
    so extracted features do not change between runs.
    """
    return uniform_indices(n_frames, num_frames)


def _read_batch(reader: VideoReader, indices: np.ndarray, path: Path | str) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(reader)):
        raise IndexError(f"{path}: frame indices must lie in [0, {len(reader)}), got {indices.tolist()}")
    try:
        return reader.get_batch(indices.tolist()).asnumpy()
    except _DECORD_ERRORS as exc:
        raise MediaError(path, f"file is corrupt or truncated (decord: {_first_line(exc)})") from None


def read_frames(path_or_reader: str | os.PathLike | VideoReader, indices: np.ndarray) -> np.ndarray:
    """Decode only the frames at ``indices`` -> (N, H, W, 3) uint8 RGB; long videos are never loaded whole.
    A frame folder's frames are its images in name order (see :func:`frame_files`)."""
    if isinstance(path_or_reader, VideoReader):
        return _read_batch(path_or_reader, indices, "video")
    if Path(path_or_reader).is_dir():
        folder = Path(path_or_reader)
        return _read_frame_files(folder, open_frame_folder(folder), indices)
    return _read_batch(open_video(path_or_reader), indices, Path(path_or_reader))


def _audio_rate(path: Path) -> int | None:
    """Sample rate of the first audio stream, None when there is none.

    Asked of ffmpeg's header parser, so the answer does not hang on the wording of decord's errors.
    """
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                return None
            rate = streams[0].rate
    except av.FFmpegError as exc:
        raise MediaError(path, f"file is corrupt or truncated (ffmpeg: {exc.strerror})") from None
    if not rate:
        raise MediaError(path, "its audio stream has no sample rate; re-encode it (e.g. ffmpeg -i IN -ar 16000 OUT)")
    return int(rate)


def _decode_audio(path: Path, native_rate: int, sample_rate: int) -> np.ndarray:
    """Whole audio track as float32 mono at ``sample_rate``: decord decodes it at its own rate and mixes
    the channels down, torchaudio resamples (windowed sinc).

    torchaudio does not read the files: from 2.9 on its load() needs torchcodec, which this project does
    not install.
    """
    try:
        reader = AudioReader(str(path), ctx=cpu(0), sample_rate=-1, mono=True)  # -1: the stream's own rate
        audio = np.ascontiguousarray(reader[:].asnumpy()[0], dtype=np.float32)
    except _DECORD_ERRORS as exc:
        raise MediaError(path, f"audio is corrupt or empty (decord: {_first_line(exc)})") from None
    if native_rate == sample_rate:
        return audio
    return torchaudio.functional.resample(torch.from_numpy(audio), native_rate, sample_rate).numpy()


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, str | None]:
    """Mono float32 audio of a clip and where it came from.

    A video's own track wins ("video"), then ``NAME.wav`` beside ``NAME.mp4`` ("sidecar"); a clip with no
    audio anywhere gives an empty array and None, since many emotion datasets ship silent videos.
    An audio file (.wav, .flac, .mp3) is read directly ("file"); a frame folder has only its sidecar
    (``NAME.wav`` beside the folder ``NAME``).
    """
    path = Path(path)
    if path.is_dir():
        sidecar = sidecar_audio(path)
        if sidecar.is_file():
            return _read_audio_file(_check_file(sidecar, AUDIO_EXTENSIONS), sample_rate), "sidecar"
        return np.zeros(0, dtype=np.float32), None
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return _read_audio_file(_check_file(path, AUDIO_EXTENSIONS), sample_rate), "file"
    path = _check_file(path, VIDEO_EXTENSIONS)
    rate = _audio_rate(path)
    if rate is not None:
        return _decode_audio(path, rate, sample_rate), "video"
    sidecar = path.with_suffix(SIDECAR_SUFFIX)
    if sidecar.is_file():
        return _read_audio_file(_check_file(sidecar, AUDIO_EXTENSIONS), sample_rate), "sidecar"
    return np.zeros(0, dtype=np.float32), None


def _read_audio_file(path: Path, sample_rate: int) -> np.ndarray:
    rate = _audio_rate(path)
    if rate is None:
        raise MediaError(path, "has no audio stream")
    return _decode_audio(path, rate, sample_rate)


def load_clip(path: str | os.PathLike, num_frames: int = 16, sample_rate: int = SAMPLE_RATE) -> Clip:
    """``num_frames`` frames spread over the video or frame folder (see ``videomae_indices``) and its audio."""
    path = Path(path)
    if path.is_dir():
        return load_frame_folder(path, num_frames, sample_rate)
    reader = open_video(path)
    indices = videomae_indices(len(reader), num_frames)
    frames = _read_batch(reader, indices, path)
    audio, source = load_audio(path, sample_rate)
    return Clip(
        name=path.stem,
        path=path,
        frames=frames,
        frame_indices=indices,
        n_frames=len(reader),
        fps=float(reader.get_avg_fps()),
        audio=audio,
        audio_found=source is not None,
        audio_source=source,
    )


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def check_pixels(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse an image or video whose frames hold more than :func:`~emotion_llama.runtime.max_image_pixels`."""
    limit = max_image_pixels()
    if width * height > limit:
        raise MediaError(path, f"{width}x{height} pixels is more than the {limit:,} this tool decodes: scale it down "
                               f"(e.g. ffmpeg -i IN -vf scale=1920:-2 OUT) or raise {MAX_IMAGE_PIXELS_ENV}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One still image as (H, W, 3) uint8 RGB (the first frame of an animated file); its size is checked from
    its header first (:func:`check_pixels`)."""
    path = _check_file(path, IMAGE_EXTENSIONS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is ours, checked below
            with Image.open(path) as header:  # reads the header only
                width, height = header.size
    except Image.DecompressionBombError:
        width = height = max_image_pixels() + 1  # over PIL's own (larger) limit, so over ours
    except (OSError, ValueError):
        width = height = 0  # not for PIL to judge: OpenCV reads it, or names it unreadable
    check_pixels(path, width, height)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # 8-bit BGR; grey and alpha images are converted
    if image is None:
        raise MediaError(path, "not a readable image (corrupt or truncated?)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------- frame folders

_DIGITS = re.compile(r"(\d+)")


def clip_name(path: str | os.PathLike) -> str:
    """The name a clip goes by (features, subtitles, manifests): a file's stem, a frame folder's whole name."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def frame_order(path: Path) -> list:
    """Sort key of a frame file: its name with the numbers in it compared as numbers."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part.lower()) for part in _DIGITS.split(path.name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The images of ``folder`` (hidden files left out) in frame order; other files are not frames."""
    folder = Path(folder)
    images = (p for p in folder.iterdir()
              if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    return sorted(images, key=frame_order)


def sidecar_audio(path: str | os.PathLike) -> Path:
    """Where a clip's sidecar audio would be: ``NAME.wav`` beside ``NAME.mp4``, ``NAME.wav`` beside folder ``NAME``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX) if path.is_dir() else path.with_suffix(SIDECAR_SUFFIX)


def open_frame_folder(folder: str | os.PathLike) -> list[Path]:
    """The frames of a frame folder, or MediaError (naming the folder) when it has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(folder, "folder not found")
    frames = frame_files(folder)
    if not frames:
        inside = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if not inside:
            why = "empty folder: no frames in it"
        elif any(p.is_dir() for p in inside):
            why = ("holds folders, no frames: to read each of its folders as a clip, name this folder as the folder "
                   "of clips (input_dir=, data.videos_dir=)")
        else:
            why = "no frames in this folder"
        raise MediaError(folder, f"{why} (frames are images: {', '.join(IMAGE_EXTENSIONS)})")
    return frames


def _read_frame_files(folder: Path, frames: list[Path], indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(frames)):
        raise IndexError(f"{folder}: frame indices must lie in [0, {len(frames)}), got {indices.tolist()}")
    decoded: dict[int, np.ndarray] = {}
    for i in dict.fromkeys(indices.tolist()):
        try:
            decoded[i] = read_image(frames[i])
        except MediaError as err:
            raise MediaError(folder, f"frame {frames[i].name}: {err.reason}") from None
    first = next(iter(decoded))
    for i, image in decoded.items():
        if image.shape != decoded[first].shape:
            (h0, w0), (h, w) = decoded[first].shape[:2], image.shape[:2]
            raise MediaError(folder, f"frames differ in size: {frames[first].name} is {w0}x{h0}, {frames[i].name} "
                                     f"is {w}x{h} (a frame folder holds the frames of one clip)")
    return np.stack([decoded[i] for i in indices.tolist()]) if indices.size else np.zeros((0, 0, 0, 3), np.uint8)


def load_frame_folder(folder: str | os.PathLike, num_frames: int = 16, sample_rate: int = SAMPLE_RATE) -> Clip:
    """A frame folder as a :class:`Clip`: ``num_frames`` of its images chosen as from a video of that many frames
    (:func:`videomae_indices`), and its sidecar audio (``NAME.wav`` beside the folder) if there is one.
    An empty folder, an unreadable frame or frames of different sizes is a MediaError naming the folder."""
    folder = Path(folder)
    frames = open_frame_folder(folder)
    indices = videomae_indices(len(frames), num_frames)
    pixels = _read_frame_files(folder, frames, indices)
    audio, source = load_audio(folder, sample_rate)
    return Clip(
        name=folder.name,
        path=folder,
        frames=pixels,
        frame_indices=indices,
        n_frames=len(frames),
        fps=0.0,  # unknown: a folder of images records no frame rate
        audio=audio,
        audio_found=source is not None,
        audio_source=source,
    )
