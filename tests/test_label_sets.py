"""Every label-set setting (infer's labels=, make_instructions' labels=, the app's label_sets) is read by one
function: a set's name or a list of at least two distinct labels, else one line naming the key."""

import pytest

from emotion_llama.errors import UserError
from emotion_llama.labels import DFEW_LABELS, resolve_labels
from emotion_llama.settings import SettingError, label_set


def test_names_and_lists():
    assert resolve_labels(None) is None
    assert resolve_labels("dfew") == DFEW_LABELS
    assert resolve_labels([" Happy", "sad "]) == ("happy", "sad")


@pytest.mark.parametrize(("value", "message"), [
    ("plutchik", "labels=plutchik: no such label set; use one of merr,"),
    (["happy"], "labels=[happy]: give at least two different labels"),
    (["happy", "Happy"], "labels=[happy,happy]: happy repeated: name each label once"),
    (["happy", ""], "labels=[happy,]: use a label set's name or a list of label names"),
    (3, "labels=3: use a label set's name or a list of label names"),
])
def test_anything_else_is_one_line_naming_the_key(value, message):
    with pytest.raises(UserError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        resolve_labels(value)


def test_the_settings_check_uses_the_same_rule():
    check = label_set()
    assert check("labels", None) is None and check("labels", "merr") == "merr"
    with pytest.raises(SettingError, match=r"^label_sets.X=nope: no such label set"):
        check("label_sets.X", "nope")
    with pytest.raises(SettingError, match=r"^labels=null: use a label set's name"):
        label_set(nullable=False)("labels", None)
