"""The README's Python API section runs as written and prints what the README shows."""

import re
import subprocess
import sys

from conftest import REPO


def test_python_api_snippet_runs():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"prints, on a machine without a GPU:\n\n```\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == shown.splitlines()[:2]
