"""EMER-style explanations: python tools/eval_reasoning.py checkpoint=DIR [judge.model=DIR]; see --help."""

import sys

from emotion_llama.commands.reason import main

if __name__ == "__main__":
    sys.exit(main())
