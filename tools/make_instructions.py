"""EmoVIT instruction data for EmoSet: python tools/make_instructions.py data_root=EMOSET; see --help."""

import sys

from emotion_llama.commands.make_instructions import main

if __name__ == "__main__":
    sys.exit(main())
