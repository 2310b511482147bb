"""emotion-llama-app: the web demo (a Gradio page) on a trained checkpoint.

    emotion-llama-app checkpoint=DIR paths.llm=/models/llama host=127.0.0.1 port=7860

The checkpoint, its encoders (and the ASR model, if set) are loaded once, before the page is served. Runs
until Ctrl-C (exit code 130); exit code 2 on a usage or setup error.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from emotion_llama.cli import Call, UsageError, run
from emotion_llama.commands.infer import find_checkpoint
from emotion_llama.errors import UserError
from emotion_llama.labels import LABEL_SETS, resolve_labels


def check_args(cfg: DictConfig) -> None:
    if not isinstance(cfg.port, int) or not 0 < cfg.port < 65536:
        raise UsageError(f"port={cfg.port}: use a port number between 1 and 65535")
    if not isinstance(cfg.label_sets, DictConfig) or not cfg.label_sets:
        raise UsageError("label_sets: give a mapping of shown name -> label set, e.g. 'label_sets={MERR: merr}'")
    for shown, key in cfg.label_sets.items():
        if not isinstance(key, str):
            raise UsageError(f"label_sets.{shown}={key}: name one of {', '.join(LABEL_SETS)}")
        resolve_labels(key, f"label_sets.{shown}")
    if not isinstance(cfg.max_examples, int) or cfg.max_examples < 0:
        raise UsageError(f"max_examples={cfg.max_examples}: use a number >= 0")


def check_port(host: str, port: int) -> None:
    """Fail at once, before the model loads, when the address cannot be served on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        reason = "in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
        raise UserError(f"cannot serve on {host}:{port} ({reason}): pass another port=N or host=ADDRESS") from None


def _main(cfg: DictConfig, call: Call) -> int:
    check_args(cfg)
    checkpoint = find_checkpoint(cfg)
    check_port(cfg.host, cfg.port)
    # Gradio would otherwise report usage to its servers; this machine may have no network at all.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:  # the optional `app` extra (Gradio), with the model stack: loaded once the settings are checked
        from emotion_llama.app import DemoApp, Predictor, find_examples
    except ImportError as err:
        if "gradio" not in str(err):
            raise
        raise UserError("the web demo needs Gradio: pip install -e '.[app]' (make app installs it)") from None

    examples = find_examples(cfg.examples_dir, cfg.max_examples)
    # The paths.* named on the command line replace the checkpoint's saved weight paths; the others stay.
    predictor = Predictor(checkpoint, paths=call.named_paths(cfg), device=cfg.device, batch_size=1,
                          max_new_tokens=cfg.max_new_tokens, num_workers=0, asr_model=cfg.asr_model)
    app = DemoApp(predictor, OmegaConf.to_container(cfg.label_sets), examples, checkpoint=checkpoint)
    demo = app.launch(cfg.host, cfg.port, max_file_size=cfg.max_file_size)
    print(f"serving the web demo at http://{cfg.host}:{cfg.port}/ (Ctrl-C stops it)", file=sys.stderr, flush=True)
    try:
        while True:  # the server runs in its own threads; Ctrl-C ends this one
            time.sleep(3600)
    finally:
        demo.close()


def main(argv: Sequence[str] | None = None) -> int:
    return run("app", _main, argv, literal=("checkpoint", "asr_model", "examples_dir", "host"))
