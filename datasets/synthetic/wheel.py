"""A small synthetic emotion-wheel folder in the layout of MER-UniBench's (the real files may not be shipped).

:func:`write_wheel_folder` writes ``format.csv`` (``name``, ``format``), ``synonym.xlsx`` (runs of
``word_runK``/``synonym_runK`` column pairs) and ``wheel1.xlsx``..``wheel5.xlsx`` (``level1``, ``level2``,
``level3``, each level written only where it changes, so that a reader must fill blank cells from above), all
built from the project's own words: the nine MERR labels and a few related ones. The five wheels group those
words a little differently (``tense`` is fear in one wheel and anger in another, ``doubt`` is missing from one,
``contempt`` is disgust or anger), so a score averaged over the wheels differs from any single wheel's.

Read it with :meth:`emotion_llama.evaluation.openset.EmotionWheels.load`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from emotion_llama.datasets.unibench import WHEEL_FILES, WHEEL_FORMAT_FILE, WHEEL_LEVELS, WHEEL_SYNONYM_FILE
from emotion_llama.fileio import atomic_path, atomic_write_text

# Surface form -> base words. "upset" has two bases (angry, sad): its candidates are tried alphabetically.
FORMS: dict[str, tuple[str, ...]] = {
    "happy": ("happy",), "happily": ("happy",), "happiness": ("happy",),
    "joyful": ("joyful",), "joy": ("joyful",), "cheerful": ("cheerful",), "cheerfully": ("cheerful",),
    "sad": ("sad",), "sadness": ("sad",), "sorrowful": ("sad",), "upset": ("sad", "angry"),
    "angry": ("angry",), "anger": ("angry",), "angrily": ("angry",), "furious": ("furious",), "fury": ("furious",),
    "worried": ("worried",), "worry": ("worried",), "worrying": ("worried",),
    "anxious": ("anxious",), "anxiety": ("anxious",), "tense": ("tense",), "tension": ("tense",),
    "nervous": ("nervous",), "nervousness": ("nervous",),
    "surprise": ("surprise",), "surprised": ("surprise",), "amazed": ("amazed",), "astonished": ("amazed",),
    "fear": ("fear",), "afraid": ("fear",), "scared": ("scared",), "frightened": ("scared",),
    "terrified": ("terrified",),
    "contempt": ("contempt",), "contemptuous": ("contempt",), "disdain": ("disdain",), "scornful": ("disdain",),
    "doubt": ("doubt",), "doubtful": ("doubt",), "skeptical": ("skeptical",), "suspicious": ("suspicious",),
    "neutral": ("neutral",), "calm": ("calm",),
}

# Base word -> synonym parents (words of the wheels). "neutral" has a parent but is in no wheel: it maps to nothing.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "happy": ("happy",), "joyful": ("joyful",), "cheerful": ("cheerful", "joyful"),
    "sad": ("sad",), "angry": ("angry",), "furious": ("furious", "angry"),
    "worried": ("worried",), "anxious": ("anxious", "worried"), "tense": ("tense",), "nervous": ("nervous", "tense"),
    "surprise": ("surprise",), "amazed": ("amazed",),
    "fear": ("fear",), "scared": ("scared",), "terrified": ("terrified", "scared"),
    "contempt": ("contempt",), "disdain": ("disdain",),
    "doubt": ("doubt",), "skeptical": ("skeptical",), "suspicious": ("suspicious", "doubt"),
    "neutral": ("neutral",), "calm": ("calm",),
}

# Each wheel: level1 -> level2 -> level3 words.
Wheel = Mapping[str, Mapping[str, Sequence[str]]]
WHEELS: tuple[Wheel, ...] = (
    {
        "happy": {"joyful": ("cheerful", "happy"), "content": ("calm",)},
        "sad": {"lonely": ("sad",)},
        "mad": {"angry": ("furious",), "frustrated": ("tense",)},
        "scared": {"anxious": ("worried", "nervous"), "afraid": ("fear", "terrified")},
        "surprised": {"amazed": ("surprise",), "confused": ("doubt", "skeptical")},
        "disgusted": {"disapproving": ("contempt", "disdain", "suspicious")},
    },
    {
        "joy": {"cheerful": ("happy", "joyful"), "peaceful": ("calm",)},
        "sadness": {"grief": ("sad",)},
        "anger": {"rage": ("angry", "furious"), "tension": ("tense",)},
        "fear": {"anxiety": ("worried", "anxious", "nervous"), "terror": ("fear", "scared", "terrified")},
        "surprise": {"amazement": ("amazed",)},
        "disgust": {"scorn": ("contempt", "disdain")},
    },
    {
        "happy": {"joyful": ("happy", "cheerful")},
        "sad": {"down": ("sad",)},
        "angry": {"hostile": ("angry", "furious", "contempt", "disdain")},
        "fearful": {"anxious": ("worried", "nervous", "tense"), "scared": ("fear", "terrified")},
        "surprised": {"startled": ("surprise", "amazed"), "perplexed": ("doubt", "skeptical", "suspicious")},
    },
    {
        "happy": {"playful": ("cheerful",), "content": ("happy", "joyful", "calm")},
        "sad": {"lonely": ("sad",)},
        "angry": {"mad": ("angry", "furious")},
        "fearful": {"worried": ("anxious", "nervous", "tense"), "scared": ("fear", "terrified")},
        "surprised": {"amazed": ("surprise",)},
        "disgusted": {"disapproving": ("contempt", "disdain", "doubt", "skeptical")},
    },
    {
        "joy": {"delight": ("happy", "joyful", "cheerful")},
        "sorrow": {"grief": ("sad",)},
        "anger": {"fury": ("angry", "furious"), "irritation": ("tense",)},
        "fear": {"anxiety": ("worried", "anxious", "nervous"), "horror": ("fear", "scared", "terrified")},
        "surprise": {"wonder": ("surprise", "amazed"), "disbelief": ("doubt", "suspicious")},
        "disgust": {"contempt": ("disdain",)},
    },
)


def wheel_rows(wheel: Wheel) -> list[tuple[str, str, str]]:
    """The wheel's (level1, level2, level3) rows, every cell filled."""
    return [(l1, l2, l3) for l1, groups in wheel.items() for l2, words in groups.items() for l3 in words]


