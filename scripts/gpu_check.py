#!/usr/bin/env python3
"""``make gpu-check``: prove aeflow's CUDA path on this machine and measure it, in one command.

``aeflow info``, ``verify``, pytest on the CUDA tests and ``bench``, all with ``--device cuda``, each in a child
process started from ``--out`` (so a checkout never shadows the installed aeflow): one table, env.json, a JSON per
step (+ tests.xml) and summary.json; exit 0 when every step passed. Without an NVIDIA GPU: one line, exit 0."""

import argparse
import ctypes
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_FILES = ("test_cuda.py", "test_bundled_artifacts.py", "test_contract.py", "test_errors_table.py")
STEP_LIMITS = {"info": 60, "verify": 120, "tests": 150, "bench": 150}


def gpu_here() -> bool:
    """An NVIDIA GPU is visible: its device node, the driver's /proc entry, or libcuda loads."""
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir():
        return True
    for name in ("libcuda.so.1", "nvcuda.dll"):
        try:
            return bool(ctypes.CDLL(name))
        except OSError:
            pass
    return False


def run_step(args: list[str], out: Path, limit: float) -> tuple[int, str, str]:
    """``python ARGS`` from ``out`` with a time limit: (exit code, stdout, stderr)."""
    try:
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=out, timeout=limit)
        return proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        text = [d.decode(errors="replace") if isinstance(d, bytes) else d or "" for d in (e.stdout, e.stderr)]
        return 124, text[0], text[1] + f"\ntimed out after {limit:.0f} s"


def run_all(out: Path, deadline: float) -> tuple[list[tuple[str, str, str]], dict]:
    """Every step in turn within ``deadline`` (time.monotonic()): the table's rows (a step's, then one per golden
    comparison of ``verify`` and per row of ``bench``) and the summary."""
    from aeflow.analysis.cuda_bench import row_cells

    table, summary = [], {"out": str(out), "steps": {}}
    tests = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda or library_errors_name_arguments",
             "--junitxml", str(out / "tests.xml"), *(str(REPO / "tests" / f) for f in TEST_FILES)]
    for name in STEP_LIMITS:
        t0 = time.perf_counter()
        args = tests if name == "tests" else ["-m", "aeflow", name, "--device", "cuda", "--json"]
        code, stdout, stderr = run_step(args, out, max(1.0, min(STEP_LIMITS[name], deadline - time.monotonic())))
        seconds = time.perf_counter() - t0
        try:
            doc = json.loads(stdout)
        except ValueError:  # pytest's: its summary line and the failed tests (pytest -q lists them)
            doc = {"summary": (stdout.strip().splitlines() or [""])[-1], "stdout": stdout[-20000:],
                   "failures": [line.split()[1] for line in stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]}
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2))
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if name == "tests":
            detail = doc["summary"] + (f": {', '.join(doc['failures'][:3])}" if doc["failures"] else "")
        if name == "bench" and not all(r.get("check", {}).get("passed", "error" not in r) for r in doc.get("rows", [])):
            code = code or 1  # a row that disagrees with the CPU fails the check
        summary["steps"][name] = {"exit": code, "seconds": round(seconds, 1), "stderr_tail": stderr[-4000:]}
        table.append((name, "ok" if code == 0 else f"FAIL (exit {code})", f"{seconds:.1f} s  {detail}".rstrip()))
        if name == "bench":
            table += [(f"bench: {row}", check, detail) for row, check, detail in map(row_cells, doc.get("rows", []))]
        elif name == "verify":
            table += [(f"verify: {r['name']}", "ok" if r["passed"] else "FAIL", f"max abs diff {r['max_abs']:.2e} "
                       f"(tolerance {r['tolerance']}) on {doc.get('provider', '?')}")
                      for r in doc.get("golden", []) + (doc.get("checkpoints") or [])]
    return table, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON files (default: a new temp folder)")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for the whole run (default 290)")
    opts = parser.parse_args(argv)
    if not gpu_here():
        print("gpu-check: no NVIDIA GPU on this machine (no /dev/nvidia0, no libcuda.so.1); nothing run")
        return 0
    import aeflow
    import onnxruntime as ort
    from aeflow.progress import text_table
    from aeflow.analysis.cuda_bench import device_name
    from aeflow.runtime.providers import cuda_missing

    if missing := cuda_missing():
        print(f"gpu-check: error: an NVIDIA GPU is here but the CUDA provider cannot run, missing {'; '.join(missing)} "
              f"(see scripts/gpu_box.sh)", file=sys.stderr)
        return 1
    out = (opts.out or Path(tempfile.mkdtemp(prefix=time.strftime("aeflow-gpu-check-%Y%m%d-%H%M%S-")))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
           "gpu": device_name(), "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
           "providers": ort.get_available_providers(), "aeflow_file": aeflow.__file__}
    (out / "env.json").write_text(json.dumps(env, indent=2))
    table, summary = run_all(out, time.monotonic() + opts.budget)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join([f"aeflow gpu-check on {env['gpu']}, onnxruntime {env['onnxruntime']}; JSON in {out}"]
                    + text_table([list(r) for r in table])))
    return 0 if all(s["exit"] == 0 for s in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
