# Set-up, demo and tests. `make demo` and `make test` each create the virtual environment
# first if it is missing; `make test` also installs Fashion-MNIST and the emoji font (see fashion-mnist and
# emoji below).
#
# PyTorch: an existing torch in the venv is kept. Otherwise torch==2.13.0 is installed from a
# local wheel if pip's find-links has one, else the CPU build from PyTorch's own index; the
# CUDA build is never pulled unless you ask for it, e.g.
#   make TORCH_INDEX=https://download.pytorch.org/whl/cu128 demo

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# The real datasets: $(PIXELCNN_DATA) if set (and not empty, as the package reads it), else ../shared/data when it
# exists, else the per-user cache (downloaded on first use).
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(strip $(PIXELCNN_DATA)),)
  ifneq ($(wildcard $(SHARED_DATA)/mnist),)
    export PIXELCNN_DATA := $(SHARED_DATA)
  endif
endif

DEMO := demo

# Fashion-MNIST, which the shipped pretrained:fashion-mnist is tested on: Debian's package puts its
# IDX files in $(FASHION_MNIST_DIR), where pixelcnn looks after its data roots.
FASHION_MNIST_PACKAGE := dataset-fashion-mnist
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILE := t10k-images-idx3-ubyte.gz

# Noto Color Emoji, which the emoji dataset is drawn from: Debian's package puts the font at $(EMOJI_FONT).
EMOJI_PACKAGE := fonts-noto-color-emoji
EMOJI_FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

# $(call apt_install,PACKAGE,WHAT HAPPENS WITHOUT IT): shell that installs the Debian PACKAGE (apt-get update
# only when the first install fails; sudo when not root) or, where that cannot be done, says so and goes on.
# No comma in the second argument.
apt_install = sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	unable="make: could not install $(1) with apt-get (and sudo when not root); $(2)"; \
	if ! command -v apt-get >/dev/null || { [ -n "$$sudo" ] && ! command -v sudo >/dev/null; }; then \
		echo "$$unable"; exit 0; \
	fi; \
	echo "installing $(1): $${sudo:+sudo }apt-get install -y $(1)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y -q $(1) || \
		{ $$sudo apt-get update -q && $$sudo apt-get install -y -q $(1); } || \
		echo "$$unable"

.PHONY: install fashion-mnist emoji browser demo test test-fast slowest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml src/pixelcnn/coding/_kernels.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif $(PIP) install --no-index --no-deps "$(TORCH)" 2>/dev/null; then \
		echo "installed $(TORCH) from a local wheel"; \
	else \
		$(PIP) install "$(TORCH)" --index-url $(TORCH_INDEX); \
	fi
	$(PIP) install -e ".[test,tensorboard,serve]"
	touch $@

demo: install
	rm -rf $(DEMO)/run
	$(VENV)/bin/pixelcnn train --model gated_pixelcnn --dataset mnist --hidden 32 --layers 5 --output-hidden 64 \
		--epochs 1 --time-budget 4 --batch-size 64 --lr 2e-3 --valid-limit 1000 --samples 0 --out $(DEMO)/run
	$(VENV)/bin/pixelcnn eval $(DEMO)/run --split test
	$(VENV)/bin/pixelcnn sample $(DEMO)/run --n 16 --seed 0 --out $(DEMO)/samples.png
	@echo "To draw, complete, sample and compress in a browser: $(VENV)/bin/pixelcnn serve $(DEMO)/run pretrained:mnist"
	@echo "then open http://127.0.0.1:8000/ (Ctrl+C stops the server)"

# The suite on every core: one pytest-xdist worker per core (WORKERS=1 runs it in this process), each on one
# thread. Every run keeps each test's duration in $(DURATIONS) (JUnit XML); `make slowest` reads it.
WORKERS ?= auto
DURATIONS ?= test-results/junit.xml
PYTEST = $(PY) -m pytest -n $(WORKERS) --dist loadgroup --junitxml=$(DURATIONS)

test: install fashion-mnist emoji browser
	$(PYTEST)

# The edit loop: everything but the tests marked slow (subprocesses, servers, the browser, other kernels,
# statistical tests), which need no browser.
test-fast: install fashion-mnist emoji
	$(PYTEST) -m "not slow"

# The slowest tests and the time per test module of the last `make test` or `make test-fast`.
slowest:
	$(PY) tests/durations.py $(DURATIONS)

# Installs $(FASHION_MNIST_PACKAGE) unless Fashion-MNIST is already in $(FASHION_MNIST_DIR) or under
# $$PIXELCNN_DATA; apt-get update only when the first install fails; sudo when not root. Where that
# cannot be done it says so and goes on: the loader then downloads the files into its cache, or its
# error names the files to put where.
fashion-mnist:
	@if [ -f "$(FASHION_MNIST_DIR)/$(FASHION_MNIST_FILE)" ] || \
	    { [ -n "$$PIXELCNN_DATA" ] && [ -f "$$PIXELCNN_DATA/fashion_mnist/$(FASHION_MNIST_FILE)" ]; }; then \
		exit 0; \
	fi; \
	$(call apt_install,$(FASHION_MNIST_PACKAGE),the tests will download Fashion-MNIST or name the files to put in \
		$${PIXELCNN_DATA:-~/.cache/pixelcnn}/fashion_mnist/)

# Installs $(EMOJI_PACKAGE) unless its font is at $(EMOJI_FONT), which the emoji tests draw from, as
# fashion-mnist does. Where that cannot be done it says so and goes on: the emoji tests then fail, naming
# the command (PIXELCNN_SKIP_MISSING_DATA=1 makes them skip instead).
emoji:
	@[ -f "$(EMOJI_FONT)" ] || { \
	$(call apt_install,$(EMOJI_PACKAGE),the emoji tests will fail naming the command (PIXELCNN_SKIP_MISSING_DATA=1 skips them)); }

# The web app's browser test drives Debian's chromium (never a downloaded browser); installed here
# when missing and running as root. PIXELCNN_NO_BROWSER=1 skips the browser test instead.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ "$${PIXELCNN_NO_BROWSER:-0}" != 1 ] && [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "installing Debian's chromium for the browser test"; \
			apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
		else \
			echo "the browser test needs $(CHROMIUM): sudo apt-get install -y chromium (or set PIXELCNN_NO_BROWSER=1)"; \
		fi; \
	fi

bench: install
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache test-results
