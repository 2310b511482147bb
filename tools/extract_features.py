"""Features of a folder of videos: python tools/extract_features.py input_dir=VIDEOS output_dir=FEATURES; see --help."""

import sys

from emotion_llama.commands.extract import main

if __name__ == "__main__":
    sys.exit(main())
