"""Zero-shot evaluation: python tools/eval.py data=dfew checkpoint=DIR protocol=score; see --help."""

import sys

from emotion_llama.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
