"""The tests every operator owes, written once (as torchvision's RoIOpTester): a test file
subclasses OpTester, states the op's spec (its inputs, its call, its torch.distributions twin,
its operator arguments, its bad inputs) and gets the common tests over devices and dtypes:
float64 against the reference, torch.distributions, gradcheck, opcheck on every device the
op has (CPU, the CUDA emulation, CUDA), every dtype, non-contiguous and empty inputs,
broadcasting, type promotion and autocast as torch's ops do them,
torch.compile(fullgraph=True), bad inputs, mixed devices. Its special cases stay beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

import aevb_fast as af
from aevb_fast import reference
from testing import (
    DEVICES,
    DTYPES,
    LOW_PRECISION,
    assert_low_precision_ok,
    assert_matches,
    functions,
    non_contiguous,
    op_library,
    randn,
    require_device,
    run_with_grads,
    tensor_device,
)


@dataclass(frozen=True)
class KernelPaths:
    """How tests/ops/test_gpu_kernels.py drives one of a family's calls through every CUDA kernel
    path (packed and one-element, warp and block rows, each L) against the CPU kernels: a family's
    test file names these in its KERNEL_PATHS. ``call(f, *tensors)`` runs it with ``f`` the
    functions of a device; ``inputs(shape, samples)`` makes its float64 CPU tensors for rows of
    ``shape`` and ``samples`` draws (the leading dim of z, logits or mean); ``samples``: the L it
    takes; ``extreme``: named inputs at its formulas' edges."""

    call: Callable
    inputs: Callable[[tuple, int], list[torch.Tensor]]
    samples: tuple[int, ...] = (1, 5)
    extreme: dict[str, list[torch.Tensor]] = field(default_factory=dict)


def as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


