"""Generators of the conversation and reasoning replies: ``template`` (offline, deterministic), ``local`` (a
Hugging Face causal LM folder) and ``openai_compatible`` (any server speaking the OpenAI chat-completions API:
OpenAI itself, vLLM, llama.cpp, Ollama, ...).

A generator takes a batch of :class:`Request` and yields ``(index, reply)`` as each reply is ready (a remote
server answers out of order), so that the caller can record every reply at once. Every reply is plain text in
the ``Question: ... Answer: ...`` form and is read by :func:`~emotion_llama.instructions.records.parse_qa`,
the template's included. ``settings()`` is what shapes the replies; a resumed run must use the same.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from emotion_llama.errors import UserError
from emotion_llama.runtime import LOCAL_PLAIN, helper_dtype, model_folder, resolve_device

log = logging.getLogger(__name__)

GENERATORS: tuple[str, ...] = ("template", "local", "openai_compatible")


@dataclass(frozen=True)
class Request:
    """One reply to write: ``kind`` (conversation or reasoning) for image ``id``."""

    id: str
    kind: str
    system: str  # the system prompt of the kind
    user: str  # caption + attribute lines (prompts.user_message)
    label: str
    caption: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)  # prompts.attribute_values


class Generator(Protocol):
    name: str

    def settings(self) -> dict: ...

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]: ...


def _pick(options: Sequence[str], *keys: str) -> str:
    """A fixed choice per image and kind (crc32: the same on every machine and run)."""
    return options[zlib.crc32("/".join(keys).encode()) % len(options)]


def _sentence(text: str) -> str:
    text = " ".join(text.split()).rstrip(" .")
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _level(value: str | None, low: str, mid: str, high: str) -> str | None:
    try:
        x = float(value) if value is not None else None
    except ValueError:
        return None
    if x is None:
        return None
    return low if x < 0.35 else mid if x < 0.65 else high


def _readable(text: str) -> str:
    return text.replace("_", " ").strip()


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _listing(items: str) -> str:
    """``dog, ball, tree`` (an attribute line's list) as ``dog, ball and tree``."""
    names = [_readable(n).lower() for n in items.split(",") if n.strip()]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class TemplateGenerator:
    """Replies built from the caption, attributes and label with fixed sentence patterns: no model, no
    network, the same text on every run. For pipelines and tests, and as a floor to compare models with."""

    name = "template"

    def settings(self) -> dict:
        return {"generator": self.name}

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]:
        for i, request in enumerate(requests):
            pairs = self.conversation(request) if request.kind == "conversation" else self.reasoning(request)
            yield i, "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)

    @staticmethod
    def _evidence(request: Request) -> dict[str, str]:
        a = request.attributes
        out = {}
        if request.caption:
            out["content"] = _sentence(f"The picture shows {request.caption}")
        elif a.get("scene") or a.get("object"):
            things = ", ".join(_readable(v) for v in (a.get("object"), a.get("scene")) if v)
            out["content"] = _sentence(f"The picture shows {things}")
        if a.get("object"):
            out["objects"] = _sentence(f"The things that stand out are: {_listing(a['object'])}")
        if a.get("scene"):
            out["scene"] = _sentence(f"The setting looks like {_with_article(_readable(a['scene']))}")
        people = []
        if a.get("facial_expression"):
            people.append(f"the facial expression reads as {_readable(a['facial_expression'])}")
        if a.get("human_action"):
            people.append(f"the main action is {_readable(a['human_action'])}")
        if people:
            out["people"] = _sentence(" and ".join(people))
        light = _level(a.get("brightness"), "rather dark", "moderately lit", "bright")
        colour = _level(a.get("colorfulness"), "muted, almost grey colours", "moderate colours",
                        "vivid colours")
        if light or colour:
            out["light"] = _sentence(f"The image is {' with '.join(v for v in (light, colour) if v)}")
        return out

    def conversation(self, request: Request) -> list[tuple[str, str]]:
        ev, key = self._evidence(request), (request.id, request.kind)
        pairs = [(_pick(("What does this image show?", "Can you describe this picture?",
                         "What is going on in this image?"), *key),
                  ev.get("content", "A scene whose details are hard to make out."))]
        if "objects" in ev:
            pairs.append(("Which objects can be seen?", ev["objects"]))
        if "scene" in ev:
            pairs.append(("Where does this take place?", ev["scene"]))
        if "people" in ev:
            pairs.append(("What about the people in it?", ev["people"]))
        if "light" in ev:
            pairs.append(("How would you describe the light and the colours?", ev["light"]))
        cues = ev.get("people") or ev.get("light", "")  # the strongest cue at hand
        pairs.append((_pick(("What mood does the image convey?", "How does this picture feel?"), *key),
                      f"It conveys {request.label}. {cues}".strip()))
        return pairs

    def reasoning(self, request: Request) -> list[tuple[str, str]]:
        ev = self._evidence(request)
        question = _pick((
            "What feeling does this image evoke, and what in it creates that feeling?",
            "How is a viewer likely to feel when looking at this image, and why?",
            "Which emotion does this picture call up, and what visual evidence supports it?",
        ), request.id, request.kind)
        steps = " ".join(ev[k] for k in ("content", "scene", "people", "light") if k in ev)
        answer = (f"It evokes {request.label}. {steps} Together these details give the image its sense of "
                  f"{request.label}.")
        return [(question, " ".join(answer.split()))]


# ---------------------------------------------------------------------------------------------- local LM


