"""The linear heads: the decoder's output layer fused with its likelihood. The common tests run
on each head with each reduction (OpTester); the special cases cover chunk sizes that do not
divide the rows, samples broadcast over x, no bias, and that the logits are never stored whole."""

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Independent, Normal

import aevb_fast as af
from aevb_fast import reference
from aevb_fast.ops.linear_log_prob import cuda_chunk_rows
from op_tester import OpTester
from testing import DEVICES, assert_matches, functions, rand, randn, require_device, tensor_device

HIDDEN = 7


def inputs(case, dtype=torch.float64, device="cpu", parts=1):
    """x (*batch, D), h (*samples, *batch, H), weight (parts * D, H), bias (parts * D)."""
    batch, samples, cols = case
    lead = batch if samples is None else (samples, *batch)
    t = lambda *shape, seed, **kw: randn(*shape, dtype=dtype, device=device, seed=seed, **kw)  # noqa: E731
    return [
        rand(*batch, cols, dtype=dtype, device=device, seed=0),
        t(*lead, HIDDEN, seed=1),
        t(parts * cols, HIDDEN, seed=2, scale=0.5),
        t(parts * cols, seed=3, scale=0.5),
    ]


class LinearHeadTester(OpTester):
    """x, h, weight, bias; x is bound (no gradient), chunks of 3 rows (dividing no case's rows)."""

    constants = 1
    double_backward = False
    chunk_size = 3
    reduction = "none"
    parts = 1
    cases = [((10,), None, 13), ((10,), 3, 13), ((2, 5), 2, 1), ((1,), None, 33)]
    empty_cases = [((0,), None, 5), ((4,), 0, 5), ((4,), None, 0)]
    gradcheck_case = ((5,), 2, 4)
    dtype_case = ((100,), 2, 40)

    @property
    def outputs(self):
        return ("reduced",)

    def make_inputs(self, case, dtype=torch.float64, device="cpu"):
        return inputs(case, dtype, device, self.parts)

    def call(self, f, x, h, weight, bias):
        fn = getattr(f, self.op)
        return fn(x, h, weight, bias, reduction=self.reduction, chunk_size=self.chunk_size)

    def op_args(self, library, inputs):
        x, h, weight, bias = inputs
        return [
            (x, h.clone().requires_grad_(), weight.clone().requires_grad_(), bias, self.reduction, 2),
            (x, h, weight, bias.clone().requires_grad_(), self.reduction, 100),
        ]

    def backward_op_args(self, args, out_grads):
        x, h, weight, bias, _, chunk = args
        grad = randn(*h.shape[:-1], seed=9).to(out_grads[0])
        return (grad, x, h, weight, bias, chunk)

    def other_ops(self, library, inputs):
        x, h, weight, bias = inputs
        with_grads = getattr(library, f"{self.op}_with_grads").default
        return [(with_grads, (x, h, weight, None, "sum", 2)), (with_grads, (x, h, weight, bias, "mean", 3))]

    def bad_inputs(self):
        z, f, op = torch.zeros, getattr(af, self.op), getattr(torch.ops.aevb_fast, self.op)
        x, h, w, b = z(4, 5), z(4, 3), z(self.parts * 5, 3), z(self.parts * 5)
        return [
            (lambda: f(x, h, z(5, 4), b), "weight must have shape"),
            (lambda: f(x, h, w, z(7)), "bias must have shape"),
            (lambda: f(z(3, 5), h, w, b), "x has shape"),
            (lambda: f(x, z(4, 4), w, b), "weight must have shape"),
            (lambda: op(x.double(), h, w, b, "none", 2), "h has dtype"),
            (lambda: op(x, h, w.double(), b, "none", 2), "weight has dtype"),
            (lambda: f(x.long(), h.long(), w.long(), b.long()), "x must be a float"),
            (lambda: f(x, h, w, b, reduction="avg"), "reduction must be one of"),
            (lambda: f(x, h, w, b, chunk_size=0), "chunk_size must be a positive int"),
            (lambda: f(x.clone().requires_grad_(), h, w, b), f"{self.op}: x requires grad, but the fused head"),
            (
                lambda: torch.ops.aevb_fast.linear_bernoulli_log_prob(x, h, z(5, 3), None, "none", 0),
                "chunk_size must be at least 1",
            ),
        ]


