"""The one launcher of every command-line tool (``tools/*.py`` and the ``emotion-llama-*`` entry points).

Arguments are Hydra ``key=value`` overrides of one top-level config in ``conf/`` (plus, for the tools that
take them, positional arguments such as videos); ``-h``/``--help`` prints the usage text written in that
config's ``hydra.help.template``. The composed config's settings are checked at once (types, ranges, choices,
devices, output folders: :mod:`emotion_llama.settings`), before anything slow loads. Whatever the user got
wrong is one ``error: ...`` line on stderr and exit code 2 (a usage mistake, a bad or unknown override, a
missing required key, a bad setting, a :class:`UserError`); Ctrl-C is one line and exit code 130, also when a
library (Lightning) catches the interrupt and exits on its own. Output: the project's ``INFO`` records and every ``WARNING`` through one
one-line-per-event handler on stderr; results go to stdout.

This module imports no torch: ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from emotion_llama.errors import UserError
from emotion_llama.runtime import resolve_device
from emotion_llama.settings import RULES, validate

# The repository's conf/ (the package is installed editable from the repository); EMOTION_LLAMA_CONF overrides.
CONF_DIR = Path(os.environ.get("EMOTION_LLAMA_CONF") or Path(__file__).resolve().parents[1] / "conf")
PROJECT_LOGGERS = ("emotion_llama", "__main__", "py.warnings")
# Libraries that attach a console handler of their own on import: their records would be printed twice.
SELF_HANDLING_LOGGERS = ("lightning", "transformers")
LIGHTNING_SUBPACKAGES = ("lightning.pytorch", "lightning.fabric")
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(UserError):
    """A command line that cannot be run as written."""


@dataclass
class Call:
    """How a tool was invoked: its name, positional arguments and the overrides as typed."""

    prog: str
    argv: list[str]
    positional: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)

    def named(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (e.g. ``paths.``) named on the command line, without the prefix."""
        keys = (o.split("=", 1)[0].lstrip("+~") for o in self.overrides)
        return [k.removeprefix(prefix) for k in keys if k.startswith(prefix)]

    def named_paths(self, cfg: DictConfig) -> dict[str, object]:
        """``paths.*`` values the user named (resolved): the defaults must not replace the weight paths a
        checkpoint was trained with."""
        return {k: cfg.paths[k] for k in self.named("paths.") if k in cfg.paths}


MainFn = Callable[[DictConfig, Call], "int | None"]


