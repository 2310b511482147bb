"""Imagining an utterance: one picture per utterance from a local diffusers text-to-image pipeline, cached.

Each utterance becomes a prompt through a template (``{utterance}``, ``{speaker}`` and ``{context}``, the
last few earlier turns of its dialogue as ``Speaker: text`` lines) and is drawn with its own seed, derived
from its id by SHA-256 (never Python's ``hash``, which changes between runs), so the same id always starts
from the same noise. The noise is drawn on the CPU, so it does not depend on the device either.

Images go to ``out_dir/imagined/<id>.png``, each written atomically, and then a line is appended to
``out_dir/imagined/manifest.jsonl`` with the id, file, prompt, seed and a fingerprint of the pipeline and the
sampling settings (see :func:`pipeline_fingerprint`). An image counts as done only when its manifest line
(the last one for its id) has the same prompt, seed and fingerprint and the file exists; anything else is
drawn again, so a changed pipeline, template or setting never lets an old picture through. A rerun loads the
pipeline only when something is left to draw.

Determinism: the same id, prompt, pipeline and settings give the same picture. Pictures drawn in different
batch groupings can differ by rounding in the last bit of a float, which almost never changes a pixel.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_path
from emotion_llama.runtime import LOCAL_PLAIN, helper_dtype, resolve_device

log = logging.getLogger(__name__)

IMAGINE_VERSION = 1
DEFAULT_TEMPLATE = 'A photo of a person in a conversation, saying "{utterance}"'
PLACEHOLDERS = ("utterance", "speaker", "context")
IMAGE_DIR = "imagined"
MANIFEST = "manifest.jsonl"
DTYPES = ("auto", "float32", "float16", "bfloat16")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".gguf")
INSTALL_HINT = "pip install 'emotion-llama[imagine]'"


# ---------------------------------------------------------------------------------------------- seeds, prompts


def utterance_seed(utterance_id: str, base_seed: int = 0) -> int:
    """A 63-bit seed from SHA-256 of ``"{base_seed}:{utterance_id}"``: the same on every run and machine."""
    digest = hashlib.sha256(f"{base_seed}:{utterance_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def check_template(template: str) -> str:
    """Fail with one line unless ``template`` names ``{utterance}`` and no placeholder outside PLACEHOLDERS."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise UserError(f"prompt_template {template!r} is not a valid template ({e}); "
                        "write literal braces as {{ and }}") from None
    unknown = sorted(n for n in names if n not in PLACEHOLDERS)
    if unknown:
        raise UserError(f"prompt_template: unknown placeholder {{{unknown[0]}}}; use "
                        + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
    if "utterance" not in names:
        raise UserError(f"prompt_template {template!r} does not contain {{utterance}}: add it")
    return template


def build_prompt(template: str, utterance, context_turns: int = 2) -> str:
    """The template filled from an utterance (anything with ``text``, ``speaker`` and ``context_text``)."""
    context = utterance.context_text(context_turns, separator=" ") if context_turns > 0 else ""
    return template.format(utterance=utterance.text, speaker=utterance.speaker, context=context)


# ---------------------------------------------------------------------------------------------- pipeline


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise UserError(f"imagining images needs the diffusers package: {INSTALL_HINT}") from None
    return diffusers


def check_pipeline_dir(pipeline_dir: str | os.PathLike) -> Path:
    path = Path(pipeline_dir)
    if not (path / "model_index.json").is_file():
        what = "does not exist" if not path.exists() else "is not a diffusers pipeline folder (no model_index.json)"
        raise UserError(f"{path} {what}: set paths.t2i to a text-to-image pipeline saved with save_pretrained")
    return path


def resolve_dtype(dtype: str, device) -> object:
    import torch

    if dtype not in DTYPES:
        raise UserError(f"dtype={dtype} is not supported: use one of {', '.join(DTYPES)}")
    if dtype == "auto":  # diffusion pipelines run in float16 on a GPU (their VAEs are trained for it)
        return helper_dtype(device, half="float16") or torch.float32
    return getattr(torch, dtype)


def load_text_to_image(pipeline_dir: str | os.PathLike, device="cpu", dtype: str = "auto"):
    """A diffusers text-to-image pipeline from a local folder (no download), on ``device``, without its
    own progress bar. Refused when a component's checkpoint lacks weights its network has: transformers
    would initialise them at random and diffusers leave them empty, and either way the pictures are noise."""
    path = check_pipeline_dir(pipeline_dir)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    diffusers = _diffusers()
    bars = diffusers.utils.logging.is_progress_bar_enabled()
    diffusers.utils.logging.disable_progress_bar()  # no "Loading pipeline components" bar
    try:
        given = _transformers_components(path, torch_dtype)
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype, **given)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"{path} could not be loaded as a text-to-image pipeline ({_first_line(e)}); "
                        "set paths.t2i to a complete pipeline folder") from None
    finally:
        if bars:
            diffusers.utils.logging.enable_progress_bar()
    _check_no_empty_weights(pipe, path)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _transformers_components(path: Path, torch_dtype) -> dict[str, object]:
    """The pipeline's transformers networks (text encoders), loaded here to see their load report; the
    pipeline is then built around them."""
    import transformers

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    components = {}
    for name, spec in index.items():
        if name.startswith("_") or not (isinstance(spec, list) and len(spec) == 2 and spec[0] == "transformers"):
            continue
        cls = getattr(transformers, str(spec[1]), None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            continue  # tokenizers, feature extractors
        if not (path / name).is_dir():
            raise UserError(f"{path / name} is missing: model_index.json names a {name} component; "
                            "set paths.t2i to a complete pipeline folder")
        model, info = cls.from_pretrained(str(path / name), dtype=torch_dtype, output_loading_info=True,
                                          **LOCAL_PLAIN)
        mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
        new = sorted({*info.get("missing_keys", ()), *mismatched})
        if new:
            raise UserError(f"{path / name}: {len(new)} weight(s) are missing from the checkpoint and would be "
                            f"initialised at random (first: {new[0]}); set paths.t2i to a complete pipeline folder")
        components[name] = model
    return components


def _check_no_empty_weights(pipe, path: Path) -> None:
    """diffusers leaves a weight its checkpoint lacks on the meta device (no data)."""
    import torch

    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            empty = [k for k, t in component.state_dict(keep_vars=True).items() if t.is_meta]
            if empty:
                raise UserError(f"{path / name}: {len(empty)} weight(s) are missing from the checkpoint "
                                f"(first: {empty[0]}); set paths.t2i to a complete pipeline folder")


def pipeline_fingerprint(pipeline_dir: str | os.PathLike, settings: Mapping[str, object] | None = None) -> str:
    """Identifies a pipeline folder and the sampling settings, without loading anything.

    The folder counts by ``model_index.json`` and the contents of every other file (configs, tokenizer
    files) of the components it names, and by the size and modification time of their weight files
    (hashing gigabytes on every run would cost more than it saves); the folder's own path does not count,
    so a moved folder keeps its pictures.
    """
    path = check_pipeline_dir(pipeline_dir)
    index_text = (path / "model_index.json").read_text(encoding="utf-8")
    try:
        components = sorted(k for k in json.loads(index_text) if not k.startswith("_"))
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{path / 'model_index.json'} is not a JSON object: "
                        "save the pipeline again with save_pretrained") from None
    files: dict[str, object] = {}
    for component in components:
        folder = path / component
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(path).as_posix()
            if not f.is_file() or any(part.startswith(".") for part in f.relative_to(path).parts):
                continue
            if f.suffix in WEIGHT_SUFFIXES:
                st = f.stat()
                files[rel] = [st.st_size, st.st_mtime_ns]
            elif f.suffix != ".md":
                files[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    key = {"version": IMAGINE_VERSION, "model_index": index_text, "files": files, "settings": dict(settings or {})}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- cache


@dataclass
class ImageRecord:
    id: str
    file: str  # relative to the manifest's folder
    prompt: str
    seed: int
    fingerprint: str


class ImageManifest:
    """Append-only JSON lines, one per drawn image; the last line for an id wins, a cut-off line is ignored."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, ImageRecord]:
        records: dict[str, ImageRecord] = {}
        if not self.path.is_file():
            return records
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
                records[data["id"]] = ImageRecord(**data)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run: that image is simply drawn again
        return records

    def append(self, records: Iterable[ImageRecord]) -> None:
        text = "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write with O_APPEND: concurrent writers never interleave within it.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)


def _check_id(utterance_id: str) -> str:
    if not utterance_id or utterance_id.startswith(".") or any(c in utterance_id for c in '/\\:\0'):
        raise UserError(f"utterance id {utterance_id!r} cannot name an image file: "
                        "use ids without slashes, colons or a leading dot")
    return utterance_id


@dataclass
class Imagined:
    """The image of each utterance id, and how many were drawn now or found done."""

    paths: dict[str, Path] = field(default_factory=dict)
    drawn: int = 0
    cached: int = 0


class Imaginer:
    """Draws (or finds cached) one picture per utterance; see the module doc.

    ``size``: the picture's side, or ``(height, width)``, multiples of 8. ``device``: ``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``; ``dtype``: ``auto`` (float16 on a GPU, else float32) or a torch dtype name.
    ``context_turns``: how many earlier turns ``{context}`` holds. ``seed``: mixed into every utterance's seed.
    """

    def __init__(self, pipeline_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 prompt_template: str = DEFAULT_TEMPLATE, steps: int = 30, guidance: float = 7.5,
                 size: int | Sequence[int] = 512, batch_size: int = 4, device: str = "auto",
                 dtype: str = "auto", negative_prompt: str | None = None, context_turns: int = 2, seed: int = 0):
        self.pipeline_dir = check_pipeline_dir(pipeline_dir)
        self.out_dir = Path(out_dir)
        self.template = check_template(prompt_template)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if height <= 0 or width <= 0 or height % 8 or width % 8:
            raise UserError(f"size={size} is not usable: the image's height and width must be positive "
                            "multiples of 8")
        if steps < 1:
            raise UserError(f"steps={steps}: use at least 1 denoising step")
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}: use a batch size of at least 1")
        if dtype not in DTYPES:
            raise UserError(f"dtype={dtype} is not supported: use one of {', '.join(DTYPES)}")
        self.height, self.width = int(height), int(width)
        self.steps, self.guidance, self.batch_size = int(steps), float(guidance), int(batch_size)
        self.device, self.dtype = device, dtype
        self.negative_prompt = negative_prompt
        self.context_turns, self.seed = int(context_turns), int(seed)
        self.image_dir = self.out_dir / IMAGE_DIR
        self.manifest = ImageManifest(self.image_dir / MANIFEST)
        self._pipe = None
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------------------------------ pieces

    def settings(self) -> dict[str, object]:
        """The sampling settings that change a picture (the prompt and the seed are kept per image)."""
        return {"steps": self.steps, "guidance": self.guidance, "height": self.height, "width": self.width,
                "negative_prompt": self.negative_prompt, "dtype": self._dtype_name()}

    def _dtype_name(self) -> str:
        """The dtype the pipeline runs in: ``auto`` is float16 on a GPU, else float32."""
        if self.dtype != "auto":
            return self.dtype
        import torch

        name = str(self.device)
        on_gpu = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
        return "float16" if on_gpu else "float32"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = pipeline_fingerprint(self.pipeline_dir, self.settings())
        return self._fingerprint

    @property
    def pipeline(self):
        if self._pipe is None:
            self._pipe = load_text_to_image(self.pipeline_dir, self.device, self.dtype)
        return self._pipe

    def prompt(self, utterance) -> str:
        return build_prompt(self.template, utterance, self.context_turns)

    def image_path(self, utterance_id: str) -> Path:
        return self.image_dir / f"{_check_id(utterance_id)}.png"

    # ------------------------------------------------------------------------------------------ running

    def imagine(self, utterances: Iterable) -> Imagined:
        """The picture of every utterance (anything with ``id``, ``text``, ``speaker``, ``context_text``)."""
        jobs: list[ImageRecord] = []
        seen: set[str] = set()
        for u in utterances:
            if u.id in seen:
                raise UserError(f"utterance id {u.id} appears twice: ids must be unique to name their images")
            seen.add(u.id)
            jobs.append(ImageRecord(u.id, self.image_path(u.id).name, self.prompt(u),
                                    utterance_seed(u.id, self.seed), self.fingerprint))
        done = self.manifest.load()
        result = Imagined()
        todo = []
        for job in jobs:
            result.paths[job.id] = self.image_dir / job.file
            if done.get(job.id) == job and result.paths[job.id].is_file():
                result.cached += 1
            else:
                todo.append(job)
        if todo:
            log.info("imagining %d utterances (%d already done)", len(todo), result.cached)
            with tqdm(total=len(todo), desc="imagining", unit="image", disable=None, leave=False) as bar:
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start:start + self.batch_size]
                    self._draw(batch)
                    result.drawn += len(batch)
                    bar.update(len(batch))
        return result

    def _draw(self, batch: Sequence[ImageRecord]) -> None:
        import torch

        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in batch]
        negative = [self.negative_prompt] * len(batch) if self.negative_prompt else None
        with torch.inference_mode():
            images = self.pipeline(
                prompt=[job.prompt for job in batch], negative_prompt=negative,
                num_inference_steps=self.steps, guidance_scale=self.guidance,
                height=self.height, width=self.width, generator=generators, output_type="pil",
            ).images
        if len(images) != len(batch):
            raise RuntimeError(f"the pipeline returned {len(images)} images for {len(batch)} prompts")
        for job, image in zip(batch, images, strict=True):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            with atomic_path(self.image_dir / job.file) as tmp:
                tmp.write_bytes(buf.getvalue())
        # Only after every file of the batch is in place: a line never points at a missing picture.
        self.manifest.append(batch)


def imagined_images(out_dir: str | os.PathLike) -> dict[str, Path]:
    """The pictures an :class:`Imaginer` recorded under ``out_dir`` (the last record of each id) that exist."""
    image_dir = Path(out_dir) / IMAGE_DIR
    records = ImageManifest(image_dir / MANIFEST).load()
    return {i: image_dir / r.file for i, r in records.items() if (image_dir / r.file).is_file()}
