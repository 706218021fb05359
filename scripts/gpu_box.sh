#!/usr/bin/env bash
# Offline GPU machine without onnxruntime-gpu or aeflow (see ../shared/gpu/README.md). Elsewhere, first:
#     bash ../shared/gpu/split-wheels.sh   # the onnxruntime-gpu wheel in parts of <= 50 MiB, into .gpu/
# On the GPU machine, from the project root: `stash` in each call that carries parts in .gpu/, then
# `check` (join, check sha256, pip --no-index --target /tmp/site, run gpu_check.py from /tmp, JSON
# to $OUT/gpu-check or /tmp/gpu-check); `all` does both.
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
  stash | check) "${1:-check}" ;;
  all) stash; check ;;
  *) echo "usage: $0 [stash|check|all]" >&2; exit 2 ;;
esac
