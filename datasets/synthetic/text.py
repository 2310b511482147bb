"""The words of a clip: its subtitle (drawn from the text group's pool) and its caption and reason."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emotion_llama.datasets.synthetic.design import (
    ADJECTIVE,
    FACE_PHRASES,
    FACE_SUMMARY,
    TEXT_PHRASES,
    TEXT_SUMMARY,
    VOICE_PHRASES,
    VOICE_SUMMARY,
    group_labels,
    label_groups,
)

# ---------------------------------------------------------------------------------------------- sentences

_T0 = {
    "templates": ["{open} the {result} came back {time}, and it was {outcome}.",
                  "I just heard that the {thing} was {changed} {time}.",
                  "{open} it turned out the {thing} was {changed} after all.",
                  "So the {result} is finally out, and it is {outcome}.",
                  "Did you see the {result} {time}? It is {outcome}."],
    "open": ["Well,", "So,", "Honestly,", "Look,", "You know,", "Apparently"],
    "result": ["test result", "letter", "message", "report", "answer", "email", "phone call", "verdict"],
    "thing": ["plan", "old house", "shop on the corner", "wedding", "job offer", "deal", "contract", "concert"],
    "changed": ["cancelled", "changed", "sold", "moved", "called off", "replaced", "gone"],
    "outcome": ["not what I expected", "totally different", "not what we thought", "a different story",
                "a turn nobody saw coming"],
    "time": ["this morning", "last night", "an hour ago", "yesterday", "just now", "today"],
}
_T1 = {
    "templates": ["{open} tomorrow we go to the {event}.",
                  "Next week I have the {event}, {tail}.",
                  "We are going to {activity} {future}.",
                  "{open} the {event} starts {future}.",
                  "{future_cap} I will {activity}, {tail}."],
    "open": ["Well,", "So,", "Honestly,", "Look,", "You know,", "Okay,"],
    "event": ["interview", "trip", "exam", "party", "flight", "performance", "match", "appointment"],
    "activity": ["travel to the coast", "meet the new team", "move to the city", "start the new job",
                 "see the doctor", "give the speech"],
    "future": ["tomorrow", "next week", "in a few days", "on Monday", "tonight", "soon"],
    "future_cap": ["Tomorrow", "Next week", "In a few days", "On Monday", "Tonight", "Soon"],
    "tail": ["and everything depends on it", "and I keep thinking about it", "and it will be a big day",
             "and there is no way back now"],
}
_T2 = {
    "templates": ["{open} {person} {did} again.",
                  "{person_cap} keeps {doing} every single day.",
                  "Why does {person} always {do}?",
                  "{open} {person} said it was my fault that {person} {did}.",
                  "And once more {person} {did}, as usual."],
    "open": ["Well,", "So,", "Honestly,", "Look,", "You know,", "Again,"],
    "person": ["my neighbour", "the manager", "my brother", "that guy", "your friend", "the landlord",
               "my colleague", "the driver"],
    "person_cap": ["My neighbour", "The manager", "My brother", "That guy", "Your friend", "The landlord",
                   "My colleague", "The driver"],
    "did": ["took my parking spot", "ignored my message", "broke the rules", "left the mess",
            "moved my desk", "borrowed my car without asking"],
    "doing": ["playing loud music", "leaving the door open", "taking my things", "coming in late",
              "talking over everyone"],
    "do": ["do that", "interrupt me", "blame other people", "make the same mistake",
           "ignore what we agreed"],
}
_NEUTRAL = {
    "templates": ["The {obj} is on the {place}.", "I will take the {transport} at {hour}.",
                  "The {room} has two windows and a {color} door.", "We bought {item} at the {store}.",
                  "It is {hour} and the {obj} is {color}.", "Put the {obj} next to the {obj2}, please."],
    "obj": ["cup", "book", "chair", "bag", "key", "lamp", "folder", "pencil"],
    "obj2": ["window", "plant", "printer", "radio", "sofa"],
    "place": ["table", "shelf", "desk", "floor", "counter"],
    "transport": ["bus", "train", "tram", "subway"],
    "hour": ["nine", "ten", "noon", "half past two", "four", "seven"],
    "room": ["kitchen", "office", "hallway", "living room"],
    "color": ["blue", "white", "grey", "green", "brown"],
    "item": ["bread", "paper", "rice", "a new pen", "some apples"],
    "store": ["market", "corner shop", "supermarket", "station kiosk"],
}
TEXT_POOLS = {0: _T0, 1: _T1, 2: _T2, None: _NEUTRAL}


def make_sentence(text_group: int | None, rng: np.random.Generator) -> str:
    """A subtitle from the group's pool (``None``: the neutral pool); slots are filled independently."""
    pool = TEXT_POOLS[text_group]
    template = pool["templates"][rng.integers(len(pool["templates"]))]
    # Draw every slot (used or not) so the stream of draws does not depend on the template.
    slots = {k: v[rng.integers(len(v))] for k, v in pool.items() if k != "templates"}
    return template.format(**slots)


# ---------------------------------------------------------------------------------------------- captions


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _candidates(modality: str, group: int) -> str:
    return _join([ADJECTIVE[lab] for lab in group_labels(modality, group)]).replace(" and ", " or ")


def coarse_caption(face_cues: list[str], voice_cues: list[str], sentence: str) -> str:
    face = ("The " + FACE_PHRASES["face_still"][4:] if face_cues == ["face_still"]
            else "The person shows " + _join([FACE_PHRASES[c] for c in face_cues]))
    voice = (VOICE_PHRASES["voice_flat"] if voice_cues == ["voice_flat"]
             else "the voice has " + _join([VOICE_PHRASES[c] for c in voice_cues]))
    return f"{face}; {voice}; the person says: \"{sentence}\""


def reason_caption(label: str, weak: str | None, face_cues: list[str], voice_cues: list[str],
                   sentence: str) -> str:
    """A reasoning text citing the informative cues and ending with the label."""
    r, c, t = label_groups(label)
    face = _join([FACE_PHRASES[k] for k in face_cues])
    voice = _join([VOICE_PHRASES[k] for k in voice_cues])
    parts = [
        "The " + FACE_PHRASES["face_still"][4:] + ", so the expression gives little evidence."
        if weak == "face" else f"The face shows {face}, which points to {_candidates('face', r)}.",
        "Besides, " + VOICE_PHRASES["voice_flat"] + " and gives little evidence."
        if weak == "voice" else f"The speech has {voice}, which fits {_candidates('voice', c)}.",
        f"The subtitle \"{sentence}\" {TEXT_PHRASES[None]}."
        if weak == "text" else f"The subtitle \"{sentence}\" {TEXT_PHRASES[t]}, "
        f"which fits {_candidates('text', t)}.",
    ]
    evidence = {"face": _face_summary(r, face_cues), "voice": VOICE_SUMMARY[c], "text": TEXT_SUMMARY[t]}
    first, second = [evidence[m] for m in ("face", "voice", "text") if m != weak][:2]
    parts.append(f"{first[0].upper()}{first[1:]} together with {second} suggest {label}.")
    return " ".join(parts)


def _face_summary(face_group: int, face_cues: list[str]) -> str:
    if face_group == 1 and "smile_one_sided" in face_cues:
        return "the one-sided smile"
    return FACE_SUMMARY[face_group]
