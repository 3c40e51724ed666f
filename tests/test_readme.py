"""The README's usage example runs as written."""

import importlib.util
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        if "import pyro" in code and importlib.util.find_spec("pyro") is None:
            continue  # the Pyro example needs the [pyro] extra
        exec(compile(code, str(README), "exec"), {})