def sparse_rows(rows: Sequence[tuple[str, str, str]]) -> list[tuple[str | None, ...]]:
    """``rows`` with each cell that repeats the one above blanked (None), as the real wheel files are written."""
    out: list[tuple[str | None, ...]] = []
    above: tuple[str | None, ...] = (None, None, None)
    for row in rows:
        changed = False
        cells = []
        for cell, prev in zip(row, above, strict=True):
            changed = changed or cell != prev  # a new level1 restates its level2 even when spelled the same
            cells.append(cell if changed else None)
        out.append(tuple(cells))
        above = row
    return out


def _write_xlsx(path: Path, header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    with atomic_path(path) as tmp:
        book.save(tmp)


def write_wheel_folder(folder: str | Path, forms: Mapping[str, Sequence[str]] | None = None,
                       synonyms: Mapping[str, Sequence[str]] | None = None,
                       wheels: Sequence[Wheel] | None = None, runs: int = 8) -> Path:
    """Write ``format.csv``, ``synonym.xlsx`` and ``wheel1.xlsx``..``wheel5.xlsx`` into ``folder`` (created if
    needed) and return it. Defaults: :data:`FORMS`, :data:`SYNONYMS`, :data:`WHEELS`. The synonym pairs are
    dealt over ``runs`` column pairs ``word_runK``/``synonym_runK`` (a shorter run ends in blank cells)."""
    folder = Path(folder)
    forms = FORMS if forms is None else forms
    synonyms = SYNONYMS if synonyms is None else synonyms
    wheels = WHEELS if wheels is None else wheels
    if len(wheels) != len(WHEEL_FILES):
        raise ValueError(f"{len(wheels)} wheels: the layout has {len(WHEEL_FILES)} (wheel1..wheel5)")
    folder.mkdir(parents=True, exist_ok=True)

    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("name", "format"))
    writer.writerows((name, base) for name, bases in forms.items() for base in bases)
    atomic_write_text(folder / WHEEL_FORMAT_FILE, text.getvalue())

    pairs = [(word, parent) for word, parents in synonyms.items() for parent in parents]
    columns = [pairs[k::runs] for k in range(runs)]
    depth = max((len(c) for c in columns), default=0)
    header = [name for k in range(1, runs + 1) for name in (f"word_run{k}", f"synonym_run{k}")]
    table = [[cell for column in columns for cell in (column[i] if i < len(column) else (None, None))]
             for i in range(depth)]
    _write_xlsx(folder / WHEEL_SYNONYM_FILE, header, table)

    for name, wheel in zip(WHEEL_FILES, wheels, strict=True):
        _write_xlsx(folder / name, WHEEL_LEVELS, sparse_rows(wheel_rows(wheel)))
    return folder
