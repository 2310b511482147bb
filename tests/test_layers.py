"""The import directions of the package, checked on the source (every import, at the top or inside a function)
and in fresh interpreters: the core (model, encoders, datasets, the shared modules) knows no activity; the
activities (training, evaluation, inference, imagination, instructions) know no command-line layer; training
knows no evaluation, and the inference core no training."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folders and the package names they are installed as (pyproject's package-dir).
SOURCES = {"emotion_llama": ROOT / "emotion_llama", "emotion_llama.encoders": ROOT / "encoders",
           "emotion_llama.datasets": ROOT / "datasets"}
CORE = ("emotion_llama.model", "emotion_llama.encoders", "emotion_llama.datasets", "emotion_llama.errors",
        "emotion_llama.runtime", "emotion_llama.labels", "emotion_llama.answers", "emotion_llama.fileio")
ACTIVITIES = ("emotion_llama.training", "emotion_llama.evaluation", "emotion_llama.inference",
              "emotion_llama.imagination", "emotion_llama.instructions")
COMMAND_LINE = ("emotion_llama.cli", "emotion_llama.settings", "emotion_llama.commands", "emotion_llama.app")
# module prefix -> the prefixes it must never import
FORBIDDEN = {
    **dict.fromkeys(CORE, ACTIVITIES + COMMAND_LINE),
    **dict.fromkeys(ACTIVITIES, COMMAND_LINE),
    "emotion_llama.training": ("emotion_llama.evaluation",) + COMMAND_LINE,
    "emotion_llama.inference": ("emotion_llama.training", "emotion_llama.evaluation") + COMMAND_LINE,
    "emotion_llama.imagination": ("emotion_llama.training", "emotion_llama.evaluation") + COMMAND_LINE,
    "emotion_llama.runtime": ("emotion_llama.model", "emotion_llama.encoders", "emotion_llama.datasets")
    + ACTIVITIES + COMMAND_LINE,
}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """The project modules (and names) ``path`` imports anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import (the package imports by absolute names)"
            module = node.module or ""
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}
    return {m for m in out if within(m, "emotion_llama")}


def test_imports_point_one_way():
    wrong = []
    for name, path in sorted(modules().items()):
        rules = [bad for prefix, bad in FORBIDDEN.items() if within(name, prefix)]
        for target in sorted(imports(path, name)):
            for bad in (b for rule in rules for b in rule):
                if within(target, bad):
                    wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_the_rules_see_every_package():
    names = modules()
    assert "emotion_llama.encoders.extract" in names and "emotion_llama.datasets.faces" in names
    assert any(within(n, "emotion_llama.training") for n in names)


@pytest.mark.parametrize(("module", "absent"), [
    ("emotion_llama.inference.core", ["lightning", "emotion_llama.cli", "emotion_llama.settings",
                                      "emotion_llama.training"]),
    ("emotion_llama.training.train", ["emotion_llama.evaluation", "emotion_llama.cli"]),
    ("emotion_llama.settings", ["torch", "emotion_llama.cli"]),
    ("emotion_llama.runtime", ["torch"]),
    ("emotion_llama.model.config", ["torch"]),
    *[(f"emotion_llama.commands.{c}", ["torch"]) for c in ("train", "evaluate", "infer", "extract", "app")],
])
def test_a_fresh_interpreter_loads_only_what_a_module_needs(module, absent):
    code = (f"import sys, {module}; "
            f"print([a for a in {absent!r} if any(m == a or m.startswith(a + '.') for m in sys.modules)])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def function_level_imports(path: Path) -> list[str]:
    """The project imports of ``path`` made inside a function or method."""
    found = []
    for func in ast.walk(ast.parse(path.read_text())):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and within(node.module or "", "emotion_llama"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
                elif isinstance(node, ast.Import):
                    found += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                              if within(a.name, "emotion_llama")]
    return found


def test_modules_show_their_dependencies_at_the_top():
    """Every module imports the project at its top, except each command's one deferred import of its activity
    (with a comment saying why): --help and usage errors answer before torch and the model stack load."""
    sources = [*modules().values(), *(ROOT / "tools").glob("*.py")]
    inside = [hit for path in sources for hit in function_level_imports(path)]
    assert all("/commands/" in hit for hit in inside), inside
    per_module = [hit.split(":")[0] for hit in inside]
    # One per command that loads the model stack or an extra (11: export's, beside score_openset's possible one).
    assert len(per_module) == len(set(per_module)) <= 11, inside
    for hit in inside:
        path, line = hit.split(" ")[0].split(":")
        lines = (ROOT / path).read_text().splitlines()
        said = " ".join(lines[int(line) - 3:int(line)])
        assert "#" in said and ("torch" in said or "extra" in said), f"{hit}: say why the import waits"
