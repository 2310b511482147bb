"""Train one stage: python tools/train.py experiment=tiny_coarse (then experiment=tiny_fine); see --help."""

import sys

from emotion_llama.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
