"""The package's layers (DESIGN.md): the core imports nothing beyond torch and numpy, and every
layer imports only from itself and the layers below it."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "aevb_fast"
CORE = ["__init__", "ops", "reference", "elbo", "models", "emulated_cuda"]
# What each layer may import from the package (besides its own folder).
ALLOWED = {
    "core": {"core"},
    "training": {"core", "training"},
    "bench": {"core", "bench"},
    "reproduce": {"core", "training", "bench", "reproduce"},
    "cli": {"core", "training", "bench", "reproduce"},
}


def layer_of(module: str) -> str:
    """'aevb_fast.training.trainer' -> 'training'; a core module -> 'core'."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return name if name in ("training", "bench", "reproduce", "cli") else "core"


def package_imports(path: Path) -> set[str]:
    """The aevb_fast modules a file imports (relative imports resolved)."""
    module = "aevb_fast." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if not node.module or node.level else [target]
            found.update(n for n in names + [target] if n.startswith("aevb_fast"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("aevb_fast"))
    return found


def test_each_layer_imports_only_below_itself():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = "aevb_fast." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for target in package_imports(path):
            if target in ("aevb_fast._C",) or target.startswith("aevb_fast._C"):
                continue
            if layer_of(target) not in ALLOWED[layer_of(module)]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_the_core_needs_only_torch_and_numpy():
    # tqdm, matplotlib and scipy made unimportable: the operators, the ELBO and the models still work.
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tqdm', 'matplotlib', 'scipy'):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import torch, aevb_fast as af
from aevb_fast.models import VAE
model = VAE.paper(20, 8, 2)
x = torch.rand(4, 20).bernoulli()
print(float(model(x)) < 0, float(af.elbo(x, *model.encoder(x), model.decoder)) < 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split() == ["True", "True"], result.stderr[-2000:]


def test_a_command_without_the_train_extra_says_what_to_install():
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'tqdm':
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from aevb_fast import cli
sys.exit(cli.main(['train', '--dataset', 'synthetic', '--samples', '0']))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install" in result.stderr and "[train]" in result.stderr
