"""Checks of the lock (requirements.lock) against pyproject.toml and against an installed environment.

    python tools/check_lock.py             pyproject.toml and the lock agree (CI, make check-lock)
    python tools/check_lock.py --installed this interpreter's environment is the lock, line for line (make install)
    python tools/check_lock.py --stamp     record pyproject.toml's dependency lists in the lock (make lock)

The lock is written by pip-compile (pip-tools) from every dependency list of pyproject.toml, extras included;
its last line records a SHA-256 of those lists, so a dependency edited without ``make lock`` is caught even
when the old pins happen to satisfy it. Exit code 1 and one line per problem when a check fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
STAMP = "# pyproject-dependencies-sha256: "
USAGE = "usage: python tools/check_lock.py [--installed | --stamp]   (no option: the lock against pyproject.toml)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
# Installed with the interpreter's venv, not by the project: never in the lock.
NOT_LOCKED = {"pip"}


def declared(pyproject: str) -> dict[str, list[str]]:
    """Every dependency list of a pyproject.toml text: ``dependencies`` and each extra."""
    project = tomllib.loads(pyproject)["project"]
    return {"dependencies": project.get("dependencies", []), **project.get("optional-dependencies", {})}


def digest(lists: dict[str, list[str]]) -> str:
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def pins(lock: str) -> dict[str, str]:
    """name -> version of every ``name==version`` line of a lock text (names normalised)."""
    found = {}
    for line in lock.splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def check_pyproject(lock: str, pyproject: str) -> list[str]:
    """What makes the lock disagree with pyproject.toml: a requirement it leaves out or pins outside the
    requirement's range, or dependency lists changed since the lock was made."""
    problems, locked = [], pins(lock)
    project = canonicalize_name(tomllib.loads(pyproject)["project"]["name"])
    lists = declared(pyproject)
    for group, requirements in lists.items():
        for line in requirements:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            if name == project:
                continue  # an extra naming other extras of this project
            if name not in locked:
                problems.append(f"{req.name} ({group}) is not in {LOCK.name}: run make lock")
            elif not req.specifier.contains(locked[name], prereleases=True):
                problems.append(f"{LOCK.name} pins {req.name}=={locked[name]}, outside {req.specifier} ({group}): "
                                "run make lock")
    stamps = [line[len(STAMP):].strip() for line in lock.splitlines() if line.startswith(STAMP)]
    if not stamps:
        problems.append(f"{LOCK.name} has no '{STAMP.strip()}' line: run make lock")
    elif stamps[-1] != digest(lists):
        problems.append(f"{LOCK.name} was made from other dependency lists than pyproject.toml's: run make lock")
    return problems


def check_installed(lock: str, installed: dict[str, str], project: str) -> list[str]:
    """What makes an environment's distributions (name -> version) differ from the lock's pins."""
    locked, problems = pins(lock), []
    installed = {canonicalize_name(k): v for k, v in installed.items()}
    for name, version in sorted(installed.items()):
        if name in NOT_LOCKED or name == canonicalize_name(project):
            continue
        if name not in locked:
            problems.append(f"{name}=={version} is installed but not in {LOCK.name}")
        elif locked[name] != version:
            problems.append(f"{name}=={version} is installed, {LOCK.name} pins {locked[name]}")
    problems += [f"{name}=={v} is in {LOCK.name} but not installed" for name, v in sorted(locked.items())
                 if name not in installed]
    return problems


def main(argv: list[str]) -> int:
    if not LOCK.is_file():
        print(f"error: {LOCK} is missing: run make lock", file=sys.stderr)
        return 1
    lock, pyproject = LOCK.read_text(), PYPROJECT.read_text()
    if argv == ["--stamp"]:
        kept = [line for line in lock.splitlines() if not line.startswith(STAMP)]
        LOCK.write_text("\n".join([*kept, STAMP + digest(declared(pyproject))]) + "\n")
        return 0
    if argv in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    if argv == ["--installed"]:
        installed = {d.metadata["Name"]: d.version for d in metadata.distributions()}
        problems = check_installed(lock, installed, tomllib.loads(pyproject)["project"]["name"])
    elif not argv:
        problems = check_pyproject(lock, pyproject)
    else:
        print(USAGE, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
