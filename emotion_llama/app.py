"""The web demo: a Gradio page over one :class:`~emotion_llama.inference.video.Predictor`.

The page takes an upload (a video, or an image), an optional subtitle, the task (``emotion`` or ``reason``)
and a label set, and shows the emotion with its probability bars, the peak frame with the face box (the
card of ``emotion-llama-infer card=``), which modalities were found, the explanation (``task=reason``) and
the JSON object ``emotion-llama-infer json=true`` prints. The checkpoint and its encoders are loaded once,
before the page is served; requests are answered one at a time. A file the Predictor cannot use gets a
one-line ``error: ...`` in the status box and the server goes on serving.

The command (``emotion-llama-app``, ``tools/app.py``) is :mod:`emotion_llama.commands.app`.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from emotion_llama.cli import one_line
from emotion_llama.datasets.common import read_subtitles
from emotion_llama.datasets.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from emotion_llama.datasets.merr import read_merr_txt
from emotion_llama.errors import UserError
from emotion_llama.inference.video import TASKS, Failure, Prediction, Predictor, save_card
from emotion_llama.labels import LABEL_SETS, resolve_labels

log = logging.getLogger(__name__)

UPLOAD_TYPES = [*VIDEO_EXTENSIONS, *IMAGE_EXTENSIONS]
# Shown name -> key of emotion_llama.labels.LABEL_SETS (conf/app.yaml label_sets).
DEFAULT_LABEL_SETS = {"MERR": "merr", "DFEW": "dfew", "MER": "mer2023", "EmoSet": "emoset"}
TITLE = "Emotion-LLaMA"
# The image's label floats over its top edge, where the card has its title.
CSS = "#card .image-frame { padding-top: 1.9rem; }"


@dataclass
class Example:
    """A clip offered one click away: its video, its subtitle and, for a labelled split, its label."""

    video: Path
    subtitle: str
    label: str | None = None

    @property
    def caption(self) -> str:
        return f"{self.video.stem} ({self.label})" if self.label else self.video.stem


def find_examples(folder: str | Path | None, limit: int = 9) -> list[Example]:
    """Up to ``limit`` clips of a MERR-style folder (``videos/``, ``splits/test.txt``, ``subtitles.csv``):
    one test clip per label first, then the other test clips; every video (by name) when there is no test
    split; none when the folder has no ``videos/``."""
    root = Path(folder) if folder else None
    if root is None or not (root / "videos").is_dir() or limit <= 0:
        return []
    videos = {p.stem: p for p in sorted((root / "videos").iterdir())
              if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS}
    subtitles = read_subtitles(root / "subtitles.csv") if (root / "subtitles.csv").is_file() else {}
    split = root / "splits" / "test.txt"
    if split.is_file():
        samples = [s for s in read_merr_txt(split) if s.name in videos]
        first: dict[str, object] = {}
        for sample in samples:
            first.setdefault(sample.label, sample)
        ordered = [*first.values(), *(s for s in samples if s not in first.values())]
        chosen = [(s.name, s.label) for s in ordered]
    else:
        chosen = [(name, None) for name in videos]
    return [Example(videos[name], subtitles.get(name, ""), label) for name, label in chosen[:limit]]


@dataclass
class Answer:
    """What the page shows for one request; ``status`` alone (``error: ...``) when the upload was refused."""

    status: str
    prediction: Prediction | None = None
    card: np.ndarray | None = None
    modalities: str = ""

    @property
    def ok(self) -> bool:
        return self.prediction is not None

    @property
    def scores(self) -> dict[str, float] | None:
        return None if self.prediction is None else dict(self.prediction.scores)

    @property
    def explanation(self) -> str | None:
        return None if self.prediction is None else self.prediction.reasoning

    @property
    def record(self) -> dict | None:
        """The object ``emotion-llama-infer json=true`` prints for the same video."""
        return None if self.prediction is None else self.prediction.to_dict()

    def outputs(self) -> tuple:
        """The values of the page's outputs: status, label bars, card, modalities, explanation, JSON."""
        explanation = gr.update(value=self.explanation or "", visible=self.explanation is not None)
        return self.status, self.scores, self.card, self.modalities, explanation, self.record


