"""Label .npz files are read as plain data: a pickle that would call a function is refused, and never runs."""

import os

import numpy as np
import pytest

from emotion_llama.datasets.common import Sample
from emotion_llama.datasets.mer import read_mer2023_npz, write_mer2023_npz
from emotion_llama.datasets.plain_npz import NotPlainData, load_npz
from emotion_llama.errors import UserError


class Payload:
    """What a crafted label file holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_plain_arrays_and_pickled_dicts_load(tmp_path):
    path = tmp_path / "label-6way.npz"
    write_mer2023_npz(path, {"test3": [Sample("semi_1", "surprise", 1.5)]})
    arrays = load_npz(path)
    assert arrays["test3_corpus"].item() == {"semi_1": {"emo": "surprise", "val": 1.5}}
    np.savez(tmp_path / "plain.npz", a=np.arange(3), b=np.array([[1.0, 2.0]]), c=np.array({"x": [1, "y", 2.5]}))
    plain = load_npz(tmp_path / "plain.npz")
    assert plain["a"].tolist() == [0, 1, 2] and plain["b"].shape == (1, 2)
    assert plain["c"].item() == {"x": [1, "y", 2.5]}


@pytest.mark.parametrize("where", ["whole", "inside_an_entry"])
def test_a_pickle_that_calls_anything_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "ran"
    path = tmp_path / "label-6way.npz"
    payload = Payload(marker)
    corpus = payload if where == "whole" else {"semi_1": {"emo": "happy", "val": payload}}
    np.savez(path, test3_corpus=np.array(corpus, dtype=object), train_corpus=np.array({}, dtype=object))
    with pytest.raises(NotPlainData, match="system"):
        load_npz(path)
    with pytest.raises(UserError, match=r"label-6way.npz: refused: a pickle in it names \S*system"):
        read_mer2023_npz(path)
    assert not marker.exists()
