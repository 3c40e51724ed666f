"""The public names stay put while the code moves (issue 33): the package's and the trainer's
exports with their signatures, the operators' schemas, the command's subcommands and options.
A deliberate change rewrites the record: python tests/build/test_public_api.py"""

import inspect
import json
from pathlib import Path

import pytest
import torch

import aevb_fast
import aevb_fast.training
from aevb_fast import cli

RECORD = Path(__file__).with_name("public_api.json")


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):  # a module or a constant
        return type(obj).__name__


def public_api() -> dict:
    exports = {}
    for module in (aevb_fast, aevb_fast.training):
        exports[module.__name__] = {name: _signature(getattr(module, name)) for name in module.__all__}
    schemas = sorted(str(s) for s in torch._C._jit_get_all_schemas() if s.name.startswith("aevb_fast::"))
    subcommands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    options = {
        name: sorted(o for action in parser._actions for o in action.option_strings or [action.dest])
        for name, parser in sorted(subcommands.items())
    }
    return {"exports": exports, "schemas": schemas, "command_options": options}


def test_the_public_names_are_the_recorded_ones():
    recorded = json.loads(RECORD.read_text())
    now = public_api()
    for part in recorded:
        assert now[part] == recorded[part], f"{part} changed: rewrite {RECORD.name} only if that was meant"


def test_a_wrong_keyword_names_the_function_as_the_user_calls_it():
    # As torch's own: "gaussian_kl() got an unexpected keyword argument", not its family's class.
    for name in aevb_fast.ops.__all__:
        with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'reduce'"):
            getattr(aevb_fast, name)(torch.zeros(2, 3), torch.zeros(2, 3), reduce=True)


def test_the_functions_pickle_and_deep_copy_as_torchs_own():
    # A model holding one (self.sampler = aevb_fast.sample_and_kl), a functools.partial of one,
    # copy.deepcopy (EMA, AveragedModel) and torch.save of a whole model need it.
    import copy
    import functools
    import pickle

    for name in aevb_fast.ops.__all__:
        function = getattr(aevb_fast, name)
        assert pickle.loads(pickle.dumps(function)) == function
        assert copy.deepcopy(function) == function
    model = torch.nn.Linear(2, 3)
    model.sampler = functools.partial(aevb_fast.sample_and_kl, num_samples=2)
    restored = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    assert restored.sampler.func == aevb_fast.sample_and_kl and restored.sampler.keywords == {"num_samples": 2}
    assert repr(aevb_fast.gaussian_kl) == "<bound method gaussian_kl of <operators torch.ops.aevb_fast>>"


def test_the_submodules_are_attributes_and_dir_lists_the_public_names():
    # As torch.distributions after `import torch` (a notebook's af.distributions.<TAB>); in a
    # fresh process, so that no other import has loaded them first.
    import subprocess
    import sys

    script = (
        "import aevb_fast as af\n"
        "print(af.distributions.DiagonalNormal.__name__, af.training.__name__)\n"
        "print(sorted(set(dir(af)) & {'torch', 'annotations', 'distributions', 'training', 'gaussian_kl'}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "DiagonalNormal aevb_fast.training",
        "['distributions', 'gaussian_kl', 'training']",
    ]
    with pytest.raises(AttributeError, match="module 'aevb_fast' has no attribute 'distribution'"):
        aevb_fast.distribution  # noqa: B018


if __name__ == "__main__":
    RECORD.write_text(json.dumps(public_api(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}")


def test_the_cpu_isa_variable_is_read_as_written_by_hand_or_refused():
    # "avx2" or "AVX-512" mean what they say (they fell silently to the slowest kernels); a value
    # that means nothing is an error at import, not a slow run.
    import os
    import subprocess
    import sys

    def isa(value):
        env = {**os.environ, "AEVB_FAST_CPU_ISA": value}
        script = "import aevb_fast; print(aevb_fast.build_info()['cpu_isa'])"
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)

    for spelled, exact in [("avx2", "AVX2"), ("default", "DEFAULT"), ("AVX-512", "AVX512")]:
        assert isa(spelled).stdout == isa(exact).stdout and isa(exact).returncode == 0
    refused = isa("avx-2000")
    assert refused.returncode != 0
    assert "AEVB_FAST_CPU_ISA must be AVX512, AVX2 or DEFAULT, got 'avx-2000'" in refused.stderr
