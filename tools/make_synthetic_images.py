"""Write the synthetic image emotion set (EmoSet layout): python tools/make_synthetic_images.py out_dir=DIR
images_per_label=N seed=S; see --help."""

import sys

from emotion_llama.commands.make_synthetic_images import main

if __name__ == "__main__":
    sys.exit(main())
