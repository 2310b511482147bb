"""A synthetic text-only set in MELD's layout: ``{train,dev,test}_sent_emo.csv`` with MELD's columns.

Unlike the clips of the MERR-style set, whose words alone leave three labels possible, each utterance here
says its emotion in so many words ("I'm so happy for you!", "Get out of my room!"), so a text-only method
has something to find. Utterances are grouped into dialogues of three to six turns between two or three
speakers; labels are shuffled over the dialogues, sentiment follows the label (surprise is positive or
negative at random), and times increase within an episode. A seed always gives the same files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from emotion_llama.datasets.meld import MELD_COLUMNS, SPLIT_FILES
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.labels import MELD_LABELS

SPEAKERS = ("Alex", "Sam", "Robin", "Jordan", "Casey", "Morgan", "Riley", "Jamie")
SENTIMENT = {"neutral": "neutral", "joy": "positive", "sadness": "negative", "anger": "negative",
             "fear": "negative", "disgust": "negative"}  # surprise: drawn per utterance

# Per label: templates whose wording carries the emotion, and the words that fill their slots. Every
# emotional utterance names its emotion with a word the answer parser knows (emotion_llama.answers:
# "glad", "furious", "terrified", ...); neutral ones use no emotion word at all.
POOLS: dict[str, dict[str, list[str]]] = {
    "neutral": {
        "templates": ["The {thing} is on the {place}.", "I think the {event} starts at {hour}.",
                      "Okay, I'll bring the {thing} {when}.", "We can take the {transport}, it leaves at {hour}.",
                      "Did you put the {thing} back on the {place}?"],
        "thing": ["key", "coffee", "newspaper", "remote", "umbrella", "mail", "lamp"],
        "place": ["table", "counter", "shelf", "couch", "desk"],
        "event": ["meeting", "movie", "game", "class", "show"],
        "hour": ["seven", "noon", "half past two", "four", "eight"],
        "when": ["tomorrow", "later", "on Monday", "after lunch", "tonight"],
        "transport": ["bus", "train", "subway", "cab"],
    },
    "joy": {
        "templates": ["{oh} I'm so {happy}, this is the best {thing} ever!",
                      "I love it, thank you, I'm so {happy}!",
                      "{oh} we got the {thing}! I'm so {happy}!",
                      "This is {great}, I'm {happy} and I can't stop smiling!",
                      "Ha, that's {great}, I'm so {happy} for you!"],
        "oh": ["Oh,", "Yay,", "Wow,", "Oh my,", "Yes,"],
        "happy": ["happy", "glad", "delighted", "pleased", "cheerful"],
        "thing": ["day", "news", "apartment", "present", "job", "party"],
        "great": ["great", "fantastic", "wonderful", "the best"],
    },
    "sadness": {
        "templates": ["I miss {who} so much, I'm {sad} and I just want to cry.",
                      "I'm so {sad}, everything fell apart.",
                      "{who_cap} left, and I feel so alone and {sad}.",
                      "Nothing matters anymore, I'm really {sad}.",
                      "I lost the {thing}, and I feel {sad} and empty."],
        "who": ["her", "him", "my dad", "my grandmother", "you", "them"],
        "who_cap": ["She", "He", "My dad", "My best friend", "Everyone"],
        "sad": ["sad", "unhappy", "depressed", "so sad", "really unhappy"],
        "thing": ["job", "apartment", "ring", "baby pictures", "letter"],
    },
    "anger": {
        "templates": ["Get out of my {room}! I'm so {angry} right now!", "How dare you {did}?! I'm {angry}!",
                      "I am {angry}, you {did} again!", "Stop it! I get {angry} when you {do}!",
                      "Don't you ever {do} again, I'm {angry}!"],
        "room": ["room", "apartment", "office", "house", "kitchen"],
        "angry": ["angry", "furious", "mad", "so mad", "really annoyed"],
        "did": ["read my diary", "lied to me", "took my car", "ate my sandwich", "broke my stuff"],
        "do": ["yell at me", "lie to me", "touch my things", "ignore me", "interrupt me"],
    },
    "surprise": {
        "templates": ["What?! You {did}? No way, I'm {surprised}!",
                      "Oh my God, really? I'm {surprised}, I can't believe it!",
                      "Wait, what? {who} {did}?! I'm {surprised}!",
                      "Whoa, seriously? That's {unexpected}, I'm {surprised}!",
                      "You're kidding me! {who} is here?! I'm {surprised}!"],
        "did": ["got married", "quit your job", "bought a boat", "moved to Paris", "won the lottery"],
        "who": ["Ross", "Your mom", "The landlord", "Your brother", "Our old teacher"],
        "unexpected": ["unbelievable", "so unexpected", "incredible", "crazy"],
        "surprised": ["surprised", "amazed", "astonished", "so surprised"],
    },
    "fear": {
        "templates": ["I'm so {scared}, what if {bad}?", "Please don't leave me alone, I'm {scared}.",
                      "Did you hear that? I'm really {scared}!", "Oh no, I'm {scared} that {bad}.",
                      "I can't do it, I'm too {scared} of the {thing}."],
        "scared": ["scared", "afraid", "frightened", "terrified"],
        "bad": ["he finds out", "something goes wrong", "they come back", "the plane crashes", "I fail"],
        "thing": ["dark", "dentist", "spiders", "interview", "needle"],
    },
    "disgust": {
        "templates": ["Ew, that's {gross}! Get it away from me!", "Ugh, {thing}? That's {gross}.",
                      "Eww, did you just {did}? I'm {disgusted}!",
                      "That is so {gross}, I think I'm going to be sick.",
                      "Yuck, {thing} smells {gross}, I'm {disgusted}."],
        "gross": ["disgusting", "so disgusting", "really disgusting"],
        "disgusted": ["disgusted", "so disgusted"],
        "thing": ["the fridge", "this sandwich", "the bathroom", "old milk", "the carpet"],
        "did": ["lick the spoon", "eat that off the floor", "sneeze on it", "pick that up"],
    },
}


def synthetic_utterance(label: str, rng: np.random.Generator) -> str:
    """One utterance whose words say ``label``; every slot is drawn, so the draws do not depend on the template."""
    pool = POOLS[label]
    template = pool["templates"][rng.integers(len(pool["templates"]))]
    slots = {k: v[rng.integers(len(v))] for k, v in pool.items() if k != "templates"}
    return template.format(**slots)


def _clock(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _split_rows(split_index: int, per_label: int, seed: int) -> list[list[object]]:
    rng = np.random.default_rng([seed, split_index])
    labels = [label for label in MELD_LABELS for _ in range(per_label)]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    rows: list[list[object]] = []
    dialogue, position = 0, 0
    while position < len(labels):
        turns = labels[position:position + int(rng.integers(3, 7))]
        position += len(turns)
        cast = [SPEAKERS[i] for i in rng.choice(len(SPEAKERS), size=int(rng.integers(2, 4)), replace=False)]
        season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
        clock = float(rng.uniform(30, 1200))
        for utt, label in enumerate(turns):
            text = synthetic_utterance(label, rng)
            # The cast takes turns at first, so a dialogue of two or more turns has two speakers at least.
            turn_taking = utt < len(cast) or rng.random() < 0.8
            speaker = cast[utt % len(cast)] if turn_taking else cast[int(rng.integers(len(cast)))]
            sentiment = SENTIMENT.get(label) or ("positive" if rng.random() < 0.5 else "negative")
            duration = 0.8 + 0.07 * len(text.split()) + float(rng.uniform(0, 0.6))
            rows.append([len(rows) + 1, text, speaker, label, sentiment, dialogue, utt, season, episode,
                         _clock(clock), _clock(clock + duration)])
            clock += duration + float(rng.uniform(0.2, 1.5))
        dialogue += 1
    return rows


def write_synthetic_meld(out_dir: str | Path, per_label: int = 20, seed: int = 0,
                         splits: tuple[str, ...] = ("train", "dev", "test"),
                         train_per_label: int | None = None) -> dict[str, Path]:
    """Write ``{split}_sent_emo.csv`` for each split (``per_label`` utterances of each of the 7 labels;
    ``train_per_label`` in the train split when given) and return their paths. As in MELD, each split numbers
    its dialogues from 0, and a split's file depends only on its own count, ``seed`` and the split's name."""
    counts = {split: per_label for split in SPLIT_FILES} | (
        {"train": train_per_label} if train_per_label is not None else {})
    for name, count in (("per_label", per_label), ("train_per_label", counts["train"])):
        if not isinstance(count, int) or count < 1:
            raise UserError(f"{name}={count}: use a whole number of at least 1 (utterances of each label)")
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for split in splits:
        if split not in SPLIT_FILES:
            raise ValueError(f"{split!r} is not a MELD split; expected one of {', '.join(SPLIT_FILES)}")
        rows = _split_rows(list(SPLIT_FILES).index(split), counts[split], seed)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(MELD_COLUMNS)
        writer.writerows(rows)
        paths[split] = out_dir / SPLIT_FILES[split]
        atomic_write_text(paths[split], buf.getvalue())
    return paths
