#!/usr/bin/env python3
"""``make gpu-check``: prove aeflow's CUDA path on this machine and measure it, in one command.

Runs ``aeflow info``, ``aeflow verify`` and ``aeflow bench`` with ``--device cuda --json`` and the
CUDA tests, each in a child process started from the output folder (so a source checkout never
shadows the installed aeflow), prints one table and writes the JSON under ``--out``. Without an
NVIDIA GPU it says so in one line and exits 0. Needs stdlib, numpy, onnxruntime, aeflow, pytest.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_FILES = ("test_cuda.py", "test_bundled_artifacts.py", "test_contract.py", "test_errors_table.py")


def gpu_here() -> bool:
    """An NVIDIA GPU is visible: its device node, the driver's /proc entry, or libcuda loads."""
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir():
        return True
    try:
        return bool(ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll"))
    except OSError:
        return False


def environment() -> dict:
    """Python, platform, the GPU (nvidia-smi), onnxruntime and aeflow as this Python imports them."""
    import aeflow
    import onnxruntime as ort

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30) if shutil.which("nvidia-smi") else None
    return {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "gpu": smi.stdout.strip() if smi is not None and smi.returncode == 0 else "unknown (no nvidia-smi)",
            "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
            "providers": ort.get_available_providers(), "aeflow_file": aeflow.__file__}


def run_step(args: list[str], out: Path, limit: float) -> tuple[int, str, str, float]:
    """``python ARGS`` from ``out`` with a time limit: (exit code, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=out, timeout=limit)
        return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as e:
        text = [d.decode(errors="replace") if isinstance(d, bytes) else (d or "") for d in (e.stdout, e.stderr)]
        return 124, text[0], text[1] + f"\ntimed out after {limit:.0f} s", time.perf_counter() - t0


def test_results(xml_path: Path) -> dict:
    """Counts and the failed tests' names from pytest's JUnit XML."""
    if not xml_path.exists():
        return {"passed": 0, "failed": 0, "skipped": 0, "failures": ["no test report"]}
    counts, failures = {"passed": 0, "failed": 0, "skipped": 0}, []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        counts["failed" if bad else "skipped" if case.find("skipped") is not None else "passed"] += 1
        failures += [f"{case.get('classname')}::{case.get('name')}"] if bad else []
    return counts | {"failures": failures}


def steps(out: Path) -> dict[str, tuple[float, list[str]]]:
    """Each step's time limit (seconds) and ``python`` arguments."""
    cuda = ["--device", "cuda", "--json"]
    return {"info": (60, ["-m", "aeflow", "info", *cuda]), "verify": (120, ["-m", "aeflow", "verify", *cuda]),
            "tests": (150, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda or library_errors_name_arguments",
                            "--junitxml", str(out / "tests.xml"), *(str(REPO / "tests" / f) for f in TEST_FILES)]),
            "bench": (150, ["-m", "aeflow", "bench", *cuda])}


def bench_lines(bench: dict) -> list[tuple[str, str, str]]:
    """(row, result, detail) per bench row for the table."""
    lines = []
    for r in bench.get("rows", []):
        if "error" in r:
            lines.append((f"bench: {r['name']}", "FAIL", r["error"]))
            continue
        detail = f"median {r['median']:.4g} {r['unit']} [{r['min']:.4g}, {r['max']:.4g}]" + "".join(
            f", {r[key]:.1%} of the {label} limit" for key, label in (("flop_share", "FLOP"), ("byte_share", "bytes"))
            if key in r) + (f", {r['median'] / r['target']:.2f}x the H100 target {r['target']:.0e}" if "target" in r else "")
        check = r.get("check")
        result = "-" if check is None else ("ok" if check["passed"] else "FAIL") + f" vs CPU {check['max_abs']:.1e}"
        lines.append((f"bench: {r['name']}", result, detail))
    return lines


def verify_lines(verify: dict) -> list[tuple[str, str, str]]:
    """(row, result, detail) per golden/checkpoint comparison of ``aeflow verify --json``."""
    rows = verify.get("golden", []) + (verify.get("checkpoints") or [])
    return [(f"verify: {r['name']}", "ok" if r["passed"] else "FAIL", f"max abs diff {r['max_abs']:.2e} "
             f"(tolerance {r['tolerance']}) on {verify.get('provider', '?')}") for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON files (created; default: a new temp folder)")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for the whole run (default 290)")
    opts = parser.parse_args(argv)
    if not gpu_here():
        print("gpu-check: no NVIDIA GPU on this machine (no /dev/nvidia0, no libcuda.so.1); nothing run")
        return 0
    from aeflow.runtime.providers import cuda_missing

    if missing := cuda_missing():
        print(f"gpu-check: error: an NVIDIA GPU is here but the CUDA provider cannot run, missing {'; '.join(missing)} "
              f"(see scripts/gpu_box.sh)", file=sys.stderr)
        return 1
    out = (opts.out or Path(tempfile.mkdtemp(prefix=time.strftime("aeflow-gpu-check-%Y%m%d-%H%M%S-")))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "env.json").write_text(json.dumps(env := environment(), indent=2))
    table, summary = run_all(out, time.monotonic() + opts.budget)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"aeflow gpu-check on {env['gpu']}, onnxruntime {env['onnxruntime']}; JSON in {out}")
    width = max(len(r[0]) for r in table)
    print("\n".join(f"{step:{width}s}  {result:22s}  {detail}" for step, result, detail in table))
    return 0 if all(s["exit"] == 0 for s in summary["steps"].values()) else 1


def run_all(out: Path, deadline: float) -> tuple[list[tuple[str, str, str]], dict]:
    """Every step in turn within ``deadline`` (time.monotonic()): the table's rows and the summary."""
    table, summary = [], {"out": str(out), "steps": {}}
    for name, (limit, args) in steps(out).items():
        code, stdout, stderr, seconds = run_step(args, out, max(1.0, min(limit, deadline - time.monotonic())))
        try:
            doc = test_results(out / "tests.xml") if name == "tests" else json.loads(stdout)
        except ValueError:
            doc = {"stdout": stdout[-20000:]}
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2))
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if name == "tests":
            detail = (f"{doc['passed']} passed, {doc['failed']} failed, {doc['skipped']} skipped"
                      + (f": {', '.join(doc['failures'][:3])}" if doc["failures"] else ""))
        if name == "bench" and not all(r.get("check", {}).get("passed", "error" not in r) for r in doc.get("rows", [])):
            code = code or 1  # a row that disagrees with the CPU fails the check
        summary["steps"][name] = {"exit": code, "seconds": round(seconds, 1), "stderr_tail": stderr[-4000:]}
        table.append((name, "ok" if code == 0 else f"FAIL (exit {code})", f"{seconds:.1f} s  {detail}".rstrip()))
        table += verify_lines(doc) if name == "verify" else bench_lines(doc) if name == "bench" else []
    return table, summary


if __name__ == "__main__":
    sys.exit(main())
