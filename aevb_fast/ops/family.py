"""An operator family, the unit the package is built from: one name in every layer
(``csrc/ops/<name>.cpp``, ``csrc/cpu/<name>.cpp``, ``csrc/cuda/<name>.cu``,
``aevb_fast/ops/<name>.py``, ``tests/ops/test_<name>.py``), and here the one entry from which the
package's exports, fakes and autocast rules are read (``aevb_fast.ops.FAMILIES``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class OpFamily:
    name: str
    # A class whose methods are the family's public functions, over the operator library
    # ``self._ops``; ``OperatorLibrary`` inherits from every family's.
    functions: type
    # The public functions, which are also the names of the family's forward operators.
    ops: tuple[str, ...]
    # The fake (shape-only) implementation of every forward and backward operator, by name.
    fakes: dict[str, Callable]
    # Operators that run in float32 under torch.autocast, as torch's own losses do.
    autocast_float32: tuple[str, ...] = ()
    # Backward operators besides ``<op>_backward`` (the linear heads' ``<op>_with_grads``).
    extra_backward_ops: tuple[str, ...] = ()

    @property
    def backward_ops(self) -> tuple[str, ...]:
        return tuple(f"{op}_backward" for op in self.ops) + self.extra_backward_ops
