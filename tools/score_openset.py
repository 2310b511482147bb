"""MER-UniBench's open-vocabulary scores: python tools/score_openset.py gold=CSV pred=CSV|NPZ
paths.emotion_wheel=DIR; see --help."""

import sys

from emotion_llama.commands.score_openset import main

if __name__ == "__main__":
    sys.exit(main())
