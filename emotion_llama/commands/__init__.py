"""The command-line tools, one module each: ``main(argv=None) -> int`` is both the console entry point
(``emotion-llama-<name>`` in pyproject.toml) and what the matching ``tools/*.py`` script calls.

Every command goes through :func:`emotion_llama.cli.run`: Hydra ``key=value`` overrides of its config in
``conf/``, ``--help`` from that config's ``hydra.help.template``, one-line errors with exit code 2.
"""
