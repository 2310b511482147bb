# The two commands of a fresh machine: `make demo` (the whole system on synthetic data, CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every package of every extra, transitive ones included, pinned with its hashes (pip-compile, `make lock`).
LOCK := requirements.lock
PIP_TOOLS := pip-tools==7.7.0

.PHONY: install test test-slow test-all test-latest demo demo-image demo-text app lint lock check-lock clean \
	bench-gpu

# The venv is the lock, line for line: pip installs exactly its pins (--require-hashes refuses anything unpinned),
# the project goes in editable without dependencies, and the result is checked against the lock. pip speaks only
# on errors (-qq): a machine's own index settings can otherwise print a line per package.
$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --require-hashes -r $(LOCK)
	$(BIN)/pip install -qq --no-deps --no-build-isolation -e .
	$(BIN)/python tools/check_lock.py --installed
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
app: install
	$(BIN)/python tools/app.py $(ARGS)

# The real-size GPU figures (BENCHMARKS.md): one H100/H200, at most 8 minutes, random weights, one JSON file
# ($OUT/gpu_check.json, else outputs/gpu_check.json). No install step: it runs .venv's Python when there is one,
# else PYTHON or python3 with the project installed. ARGS='--dry-run' runs the same steps on the CPU, tiny presets.
bench-gpu:
	tools/gpu_check.sh $(ARGS)

# Re-resolve every dependency list of pyproject.toml to the newest releases it admits (run make test-latest first).
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet '$(PIP_TOOLS)'
	.venv-lock/bin/pip-compile --quiet --upgrade --all-extras --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links --output-file=$(LOCK) pyproject.toml
	.venv-lock/bin/python tools/check_lock.py --stamp

check-lock: install
	$(BIN)/python tools/check_lock.py

# The fast tier on the newest releases pyproject.toml admits, in a throwaway venv: what the next `make lock` would bring.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --upgrade pip
	.venv-latest/bin/pip install --quiet --upgrade -e '.[dev,app,imagine]'
	.venv-latest/bin/pip freeze --exclude-editable > .venv-latest/freeze.txt
	.venv-latest/bin/pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check emotion_llama encoders datasets tools tests

clean:
	rm -rf outputs .pytest_cache .venv-lock .venv-latest