def run(config_name: str, main_fn: MainFn, argv: Sequence[str] | None = None, positional: str | None = None,
        literal: Sequence[str] = (), prog: str | None = None) -> int:
    """Run ``main_fn(cfg, call)`` with ``conf/<config_name>.yaml`` composed from the command line.

    ``positional``: the name of the positional arguments the tool takes (e.g. ``"VIDEO"``), None for none;
    an argument is positional when it holds no ``=`` or names an existing file or folder. ``literal``: keys
    (or prefixes ending in ``.``) whose value is taken as typed, not parsed by Hydra's override grammar
    (free text and file names: commas, quotes, brackets); ``paths.`` always is. Returns ``main_fn``'s exit
    code (0 for None); a user mistake exits with code 2 and Ctrl-C with 130 (``SystemExit``, as argparse).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or _prog_name()
    watch = _InterruptWatch()
    try:
        with watch:
            if "-h" in argv or "--help" in argv:
                print(help_text(config_name))
                return 0
            call = parse_argv(argv, prog, positional)
            setup_output()
            with _hydra():
                cfg = compose(config_name, call.overrides, literal=("paths.", *literal), prog=prog)
                check_settings(config_name, cfg)  # types, ranges, choices, devices: before anything slow loads
                return int(main_fn(cfg, call) or 0)
    except UserError as err:
        _fail(err)
    except OSError as err:
        if err.filename is None:  # not about a file the user can fix: a bug, shown with its traceback
            raise
        _fail(f"{err.filename}: {err.strerror or type(err).__name__}: check that it exists and that this user may "
              "read it (and write its folder, for outputs), or choose another path")
    except _config_errors() as err:
        _fail(_config_message(err, prog))
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit:
        # Lightning answers a Ctrl-C inside fit/predict with its own exit(1): still an interrupt.
        if watch.seen:
            _interrupted()
        raise


class _InterruptWatch:
    """While a command runs, SIGINT raises KeyboardInterrupt and is remembered (a library that catches the
    KeyboardInterrupt and exits on its own is then still reported as interrupted); the handler the process
    had before is restored afterwards (Lightning leaves SIGINT ignored after an interrupt)."""

    def __init__(self):
        self.seen = False
        self._installed = False
        self._previous = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:  # None: a handler installed outside Python, which cannot be put back
            signal.signal(signal.SIGINT, signal.SIG_DFL if self._previous is None else self._previous)


def _interrupted() -> None:
    print("interrupted", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INTERRUPTED) from None


def check_settings(config_name: str, cfg: DictConfig) -> None:
    """The settings of ``conf/<config_name>.yaml`` as composed (see :mod:`emotion_llama.settings`)."""
    validate(config_name, cfg)
    if "device" not in RULES.get(config_name, {}) and isinstance(cfg.get("device"), str) and cfg.device != "auto":
        resolve_device(cfg.device)


def _fail(err: object) -> None:
    print(f"error: {one_line(_user_message(str(err)))}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE) from None


def _user_message(text: str) -> str:
    """A user error raised in a DataLoader worker comes back with the worker's traceback in its message:
    only its last line (``SomeError: what and how``) is the message."""
    if "Traceback (most recent call last)" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    name, sep, rest = last.partition(": ")
    return rest if sep and name.replace(".", "").replace("_", "").isalnum() else last


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _prog_name() -> str:
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("emotion-llama")
    if argv0.suffix != ".py":
        return argv0.name
    try:
        return f"python {argv0.resolve().relative_to(Path.cwd())}"
    except ValueError:
        return f"python {argv0}"


# ---------------------------------------------------------------------------------------------- arguments


def parse_argv(argv: Sequence[str], prog: str, positional: str | None) -> Call:
    call = Call(prog, list(argv))
    for arg in argv:
        if arg.startswith("-") and not Path(arg).exists():
            name = arg.lstrip("-").split("=", 1)[0].replace("-", "_")
            raise UsageError(f"{arg}: options are written key=value here (e.g. {name}=...); "
                             f"{prog} --help lists the keys")
        if positional and ("=" not in arg or Path(arg).exists()):
            call.positional.append(arg)
        elif "=" not in arg and not arg.startswith("~"):  # ~key deletes a key
            raise UsageError(f"{arg!r} is not key=value, the only kind of argument {prog} takes: "
                             f"{prog} --help lists the keys")
        else:
            call.overrides.append(arg)
    return call


# ---------------------------------------------------------------------------------------------- config


@contextmanager
def _hydra() -> Iterator[None]:
    """Hydra initialised on ``conf/`` for the command (nested ``hydra.compose`` calls work inside)."""
    from hydra import initialize_config_dir

    if not (CONF_DIR / "paths" / "default.yaml").is_file():
        raise UserError(f"no configs at {CONF_DIR}: install the package editable from its repository "
                        "(pip install -e .) or set EMOTION_LLAMA_CONF to its conf/ folder")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose(config_name: str, overrides: Sequence[str], literal: Sequence[str] = ("paths.",),
            prog: str = "this command") -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``; Hydra must be initialised (see :func:`run`).

    Overrides of ``literal`` keys are set after composing, their value exactly as typed (``null`` stays null;
    a ``${...}`` in it is text, never resolved); the others go through Hydra's grammar. A bad override is a
    :class:`UsageError` naming the key.
    """
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException, MissingConfigException

    as_typed = [o for o in overrides if _is_literal(o, literal)]
    parsed = [o for o in overrides if o not in as_typed]
    _check_syntax(parsed, prog)
    try:
        cfg = hydra_compose(config_name, overrides=parsed)
    except MissingConfigException as err:
        raise UsageError(_missing_config_message(err, parsed, prog)) from None
    except HydraException as err:
        raise UsageError(_composition_message(err, parsed, prog)) from None
    for override in as_typed:
        key, value = override.split("=", 1)
        if not _has_key(cfg, key):
            raise UsageError(f"unknown key {key} in {override!r}: {prog} --help lists the keys")
        OmegaConf.update(cfg, key, None if value == "null" else _as_text(value), merge=False)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UsageError(f"missing {' '.join(f'{k}=...' for k in missing)}: {prog} --help says what they are")
    return cfg


def _as_text(value: str) -> str:
    """``value`` escaped for OmegaConf so that it reads back as typed: each ``${`` (and the backslashes
    right before it) would otherwise be an interpolation."""
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) is in ``cfg``, set or not (``???``)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    return isinstance(parent, DictConfig) and leaf in parent.keys()


def _is_literal(override: str, literal: Sequence[str]) -> bool:
    key = override.split("=", 1)[0]
    return any(key.startswith(p) if p.endswith(".") else key == p for p in literal)


