"""The lock (requirements.lock) against pyproject.toml and against an installed environment (tools/check_lock.py)."""

from pathlib import Path

import check_lock

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """
[project]
name = "demo-project"
dependencies = ["torch==2.11.0", "transformers>=5.24,<6"]
[project.optional-dependencies]
app = ["gradio==6.31.*"]
all = ["demo-project[app]"]
"""


def lock_for(pyproject: str, body: str) -> str:
    return body + check_lock.STAMP + check_lock.digest(check_lock.declared(pyproject)) + "\n"


BODY = """torch==2.11.0 \\
    --hash=sha256:00
    # via demo-project
transformers==5.25.0 \\
    --hash=sha256:11
Gradio==6.31.0 \\
    --hash=sha256:22
typing_extensions==4.16.0 \\
    --hash=sha256:33
"""


def test_the_repositorys_lock_agrees_with_its_pyproject():
    lock, pyproject = (ROOT / "requirements.lock").read_text(), (ROOT / "pyproject.toml").read_text()
    assert check_lock.check_pyproject(lock, pyproject) == []
    pinned = check_lock.pins(lock)
    assert pinned["torch"] == "2.11.0" and pinned["torchaudio"] == "2.11.0"


def test_a_lock_made_from_this_pyproject_agrees():
    assert check_lock.check_pyproject(lock_for(PYPROJECT, BODY), PYPROJECT) == []


def test_a_requirement_outside_the_pin_or_missing_is_named():
    edited = PYPROJECT.replace("transformers>=5.24,<6", "transformers>=5.26,<6").replace(
        '"torch==2.11.0"', '"torch==2.11.0", "peft>=0.15"')
    problems = check_lock.check_pyproject(lock_for(edited, BODY), edited)
    assert problems == [
        "peft (dependencies) is not in requirements.lock: run make lock",
        "requirements.lock pins transformers==5.25.0, outside <6,>=5.26 (dependencies): run make lock",
    ]


def test_dependency_lists_edited_since_the_lock_was_made_fail_even_when_the_pins_still_fit():
    edited = PYPROJECT.replace("transformers>=5.24,<6", "transformers>=5.20,<6")
    assert check_lock.check_pyproject(lock_for(PYPROJECT, BODY), edited) == [
        "requirements.lock was made from other dependency lists than pyproject.toml's: run make lock"]
    assert check_lock.check_pyproject(BODY, PYPROJECT) == [
        "requirements.lock has no '# pyproject-dependencies-sha256:' line: run make lock"]


def test_an_environment_must_hold_the_lock_and_nothing_else():
    lock = lock_for(PYPROJECT, BODY)
    exact = {"torch": "2.11.0", "transformers": "5.25.0", "gradio": "6.31.0", "typing-extensions": "4.16.0",
             "pip": "23.2.1", "demo_project": "0.1.0"}
    assert check_lock.check_installed(lock, exact, "demo-project") == []
    drifted = {**exact, "transformers": "5.26.0", "kernels": "0.19.1"}
    del drifted["gradio"]
    assert check_lock.check_installed(lock, drifted, "demo-project") == [
        "kernels==0.19.1 is installed but not in requirements.lock",
        "transformers==5.26.0 is installed, requirements.lock pins 5.25.0",
        "gradio==6.31.0 is in requirements.lock but not installed",
    ]


def test_the_script_says_its_usage_and_refuses_other_options(capsys):
    assert check_lock.main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: ")
    assert check_lock.main(["--frobnicate"]) == 2 and capsys.readouterr().err.startswith("usage: ")