class LocalGenerator:
    """A Hugging Face causal LM loaded from a local folder (``local_files_only``). The prompt goes through the
    tokenizer's chat template when it has one (system + user message; a template without a system role gets
    both in one user message), else it is ``system``, a blank line, ``user``, a blank line. Greedy by default;
    ``do_sample`` samples with ``seed`` re-set per batch (fixed by the batch's first id)."""

    name = "local"

    def __init__(self, model_dir: str | Path, device: str = "auto", max_new_tokens: int = 512,
                 do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9, seed: int = 0,
                 batch_size: int = 4):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = model_folder(model_dir, "local.model", "causal language model")
        self.device = resolve_device(device)
        self.max_new_tokens, self.do_sample, self.seed = max_new_tokens, do_sample, seed
        self.temperature, self.top_p, self.batch_size = temperature, top_p, max(1, batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = helper_dtype(self.device)
        self.model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=dtype, **LOCAL_PLAIN)
        self.model.to(self.device).eval()

    def settings(self) -> dict:
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed} if self.do_sample else {}
        return {"generator": self.name, "model": str(self.path.resolve()), "max_new_tokens": self.max_new_tokens,
                "do_sample": self.do_sample, **sampling}

    def prompt_text(self, request: Request) -> str:
        """The text the model continues, with its special tokens (see :meth:`generate`)."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return f"{request.system}\n\n{request.user}\n\n"
        messages = [{"role": "system", "content": request.system}, {"role": "user", "content": request.user}]
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # templates that refuse a system role (they raise their own error types)
            merged = [{"role": "user", "content": f"{request.system}\n\n{request.user}"}]
            return tok.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]:
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            for j, reply in enumerate(self._generate([self.prompt_text(r) for r in chunk], chunk[0].id)):
                yield start + j, reply

    def _generate(self, texts: list[str], first_id: str) -> list[str]:
        import torch

        tok = self.tokenizer
        # A chat template writes its own BOS; plain text gets the tokenizer's.
        batch = tok(texts, return_tensors="pt", padding=True,
                    add_special_tokens=not getattr(tok, "chat_template", None)).to(self.device)
        options = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, pad_token_id=tok.pad_token_id)
        if self.do_sample:
            torch.manual_seed(self.seed + zlib.crc32(first_id.encode()))
            options.update(temperature=self.temperature, top_p=self.top_p)
        with torch.no_grad():
            out = self.model.generate(**batch, **options)
        return tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------- HTTP API


class _Retry(Exception):
    """A failure worth another try (5xx, 408/429, a connection error or a timeout)."""


class OpenAICompatibleGenerator:
    """POST ``{base_url}/chat/completions`` with the OpenAI chat schema (system + user message) and read
    ``choices[0].message.content``. 5xx, 408, 429, connection errors and timeouts are retried ``retries``
    times, waiting ``backoff`` seconds doubled each time; any other 4xx stops the run with one line.
    ``concurrency`` requests are in flight at once."""

    name = "openai_compatible"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 4, backoff: float = 2.0, temperature: float = 0.7, max_tokens: int = 1024,
                 seed: int | None = None, concurrency: int = 4):
        if not base_url:
            raise UserError("openai.base_url is not set: give the server's API root, e.g. "
                            "openai.base_url=http://127.0.0.1:8000/v1")
        if not model:
            raise UserError("openai.model is not set: name the model the server should run (openai.model=NAME)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.backoff = max(0, retries), backoff
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.concurrency = max(1, concurrency)

    def settings(self) -> dict:
        return {"generator": self.name, "url": self.url, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed}

    def body(self, request: Request) -> dict:
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": request.system},
                             {"role": "user", "content": request.user}]}
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]:
        if self.concurrency == 1 or len(requests) == 1:
            for i, request in enumerate(requests):
                yield i, self.complete(request)
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)))
        try:
            futures = {pool.submit(self.complete, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def complete(self, request: Request) -> str:
        """The reply to one request, with retries."""
        data = json.dumps(self.body(request)).encode()
        for attempt in range(self.retries + 1):
            try:
                return self._post(data)
            except _Retry as err:
                if attempt == self.retries:
                    raise UserError(f"POST {self.url} failed {attempt + 1} times, last: {err}; check that the "
                                    "server is up and openai.base_url, then rerun (finished records are kept)") from None
                wait = self.backoff * 2**attempt
                log.warning("POST %s: %s; retrying in %.1fs (%d/%d)", self.url, err, wait, attempt + 1, self.retries)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _post(self, data: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_detail(err)
            if err.code >= 500 or err.code in (408, 429):
                raise _Retry(f"HTTP {err.code} {detail}") from None
            raise UserError(f"POST {self.url} answered HTTP {err.code}: {detail}; check openai.model, openai.api_key "
                            "(or its environment variable) and openai.base_url") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
            raise _Retry(str(getattr(err, "reason", err) or type(err).__name__)) from None
        return _content(payload, self.url)


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        body = err.read().decode("utf-8", "replace")
    except Exception:
        body = ""
    try:
        message = json.loads(body)["error"]
        message = message.get("message", message) if isinstance(message, dict) else message
    except (ValueError, KeyError, TypeError):
        message = body
    text = " ".join(str(message).split())[:200]
    return text or str(err.reason)


def _content(payload: bytes, url: str) -> str:
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UserError(f"POST {url} answered without choices[0].message.content: is openai.base_url the root of "
                        "an OpenAI-compatible chat API (usually ending in /v1)?") from None
    return content or ""  # a null content (a refusal) reads as an empty, unparseable reply
