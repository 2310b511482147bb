"""The web demo: python tools/app.py [checkpoint=DIR] [host=127.0.0.1] [port=7860]; see --help."""

import sys

from emotion_llama.commands.app import main

if __name__ == "__main__":
    sys.exit(main())
