"""The progress of one kind of record: an append-only JSONL file, one line per finished image.

The first line holds the settings that shape the records (generator, model, prompts, ...); a rerun with other
settings is refused rather than mixed in. Each further line is ``{"id", "record"}`` for a kept record or
``{"id", "skipped", "reply"}`` for a reply that did not parse. Lines are flushed as they are written, so a
killed run loses at most the line being written; that torn last line is dropped when the file is read again.
An id seen twice (a skipped reply retried later) counts once, with its last line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text

log = logging.getLogger(__name__)


class ProgressLog:
    def __init__(self, path: str | Path, settings: dict, retry_skipped: bool = False):
        self.path = Path(path)
        self.settings = settings
        self.entries: dict[str, dict] = {}
        self.retry_skipped = retry_skipped
        self.kept_now = self.skipped_now = 0  # lines written by this run
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"settings": settings}, sort_keys=True) + "\n")
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        parsed = []
        for number, line in enumerate(lines, start=1):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                if number < len(lines):
                    raise UserError(f"{self.path}:{number}: not a JSON line; delete the file to redo this kind of "
                                    "record, or fix the line") from None
                log.warning("%s: dropped the unfinished last line of an interrupted run", self.path)
                lines = lines[:-1]
        if text and (len(parsed) < len(text.splitlines()) or not text.endswith("\n")):
            atomic_write_text(self.path, "".join(f"{ln}\n" for ln in lines))  # appends start on a new line
        if not parsed or "settings" not in parsed[0]:
            raise UserError(f"{self.path}: no settings line; delete the file to redo this kind of record")
        saved = parsed[0]["settings"]
        if saved != self.settings:
            changed = sorted(k for k in saved.keys() | self.settings.keys() if saved.get(k) != self.settings.get(k))
            raise UserError(f"{self.path} was made with other settings ({', '.join(changed)}: "
                            f"{', '.join(f'{k}={saved.get(k)!r}' for k in changed)}): use another out_dir, the same "
                            "settings, or overwrite=true to start again")
        for number, entry in enumerate(parsed[1:], start=2):
            if not isinstance(entry, dict) or "id" not in entry or not ("record" in entry or "skipped" in entry):
                raise UserError(f"{self.path}:{number}: not a progress line; delete the file to redo this kind "
                                "of record, or fix the line")
            self.entries[entry["id"]] = entry

    def done(self, record_id: str) -> bool:
        entry = self.entries.get(record_id)
        return entry is not None and not (self.retry_skipped and "skipped" in entry)

    def _append(self, entry: dict) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()
        self.entries[entry["id"]] = entry

    def keep(self, record_id: str, record: dict) -> None:
        self._append({"id": record_id, "record": record})
        self.kept_now += 1

    def skip(self, record_id: str, reason: str, reply: str) -> None:
        self._append({"id": record_id, "skipped": reason, "reply": reply})
        self.skipped_now += 1

    def records(self) -> Iterator[tuple[str, dict]]:
        return ((i, e["record"]) for i, e in self.entries.items() if "record" in e)

    def skipped(self) -> list[str]:
        return [i for i, e in self.entries.items() if "skipped" in e]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
