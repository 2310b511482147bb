"""One JSON object describing a model preset: python tools/inspect_model.py model=emotion_llama_7b; see --help."""

import sys

from emotion_llama.commands.inspect import main

if __name__ == "__main__":
    sys.exit(main())