class TestLinearBernoulliLogProb(LinearHeadTester):
    op = "linear_bernoulli_log_prob"

    def distribution(self, x, h, weight, bias):
        logits = F.linear(h, weight, bias)
        return Independent(Bernoulli(logits=logits, validate_args=False), 1).log_prob(x.expand_as(logits))


class TestLinearBernoulliLogProbSum(TestLinearBernoulliLogProb):
    reduction = "sum"

    def distribution(self, *inputs):
        return super().distribution(*inputs).sum()


class TestLinearGaussianLogProb(LinearHeadTester):
    op = "linear_gaussian_log_prob"
    parts = 2

    def distribution(self, x, h, weight, bias):
        mean_pre, logvar = F.linear(h, weight, bias).chunk(2, -1)
        return Independent(Normal(torch.sigmoid(mean_pre), torch.exp(0.5 * logvar)), 1).log_prob(x)


class TestLinearGaussianLogProbMean(TestLinearGaussianLogProb):
    reduction = "mean"

    def distribution(self, *inputs):
        return super().distribution(*inputs).mean()


HEADS = {"bernoulli": ("linear_bernoulli_log_prob", 1), "gaussian": ("linear_gaussian_log_prob", 2)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 21, 22, None])
def test_every_chunk_size_and_reduction(device, head, reduction, chunk_size):
    # 3 samples x 7 rows: chunks inside a sample, of whole samples, a partial last chunk.
    require_device(device)
    name, parts = HEADS[head]
    x, h, weight, bias = inputs(((7,), 3, 9), device=tensor_device(device), parts=parts)
    fused = lambda h, w, b: getattr(functions(device), name)(x, h, w, b, reduction=reduction, chunk_size=chunk_size)  # noqa: E731
    ref = lambda h, w, b: getattr(reference, name)(x, h, w, b, reduction=reduction)  # noqa: E731
    assert_matches(fused, ref, (h, weight, bias), torch.float64)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_without_bias(head, reduction):
    name, parts = HEADS[head]
    x, h, weight, _ = inputs(((6,), 2, 5), parts=parts)
    fused = lambda h, w: getattr(af, name)(x, h, w, reduction=reduction, chunk_size=4)  # noqa: E731
    ref = lambda h, w: getattr(reference, name)(x, h, w, reduction=reduction)  # noqa: E731
    assert_matches(fused, ref, (h, weight), torch.float64)
    assert torch.autograd.gradcheck(fused, [t.clone().requires_grad_() for t in (h, weight)])


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_logits_are_never_saved(head, reduction):
    # Autograd keeps x, h, weight and bias ("none") or the gradients ("sum"/"mean"): nothing of
    # the size of the logits (L x B x D).
    name, parts = HEADS[head]
    x, h, weight, bias = inputs(((64,), 4, 200), parts=parts)
    h.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        getattr(af, name)(x, h, weight, bias, reduction=reduction, chunk_size=16)
    assert max(saved, default=0) < 4 * 64 * 200
    assert sum(saved) <= x.numel() + 2 * (h.numel() + weight.numel() + bias.numel())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradients_made_in_the_forward_are_handed_on_without_a_copy(reduction):
    x, h, weight, bias = inputs(((6,), 2, 5))
    h.requires_grad_()
    total = af.linear_bernoulli_log_prob(x, h, weight, bias, reduction=reduction, chunk_size=4)
    expected = torch.autograd.grad(reference.linear_bernoulli_log_prob(x, h, weight, bias, reduction=reduction), h)[0]
    (2 * total).backward(retain_graph=True)  # scales a copy: the graph is kept
    (3 * total).backward()  # frees the graph: scales in place and hands the tensor on
    torch.testing.assert_close(h.grad, 5 * expected)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        total.backward()


def test_without_grad_the_sum_takes_the_forward_only_path():
    x, h, weight, bias = inputs(((10,), 2, 6))
    with torch.no_grad():
        total = af.linear_bernoulli_log_prob(x, h, weight, bias, reduction="sum", chunk_size=3)
    torch.testing.assert_close(total, reference.linear_bernoulli_log_prob(x, h, weight, bias).sum())
    assert not total.requires_grad


