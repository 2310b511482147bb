"""Import the official checkpoint: python tools/import_official.py ckpt=Emotion_LLaMA.pth out=DIR; see --help."""

import sys

from emotion_llama.commands.import_official import main, model_config  # noqa: F401 (model_config: tests)

if __name__ == "__main__":
    sys.exit(main())
