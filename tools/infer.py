"""The emotion of videos: python tools/infer.py VIDEO|DIR [...] [task=reason] [json=true]; see --help."""

import sys

from emotion_llama.commands.infer import main

if __name__ == "__main__":
    sys.exit(main())
