"""The README's usage example runs as written."""

import importlib.util
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    # In a fresh folder: the examples write run directories (runs/...) where they are run.
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        if "import pyro" in code and importlib.util.find_spec("pyro") is None:
            continue  # the Pyro example needs the [pyro] extra
        exec(compile(code, str(README), "exec"), {})
