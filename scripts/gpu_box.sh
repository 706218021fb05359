#!/usr/bin/env bash
# The command sequence for an offline GPU machine that has Python 3.12, numpy, click, Pillow, pytest
# and a CPU onnxruntime but neither onnxruntime-gpu nor aeflow (see ../shared/gpu/README.md).
#
# On a machine with pip access, from the project root, first cut the onnxruntime-gpu wheel into parts
# of at most 50 MiB and build aeflow's wheel, all in .gpu/ (git ignores it):
#     bash ../shared/gpu/split-wheels.sh
# Then, on the GPU machine, from the project root (its copy of the working tree):
#     bash scripts/gpu_box.sh stash     # in every call that carries some parts in .gpu/ (keeps them in /tmp/ortgpu)
#     bash scripts/gpu_box.sh check     # once every part is there: join, check sha256, install, run gpu-check
# or both at once where one call can carry every part. `check` installs into /tmp/site only
# (pip --no-index --target: nothing from the network, the system's packages untouched), runs
# scripts/gpu_check.py from /tmp (so the source tree's aeflow/ shadows nothing) and writes its JSON
# to $OUT/gpu-check where $OUT is set (the device tool's folder that comes back), else /tmp/gpu-check.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
parts=${GPU_PARTS:-/tmp/ortgpu}
site=${GPU_SITE:-/tmp/site}
py=${PYTHON:-python3}

stash() {
  mkdir -p "$parts"
  shopt -s nullglob
  for f in "$repo"/.gpu/part-* "$repo"/.gpu/aeflow-*.whl "$repo"/.gpu/wheel.name "$repo"/.gpu/wheel.sha256; do
    cp "$f" "$parts/"
  done
  echo "stashed: $(ls "$parts" | tr '\n' ' ')"
}

install() {
  [ -f "$parts/wheel.name" ] || { echo "gpu_box: no $parts/wheel.name: run 'stash' with .gpu/ carried first" >&2; exit 1; }
  whl=/tmp/$(cat "$parts/wheel.name")
  cat "$parts"/part-* > "$whl"
  echo "$(cat "$parts/wheel.sha256")  $whl" | sha256sum -c - >/dev/null \
    || { echo "gpu_box: $whl does not match its sha256: a part is missing or damaged ($(ls "$parts"/part-* | wc -l) parts)" >&2; exit 1; }
  shopt -s nullglob
  own=("$parts"/aeflow-*.whl)
  if [ ${#own[@]} -eq 0 ]; then  # no prebuilt wheel came: build aeflow from this copy of the tree
    "$py" -m pip install -q --upgrade --no-index --no-deps --no-build-isolation --target "$site" "$whl" "$repo"
  else
    "$py" -m pip install -q --upgrade --no-index --no-deps --target "$site" "$whl" "${own[0]}"
  fi
}

check() {
  [ -d "$site/onnxruntime" ] && [ -d "$site/aeflow" ] || install
  export PYTHONPATH=$site  # shadows the CPU onnxruntime the machine already has
  libs=$("$py" -c "import glob, site; print(':'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/**/lib', recursive=True))))")
  export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}  # PyTorch's CUDA 13 libraries, where onnxruntime looks
  out=${OUT:-/tmp}/gpu-check
  cd /tmp
  "$py" -c "import onnxruntime as o, aeflow; print('onnxruntime', o.__version__, o.__file__, o.get_available_providers()); print('aeflow', aeflow.__file__)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$py" "$repo/scripts/gpu_check.py" --out "$out"
}

case "${1:-check}" in
  stash) stash ;;
  check) check ;;
  all) stash; check ;;
  *) echo "usage: $0 [stash|check|all]" >&2; exit 2 ;;
esac