def describe_modalities(pred: Prediction, subtitle_source: str) -> str:
    """Which inputs the model had: face (and the peak frame), audio, subtitle (typed or transcribed)."""
    still = getattr(pred, "media", "video") == "image"
    if pred.face_found:
        face = "found" if still else f"found (peak frame {pred.peak_frame})"
    else:
        face = f"not found (the centre of the {'image' if still else 'frame'} was used)"
    audio = "none (a still image)" if still else "found" if pred.audio_found else "none"
    subtitle = f"{pred.subtitle!r} ({subtitle_source})" if pred.subtitle else "none"
    return "\n".join([f"face: {face}", f"audio: {audio}", f"subtitle: {subtitle}"])


def card_image(pred: Prediction) -> np.ndarray:
    """The card of ``emotion-llama-infer card=`` (peak frame, face box, probabilities) as an RGB array."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="emotion_llama_card_") as tmp:
        path = save_card(pred, Path(tmp) / "card.png")
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))


class DemoApp:
    """The page's logic over one loaded Predictor (shared by every label set: nothing is loaded twice)."""

    def __init__(self, predictor: Predictor, label_sets: Mapping[str, str] | None = None,
                 examples: Sequence[Example] = (), checkpoint: str | Path | None = None):
        label_sets = dict(DEFAULT_LABEL_SETS if label_sets is None else label_sets)
        if not label_sets:
            raise UserError(f"label_sets is empty: name at least one of {', '.join(LABEL_SETS)}")
        for shown, key in label_sets.items():
            if not isinstance(key, str):
                raise UserError(f"label_sets.{shown}={key}: name one of {', '.join(LABEL_SETS)}")
            resolve_labels(key, f"label_sets.{shown}")
        # Shallow copies: the same core, encoders and ASR model, each with its own candidate labels.
        self.predictors: dict[str, Predictor] = {}
        for shown, key in label_sets.items():
            variant = copy.copy(predictor)
            variant.labels = list(LABEL_SETS[key])
            self.predictors[shown] = variant
        self.examples = list(examples)
        self.checkpoint = checkpoint
        self._lock = threading.Lock()  # one request on the model at a time, whatever event started it

    @property
    def label_set_names(self) -> list[str]:
        return list(self.predictors)

    @property
    def transcribes(self) -> bool:
        return next(iter(self.predictors.values())).asr is not None

    # ------------------------------------------------------------------------------------------ requests

    def answer(self, upload: str | Path | None, subtitle: str | None = None, task: str = "emotion",
               label_set: str | None = None) -> Answer:
        """Run one upload through the Predictor; never raises: a refused upload is an ``error:`` status."""
        try:
            return self._answer(upload, subtitle, task, label_set)
        except UserError as err:
            return Answer(f"error: {one_line(str(err))}")
        except Exception as err:  # noqa: BLE001 (the server must keep serving; the details go to the log)
            name = Path(str(upload)).name if upload else "the upload"
            log.exception("could not process %s", name)
            return Answer(f"error: could not process {name}: {one_line(f'{type(err).__name__}: {err}')}")

    def respond(self, upload, subtitle, task, label_set) -> tuple:
        """The click handler: the page's output values."""
        return self.answer(upload, subtitle, task, label_set).outputs()

    def _answer(self, upload, subtitle, task, label_set) -> Answer:
        if not upload:
            raise UserError("upload a video (or an image) first, or click one of the examples")
        path = Path(str(upload))
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}: use {' or '.join(TASKS)}")
        label_set = label_set or self.label_set_names[0]
        if label_set not in self.predictors:
            raise UserError(f"unknown label set {label_set!r}: use one of {', '.join(self.predictors)}")
        text = (subtitle or "").strip() or None  # None: transcribed when an ASR model is set, else none
        start = time.perf_counter()
        with self._lock:
            result = self.predictors[label_set].predict([path], text, task, keep_image=True)[0]
        if isinstance(result, Failure):
            return Answer(f"error: {path.name}: {one_line(result.reason)}")
        seconds = time.perf_counter() - start
        source = "typed" if text is not None else "transcribed"
        top = result.scores[result.emotion]
        status = f"{result.emotion} ({top:.1%}) among the {label_set} labels, in {seconds:.1f} s"
        return Answer(status, result, card_image(result), describe_modalities(result, source))

    # ------------------------------------------------------------------------------------------ page

    def build(self) -> gr.Blocks:
        """The page (not launched)."""
        subtitle_help = ("empty: transcribed from the speech" if self.transcribes
                         else "empty: no subtitle (start with asr_model=DIR to transcribe the speech)")
        model = f" Model: `{self.checkpoint}`." if self.checkpoint else ""
        with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
            gr.Markdown(f"# {TITLE}\nUpload a video (or an image); the model names the emotion from the face, "
                        f"the voice and the words, and explains it with the task `reason`.{model}")
            # The outputs are made first (the examples' click fills them) and placed in the right column.
            status = gr.Textbox(label="Status", interactive=False, elem_id="status", render=False)
            label = gr.Label(label="Emotion", elem_id="emotion", render=False)
            card = gr.Image(label="Peak frame (or image) with the face box", type="numpy", format="png", interactive=False,
                            buttons=["download", "fullscreen"], elem_id="card", render=False)
            modalities = gr.Textbox(label="Modalities", lines=3, interactive=False, elem_id="modalities",
                                    render=False)
            explanation = gr.Textbox(label="Explanation", lines=3, interactive=False, visible=False,
                                     elem_id="explanation", render=False)
            record = gr.JSON(label="JSON (as emotion-llama-infer json=true prints it)", elem_id="json",
                             render=False)
            outputs = [status, label, card, modalities, explanation, record]
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label="Video or image", file_types=UPLOAD_TYPES, type="filepath",
                                     elem_id="upload")
                    subtitle = gr.Textbox(label="Subtitle (what the person says)", placeholder=subtitle_help,
                                          elem_id="subtitle")
                    task = gr.Radio(list(TASKS), value=TASKS[0], label="Task",
                                    info="emotion: the label; reason: also an explanation", elem_id="task")
                    label_set = gr.Radio(self.label_set_names, value=self.label_set_names[0], label="Label set",
                                         elem_id="label-set")
                    button = gr.Button("Recognise", variant="primary", elem_id="submit")
                    status.render()
                    inputs = [upload, subtitle, task, label_set]
                    if self.examples:
                        gr.Examples(
                            examples=[[str(e.video), e.subtitle, TASKS[0], self.label_set_names[0]]
                                      for e in self.examples],
                            inputs=inputs, outputs=outputs, fn=self.respond, run_on_click=True,
                            cache_examples=False, example_labels=[e.caption for e in self.examples],
                            label="Examples (one click runs them)", elem_id="examples",
                        )
                with gr.Column(scale=1):
                    for output in outputs[1:]:
                        output.render()
            button.click(self.respond, inputs, outputs, api_name="predict", concurrency_limit=1)
        return demo

    def launch(self, host: str = "127.0.0.1", port: int = 7860, max_file_size: str | int | None = None) -> gr.Blocks:
        """Start serving the page in the background (``close()`` the returned Blocks to stop); requests are
        queued and answered one at a time."""
        demo = self.build()
        demo.queue(default_concurrency_limit=1)
        allowed = sorted({str(e.video.parent.resolve()) for e in self.examples})
        try:
            demo.launch(server_name=host, server_port=int(port), allowed_paths=allowed, show_error=False,
                        max_file_size=max_file_size, prevent_thread_lock=True, ssr_mode=False, quiet=True,
                        inbrowser=False, share=False, css=CSS)
        except OSError as err:
            raise UserError(f"cannot serve on {host}:{port} ({one_line(str(err)).split('. ')[0]}): "
                            "pass another port=N") from None
        return demo
