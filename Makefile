# The two commands of a fresh machine: `make demo` (the whole system on synthetic data, CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow test-all demo demo-image demo-text app lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# pyproject's addopts deselect the `slow` tier (-m 'not slow'); a later -m on the command line replaces it.
# `gpu` tests skip themselves without CUDA (tests/conftest.py).
test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

test-all: install
	$(BIN)/pytest -q -m "slow or not slow"

# Overrides go through ARGS, e.g. make demo ARGS='clips_per_label=8 train_overrides=["trainer.max_epochs=2"]'
demo: install
	$(BIN)/python tools/demo.py $(ARGS)

# Image emotion (EmoVIT) on the synthetic EmoSet-layout set, CPU: both backbones trained (categorical
# instructions), evaluated on the test images, and asked about one image; outputs under outputs/.
demo-image: install
	$(BIN)/python tools/train.py experiment=tiny_image_coarse
	$(BIN)/python tools/eval.py data=synthetic_images checkpoint=outputs/runs/tiny_image_coarse/model \
	    run_dir=outputs/eval/image_emotion_llama
	$(BIN)/python tools/train.py experiment=tiny_instructblip_coarse
	$(BIN)/python tools/eval.py data=synthetic_images checkpoint=outputs/runs/tiny_instructblip_coarse/model \
	    run_dir=outputs/eval/image_instructblip
	$(BIN)/python tools/infer.py outputs/synthetic_images/image/awe/awe_00000.jpg --json \
	    checkpoint=outputs/runs/tiny_instructblip_coarse/model

# Text-only emotion through imagination (WALL-E) on the synthetic MELD-layout set, CPU; e.g. ARGS='per_label=3'
demo-text: install
	$(BIN)/python tools/demo_text.py $(ARGS)

# The web demo on http://127.0.0.1:7860 (the demo's tiny model once `make demo` has run), with the `app` extra
# (Gradio); overrides through ARGS, e.g. make app ARGS='checkpoint=DIR paths.llm=/models/llama port=8080'.
$(BIN)/.app-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[app]'
	touch $@

app: $(BIN)/.app-installed
	$(BIN)/python tools/app.py $(ARGS)

lint: install
	$(BIN)/ruff check emotion_llama encoders datasets tools tests

clean:
	rm -rf outputs .pytest_cache
