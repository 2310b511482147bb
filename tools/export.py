"""Export a checkpoint with its LoRA merged: python tools/export.py checkpoint=DIR out=DIR; see --help."""

import sys

from emotion_llama.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