def _check_syntax(overrides: Sequence[str], prog: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parsed = parser.parse_override(override)
        except HydraException as err:
            key = override.split("=", 1)[0]
            reason = str(err).strip().splitlines()[-2 if "See https" in str(err) else -1]
            raise UsageError(f"bad value for {key} in {override!r} ({reason}): quote what holds = , [ ] {{ }} ( ) "
                             f"or quotes, e.g. {key}='a=b' or {key}=[\"a=b\"]") from None
        if parsed.is_sweep_override():
            key = parsed.get_key_element()
            raise UsageError(f"{override!r}: a comma makes {key} a list of runs; write a list as "
                             f"{key}=[a,b] or quote text as \"{key}='a, b'\"")


def _composition_message(err: Exception, overrides: Sequence[str], prog: str) -> str:
    text = str(err)
    key = text.split("'")[1] if text.startswith("Could not override '") else None
    given = next((o for o in overrides if key and o.lstrip("+~").split("=", 1)[0] == key), None)
    if key:
        return f"unknown key {key} in {given!r}: {prog} --help lists the keys (a leading + adds a new key)"
    return f"bad override: {one_line(text)}"


def _missing_config_message(err: Exception, overrides: Sequence[str], prog: str) -> str:
    options = list(getattr(err, "options", None) or [])
    missing = getattr(err, "missing_cfg_file", "") or ""
    group, _, choice = str(missing).rpartition("/")
    if options and group:
        return f"{group}={choice}: no such {group}; use one of {', '.join(options)}"
    return one_line(str(err).split("Config search path")[0])


def _config_errors() -> tuple[type[Exception], ...]:
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    return (MissingMandatoryValue, InterpolationResolutionError)


def _config_message(err: Exception, prog: str) -> str:
    from omegaconf.errors import MissingMandatoryValue

    key = getattr(err, "full_key", None) or "a config key"
    if isinstance(err, MissingMandatoryValue):
        return f"{key} is required: add {key}=... ({prog} --help)"
    return f"{key}: {str(err).splitlines()[0]}"


def help_text(config_name: str) -> str:
    """The tool's usage: ``hydra.help.template`` of its top-level config."""
    from hydra import compose as hydra_compose

    with _hydra():
        cfg = hydra_compose(config_name, return_hydra_config=True)
    return str(cfg.hydra.help.template).rstrip()


# ---------------------------------------------------------------------------------------------- output


class _OneLine(logging.Formatter):
    """``message`` for the project's INFO, ``warning: ...``/``error: ...`` above; a library's name is shown."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {record.exc_info[1]}"
        top = record.name.split(".", 1)[0]
        if top not in PROJECT_LOGGERS:
            text = f"{top}: {text}"
        if record.levelno >= logging.ERROR:
            text = f"error: {text}"
        elif record.levelno >= logging.WARNING:
            text = f"warning: {text}"
        return one_line(text)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners replace it)."""

    _emotion_llama = True
    stream = property(lambda self: sys.stderr, lambda self, value: None)


def _keep(record: logging.LogRecord) -> bool:
    """INFO and above of the project; WARNING and above of the libraries (whatever level they set)."""
    if record.name.split(".", 1)[0] in PROJECT_LOGGERS:
        return record.levelno >= logging.INFO
    return record.levelno >= logging.WARNING


class _LibraryLogger(logging.Logger):
    """The top logger of a library that, on import, adds a console handler and turns propagation off
    (``lightning`` adds one unconditionally, ``transformers`` both): its records go through the root's
    one handler instead of being printed a second time in another format."""

    propagate = property(lambda self: True, lambda self, value: None)

    def addHandler(self, hdlr: logging.Handler) -> None:  # noqa: N802 (logging's own name)
        if type(hdlr) is not logging.StreamHandler:
            super().addHandler(hdlr)


def setup_output() -> None:
    """One stderr handler on the root logger (replacing an earlier one of ours); library warnings that mean
    nothing to a user (deprecations, their internals) silenced; weight-loading progress bars off."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_emotion_llama", False)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_OneLine())
    handler.addFilter(_keep)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("emotion_llama").setLevel(logging.INFO)
    logging.getLogger("__main__").setLevel(logging.INFO)
    for name in SELF_HANDLING_LOGGERS:
        logging.getLogger(name).__class__ = _LibraryLogger
    # Already imported (before the root had a handler, lightning.pytorch and lightning.fabric add their own).
    for name in (*SELF_HANDLING_LOGGERS, *LIGHTNING_SUBPACKAGES):
        logger = logging.getLogger(name)
        for own in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(own)
        logger.propagate = True
    # transformers reads this when imported (Loading weights / Writing model shards bars of tiny models).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:  # already imported (a second command in one process)
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    _quiet_warnings()


def _quiet_warnings() -> None:
    """Python warnings: deprecations and the libraries' own ones are hidden (``-W`` or ``PYTHONWARNINGS``
    bring them back); the project's are one ``warning:`` line."""
    if sys.warnoptions:
        return
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"(emotion_llama|__main__)(\.|$)")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("py.warnings").warning("%s", message)