class OpTester:
    """Base class of an operator's tests: set the spec below in a subclass named Test<Op>."""

    op: str  # the forward operator; "<op>_backward" is its backward
    cases: list  # case ids handed to make_inputs: (shape, num_samples)
    empty_cases: list
    gradcheck_case: tuple
    dtype_case: tuple
    # Per output: "reduced" (float32 for reduced-precision inputs, as the ops return) or "input".
    outputs: tuple = ("reduced",)
    # The first `constants` inputs get no gradient (x of the linear heads): bound, not differentiated.
    constants: int = 0
    # Inputs (by position) that may come in any shape that broadcasts against the others'.
    broadcastable: tuple = ()
    # Whether its gradients are differentiable again (create_graph=True); where they are not, the
    # backward must refuse, never hand on second derivatives of zero.
    double_backward: bool = True

    def make_inputs(self, case, dtype=torch.float64, device="cpu") -> list[torch.Tensor]:
        raise NotImplementedError

    def call(self, f, *inputs):
        """The public function of module f (aevb_fast, its emulation, or reference) on inputs."""
        raise NotImplementedError

    def distribution(self, *inputs):
        """The same value through torch.distributions."""
        raise NotImplementedError

    def op_args(self, library, inputs) -> list[tuple]:
        """Argument tuples of the forward operator for opcheck, some tensors requiring grad."""
        raise NotImplementedError

    def backward_op_args(self, args, out_grads) -> tuple:
        """The backward operator's arguments, from the forward's and its outputs' gradients."""
        raise NotImplementedError

    def other_ops(self, library, inputs) -> list:
        """(operator overload, args) pairs of the op's other operators, for opcheck."""
        return []

    def bad_inputs(self) -> list:
        """(call, message) pairs: each call must raise a ValueError matching message."""
        return []

    # ---- the common tests -------------------------------------------------------------------

    def bound(self, device, inputs, dtype=None):
        """(fused, reference, the inputs they differentiate): the constants bound (in dtype)."""
        fixed = [t if dtype is None else t.to(dtype) for t in inputs[: self.constants]]
        f = functions(device)
        return (
            (lambda *t: self.call(f, *fixed, *t)),
            (lambda *t: self.call(reference, *fixed, *t)),
            inputs[self.constants :],
        )

    @pytest.mark.parametrize("device", DEVICES)
    def test_matches_reference_float64(self, device):
        require_device(device)
        for case in self.cases:
            assert_matches(*self.bound(device, self.make_inputs(case, device=tensor_device(device))), torch.float64)

    def test_matches_torch_distributions(self):
        for case in self.cases:
            inputs = self.make_inputs(case)
            for ours, theirs in zip(as_list(self.call(af, *inputs)), as_list(self.distribution(*inputs)), strict=True):
                torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)

    def test_gradcheck(self):
        fused, _, inputs = self.bound("cpu", self.make_inputs(self.gradcheck_case))
        assert torch.autograd.gradcheck(fused, [t.requires_grad_() for t in inputs])

    @pytest.mark.parametrize("device", DEVICES)
    def test_double_backward(self, device):
        """Second derivatives (a gradient penalty, a Hessian-vector product) are right, or refused."""
        require_device(device)
        fused, _, inputs = self.bound(device, self.make_inputs(self.gradcheck_case, device=tensor_device(device)))
        leaves = [t.requires_grad_() for t in inputs]
        if self.double_backward:
            # Strided inputs too: the op saves them as compact copies, which must stay in the graph.
            strided = lambda *t: fused(*[non_contiguous(a) if a.dim() >= 2 else a for a in t])  # noqa: E731
            assert torch.autograd.gradgradcheck(fused, leaves)
            assert torch.autograd.gradgradcheck(strided, leaves)
            return
        total = sum(out.sum() for out in as_list(fused(*leaves)))
        with pytest.raises(RuntimeError, match=r"double backward \(create_graph=True\) is not supported"):
            torch.autograd.grad(total, leaves, create_graph=True)

    # opcheck's checks are about the schema, fakes and autograd, which dtype does not change: the
    # quick loop (-m "not slow") runs float32 and float64, the whole suite all four.
    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize(
        "dtype", [d if d not in LOW_PRECISION else pytest.param(d, marks=pytest.mark.slow) for d in DTYPES]
    )
    def test_opcheck(self, device, dtype):
        require_device(device)
        library = op_library(device)
        inputs = self.make_inputs(self.gradcheck_case, dtype, tensor_device(device))
        # Dense but transposed inputs too (in float64): the fakes must give the strides the kernels
        # give (contiguous), or a compiled graph reads their outputs wrongly.
        transposed = [t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else t for t in inputs]
        for args in self.op_args(library, inputs) + (
            self.op_args(library, transposed) if dtype == torch.float64 else []
        ):
            torch.library.opcheck(getattr(library, self.op).default, args)
            args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            outs = as_list(getattr(library, self.op)(*args))
            grads = [randn(*o.shape, seed=5 + i).to(o) for i, o in enumerate(outs)]
            backward = getattr(library, f"{self.op}_backward").default
            torch.library.opcheck(backward, self.backward_op_args(args, grads))
        for op, args in self.other_ops(library, inputs):
            torch.library.opcheck(op, args)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_dtypes(self, device, dtype):
        require_device(device)
        where = tensor_device(device)
        inputs = self.make_inputs(self.dtype_case, dtype, where)
        outs = as_list(self.call(functions(device), *inputs))
        for kind, out in zip(self.outputs, outs, strict=True):
            assert out.dtype == (af.ops.accumulate_dtype(dtype) if kind == "reduced" else dtype)
        if dtype in LOW_PRECISION:
            float64 = self.make_inputs(self.dtype_case, device=where)
            assert_low_precision_ok(*self.bound(device, float64, dtype), dtype)
        else:
            assert_matches(*self.bound(device, inputs), dtype)

    @pytest.mark.parametrize("device", DEVICES)
    def test_non_contiguous(self, device):
        require_device(device)
        inputs = self.make_inputs(self.gradcheck_case, device=tensor_device(device))
        for layout in (non_contiguous, lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2)):
            strided = [layout(t) if t.dim() >= 2 else t for t in inputs]
            assert any(not t.is_contiguous() for t in strided)
            assert_matches(*self.bound(device, strided), torch.float64)

    @pytest.mark.parametrize("device", DEVICES)
    def test_empty(self, device):
        require_device(device)
        for case in self.empty_cases:
            fused, ref, inputs = self.bound(device, self.make_inputs(case, device=tensor_device(device)))
            outs, grads, _ = run_with_grads(fused, inputs)
            ref_outs, ref_grads, _ = run_with_grads(ref, inputs)
            for a, b in zip(outs + grads, ref_outs + ref_grads, strict=True):
                assert a.shape == b.shape, case
                torch.testing.assert_close(a, b, equal_nan=True)  # the mean of nothing is NaN

    @pytest.mark.parametrize("device", ["cpu", "emulated_cuda"])
    def test_compiled_matches_eager(self, device):
        require_device(device)
        eager, _, inputs = self.bound(
            device, self.make_inputs(self.gradcheck_case, torch.float32, tensor_device(device))
        )
        torch.compiler.reset()  # every op's test compiles the same lambda: no recompile limit
        compiled = torch.compile(lambda *t: eager(*t), fullgraph=True)
        expected = run_with_grads(eager, inputs)
        got = run_with_grads(compiled, inputs)
        for a, b in zip(got[0] + got[1], expected[0] + expected[1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("device", DEVICES)
    def test_broadcasts_like_torch(self, device):
        """An input given as its last dim alone, as ones, as a 0-dim tensor, as one value per row
        (..., 1), or with a middle dim of 1 gives what the reference gives with torch's
        broadcasting, and its gradient comes back in its own shape."""
        require_device(device)
        inputs = self.make_inputs(self.gradcheck_case, device=tensor_device(device))
        for i in self.broadcastable:
            t = inputs[i]
            smaller = [t[(0,) * (t.dim() - 1)], t.flatten()[:1].reshape([1] * t.dim()), t.flatten()[0], t[..., :1]]
            if t.dim() >= 3:
                smaller.append(t[:, :1])
            for small in smaller:
                args = [*inputs[:i], small.clone(), *inputs[i + 1 :]]
                assert_matches(*self.bound(device, args), torch.float64)

    @pytest.mark.parametrize("device", DEVICES)
    def test_promotes_dtypes_like_torch(self, device):
        """float32 with bfloat16 computes in float32, as torch's binary ops do; each gradient comes
        back in its input's dtype."""
        require_device(device)
        inputs = self.make_inputs(self.gradcheck_case, torch.float32, tensor_device(device))
        mixed = [t if k == 0 else t.to(torch.bfloat16) for k, t in enumerate(inputs)]
        fused, _, leaves = self.bound(device, mixed)
        outs, grads, _ = run_with_grads(fused, leaves)
        promoted, _, promoted_leaves = self.bound(device, [t.float() for t in mixed])
        expected_outs, expected_grads, _ = run_with_grads(promoted, promoted_leaves)
        for a, b in zip(outs, expected_outs, strict=True):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for grad, leaf, expected in zip(grads, leaves, expected_grads, strict=True):
            assert grad.dtype == leaf.dtype
            torch.testing.assert_close(grad, expected.to(leaf.dtype), rtol=0, atol=0)

    @pytest.mark.parametrize("device", DEVICES)
    def test_autocast(self, device):
        """Under torch.autocast (bfloat16) the losses run in float32, as torch's own losses do, and
        mixed inputs work; the other ops run in their inputs' promoted dtype."""
        require_device(device)
        amp = "cuda" if device == "cuda" else "cpu"
        inputs = self.make_inputs(self.gradcheck_case, torch.float32, tensor_device(device))
        for mixed in (True, False):
            low = [t if mixed and k == 0 else t.to(torch.bfloat16) for k, t in enumerate(inputs)]
            fused, _, leaves = self.bound(device, low)
            with torch.autocast(amp, dtype=torch.bfloat16):
                outs, grads, _ = run_with_grads(fused, leaves)
            in_float32 = mixed or self.op in af.ops.AUTOCAST_FLOAT32_OPS
            expected_fn, _, expected_leaves = self.bound(device, [t.float() if in_float32 else t for t in low])
            expected_outs, expected_grads, _ = run_with_grads(expected_fn, expected_leaves)
            for a, b in zip(outs, expected_outs, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            for grad, leaf, expected in zip(grads, leaves, expected_grads, strict=True):
                assert grad.dtype == leaf.dtype
                torch.testing.assert_close(grad, expected.to(leaf.dtype), rtol=0, atol=0)

    def test_bad_input(self):
        for call, match in self.bad_inputs():
            with pytest.raises((ValueError, TypeError), match=match):  # TypeError: an argument of the wrong type
                call()

    @pytest.mark.parametrize("other", ["meta", "cuda"])
    def test_mixed_devices(self, other):
        # meta runs everywhere: it goes through the fake implementation's device check.
        if other == "cuda":
            require_device("cuda")
        inputs = [t.float() for t in self.make_inputs(self.gradcheck_case)]
        inputs[1] = inputs[1].to(other)
        with pytest.raises(ValueError, match="on the same device"):
            self.call(af, *inputs)