def test_frozen_weights_are_honoured_and_x_may_not_need_a_gradient():
    x, h, weight, bias = inputs(((5,), None, 4))
    h.requires_grad_()
    af.linear_bernoulli_log_prob(x, h, weight, bias).sum().backward()
    assert weight.grad is None and h.grad is not None
    # The head gives x no gradient: an x that needs one is refused, not left with None.
    with pytest.raises(ValueError, match="x requires grad"):
        af.linear_bernoulli_log_prob(x.requires_grad_(), h, weight, bias)
    with torch.no_grad():
        af.linear_bernoulli_log_prob(x, h, weight, bias)


@pytest.mark.parametrize("head", HEADS)
def test_extreme_pre_activations(head):
    name, parts = HEADS[head]
    x = torch.tensor([[0.0, 1.0, 0.5]])
    h = torch.tensor([[1.0]], requires_grad=True)
    # Saturated sigmoids; for the Gaussian, log-variances of -80 (finite in float32) and 80.
    weight = torch.tensor([[1e4], [-1e4], [80.0]] + [[-80.0], [-80.0], [80.0]] * (parts - 1), requires_grad=True)
    out = getattr(af, name)(x, h, weight)
    out.backward()
    assert torch.isfinite(out).all() and torch.isfinite(h.grad).all() and torch.isfinite(weight.grad).all()
    torch.testing.assert_close(
        out.double(), getattr(reference, name)(x.double(), h.double(), weight.double()), rtol=1e-5, atol=1e-3
    )


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_double_backward_is_refused(reduction):
    x, h, weight, bias = inputs(((4,), None, 3))
    h.requires_grad_()
    out = af.linear_bernoulli_log_prob(x, h, weight, bias, reduction=reduction).sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out, h, create_graph=True)


def test_compiled_with_a_transposed_weight():
    # A tied or transposed weight: the gradients the kernels return are contiguous, as the fake
    # implementation says.
    x, h, weight, bias = inputs(((6,), 2, 5))
    weight = weight.t().contiguous().t()
    fn = lambda h, w, b: af.linear_bernoulli_log_prob(x, h, w, b, reduction="sum", chunk_size=4)  # noqa: E731
    torch.compiler.reset()
    eager = torch.autograd.grad(fn(h.requires_grad_(), weight.requires_grad_(), bias), (h, weight))
    compiled = torch.autograd.grad(torch.compile(fn, fullgraph=True)(h, weight, bias), (h, weight))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


def test_a_traced_gpu_chunk_size_does_not_depend_on_the_traced_batch(monkeypatch):
    # torch.jit.trace keeps the chunk size as a constant: one tuned to a traced B = 100 would cut
    # B = 262144 into thousands of products. (A stand-in for a CUDA tensor: no GPU needed.)
    from types import SimpleNamespace

    from aevb_fast.ops import linear_log_prob

    h = SimpleNamespace(device=torch.device("cuda"), shape=(100, 400), element_size=lambda: 4)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    weight = torch.zeros(784, 400)
    rows = linear_log_prob._chunk_rows(None, h, weight, None)
    assert rows == linear_log_prob.CUDA_MIN_CHUNK_ELEMENTS // 784


def test_gpu_chunks_are_equal_and_sized_by_the_problem_and_the_device():
    h200 = 143_771_000_000  # bytes
    # B = 262144, D = 784: 8 equal chunks (a fixed 2**24 logits made 12 and a quarter)
    assert cuda_chunk_rows(262144, 784, 4, h200) == 32768
    # 2**24 logits at least: B = 65536 in 4 equal chunks, a small batch in one
    assert cuda_chunk_rows(65536, 784, 4, h200) == 16384
    assert cuda_chunk_rows(100, 784, 4, h200) == 100
    # the two buffers within a 32nd of a small device's memory, never less than a row
    rows = cuda_chunk_rows(262144, 784, 4, 2**30)
    assert 2 * rows * 784 * 4 <= 2**30 // 32 and rows * -(-262144 // rows) >= 262144
    assert cuda_chunk_rows(10, 784, 4, 1) == 1


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_double_backward_is_refused_with_the_way_out(reduction):
    """Every reduction of a head refuses create_graph=True and names the reference head (the
    summed ops' advice, reduction='none', would only meet the same refusal)."""
    h, weight = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    total = af.linear_bernoulli_log_prob(torch.rand(4, 5), h, weight, reduction=reduction).sum()
    with pytest.raises(RuntimeError, match="use aevb_fast.reference.linear_bernoulli_log_prob"):
        torch.autograd.grad(total, (h, weight), create_graph=True)
