"""EMER files: the explanation ground truth and the submission layout of generated reasons."""

from __future__ import annotations

from emotion_llama.datasets.common import PathLike, _write_csv, csv_rows

EMER_COLUMNS = ("names", "emotions", "subtitles", "reasons")


def read_emer_csv(path: PathLike) -> list[dict]:
    """Read the EMER ground truth: one dict with ``names, emotions, subtitles, reasons`` per clip."""
    return [
        {c: ("" if row[c].lower() == "nan" else row[c]) for c in EMER_COLUMNS}
        for _, row in csv_rows(path, "EMER ground-truth", EMER_COLUMNS)
    ]


def write_emer_predictions(path: PathLike, rows: dict[str, str]) -> None:
    """Write generated reasons in the EMER submission layout (``names,chi_reasons``)."""
    _write_csv(path, ("names", "chi_reasons"), rows.items())
