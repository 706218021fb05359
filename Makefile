# aeflow: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data
AE_EPOCHS ?= 200

.PHONY: demo test artifacts bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# stamps keep both targets idempotent: a second run installs nothing
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[train,test]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	@$(BIN)/aeflow score
	@$(BIN)/aeflow sample -n 10000 --seed 0 --output samples.npy --force

test: $(VENV)/.dev
	$(BIN)/python -m pytest

# regenerate every bundled artifact from scratch (offline: DATA_DIR holds IDX files): built in
# build/artifacts, then copied over artifacts/ (aeflow itself never writes the bundled folder)
artifacts: $(VENV)/.dev
	rm -rf build/artifacts
	$(BIN)/aeflow train ae --data-dir $(DATA_DIR) --epochs $(AE_EPOCHS) -o build/artifacts --quiet
	$(BIN)/aeflow train flow -o build/artifacts --quiet
	$(BIN)/aeflow export --data-dir $(DATA_DIR) -o build/artifacts --quantize int8
	$(BIN)/python -m aeflow.export.demo_set --data-dir $(DATA_DIR) --out build/artifacts/demo.npz
	cp build/artifacts/* artifacts/

bench: $(VENV)/.dev
	$(BIN)/aeflow bench

# prove the CUDA path on this machine and measure it (an NVIDIA GPU; aeflow and onnxruntime-gpu
# importable; installs nothing, needs no network): info, verify, the CUDA tests and the CUDA bench
# rows, one table, JSON under GPU_CHECK_OUT (default: a new temp folder). Without a GPU: one line, exit 0.
# On an offline GPU machine without onnxruntime-gpu: scripts/gpu_box.sh.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	@$(GPU_PYTHON) scripts/gpu_check.py $(if $(GPU_CHECK_OUT),--out $(GPU_CHECK_OUT))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache samples.npy
