import pytest
import torch
from torch.distributions import Bernoulli, Independent

import aevb_fast as af
from aevb_fast import reference
from op_tester import KernelPaths, OpTester
from testing import DATA_SHAPES, DTYPES, assert_matches, functions, non_contiguous, rand, randn, require_device


def inputs(shape, num_samples=None, dtype=torch.float64, device="cpu"):
    logits_shape = shape if num_samples is None else (num_samples, *shape)
    return [
        rand(*shape, dtype=dtype, device=device, seed=0),
        randn(*logits_shape, dtype=dtype, device=device, seed=1, scale=3.0),
    ]


def kernel_inputs(shape, samples):
    return [rand(*shape, seed=0), randn(samples, *shape, seed=1, scale=3.0)]


EXTREME = [torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.5]]), torch.tensor([[1e4, 1e4, -1e4, -1e4, 1e4]])]
KERNEL_PATHS = {
    # x broadcast over L
    "bernoulli_log_prob": KernelPaths(
        lambda f, x, logits: f.bernoulli_log_prob(x, logits), kernel_inputs, extreme={"bernoulli_log_prob": EXTREME}
    ),
    # The summed form: x needs no gradient, so the forward makes the logits' (kGrad) and the
    # backward scales it in place (scale_unless_one_kernel).
    "bernoulli_log_prob_sum": KernelPaths(
        lambda f, x, logits: f.bernoulli_log_prob(x.detach(), logits, reduction="sum"),
        kernel_inputs,
        extreme={"bernoulli_log_prob_sum": EXTREME},
    ),
}


class TestBernoulliLogProb(OpTester):
    op = "bernoulli_log_prob"
    broadcastable = (0, 1)
    cases = [(shape, samples) for shape in DATA_SHAPES for samples in (None, 3)]
    empty_cases = [((0, 5), None), ((5, 0), 2), ((0,), None)]
    gradcheck_case = ((3, 7), 2)
    dtype_case = ((100, 784), 2)

    def make_inputs(self, case, dtype=torch.float64, device="cpu"):
        return inputs(*case, dtype=dtype, device=device)

    reduction = "none"

    def call(self, f, x, logits):
        return f.bernoulli_log_prob(x, logits, event_dims=1, reduction=self.reduction)

    def distribution(self, x, logits):
        # Bernoulli's formula holds for x in [0, 1]; its validation accepts only {0, 1}.
        return Independent(Bernoulli(logits=logits, validate_args=False), 1).log_prob(x.expand_as(logits))

    def op_args(self, library, inputs):
        x, logits = inputs
        return [
            (x, logits.clone().requires_grad_(), 1, self.reduction),
            (x.clone().requires_grad_(), logits, 2, self.reduction),
        ]

    def backward_op_args(self, args, out_grads):
        x, logits, event_dims, _ = args
        rows = logits.shape[: logits.dim() - event_dims]
        return (out_grads[0].expand(rows).contiguous(), x, logits, event_dims)

    def bad_inputs(self):
        x, logits, z = torch.zeros(3, 4), torch.zeros(2, 3, 4), torch.zeros
        f = af.bernoulli_log_prob
        return [
            (lambda: f(z(3, 5), logits), r"do not broadcast together: x \(3, 5\), logits \(2, 3, 4\)"),
            (lambda: f(z(2, 2, 3, 4), logits), "x has 4 dims .*; pass event_dims"),
            (lambda: f(x.long(), logits.long()), "x must be a float"),
            (lambda: torch.ops.aevb_fast.bernoulli_log_prob(x.double(), logits, 1), "x has dtype"),
            (lambda: torch.ops.aevb_fast.bernoulli_log_prob(z(3, 5), logits, 1), "x has shape"),
            (lambda: f(z(()), z(())), "at least one dimension"),
            (lambda: f(x, logits, event_dims=4), "event_dims must be between"),
            (lambda: f(x, logits, event_dims=-1), "event_dims must be between"),
            # a strided view (a channel slice) takes the same check
            (lambda: f(non_contiguous(x), non_contiguous(x), event_dims=3), "event_dims must be between 0 and x.dim"),
            (lambda: f(x, logits, reduction="avg"), "reduction must be one of"),
            (lambda: af.bernoulli_log_prob(x, logits, event_dims=1.0), "event_dims must be an int, got float 1.0"),
            (lambda: torch.ops.aevb_fast.bernoulli_log_prob(x, logits, 1, "avg"), "reduction must be 'none', 'sum'"),
            (lambda: torch.ops.aevb_fast.bernoulli_log_prob_with_grad(x, logits, 1, "none"), "must be 'sum' or"),
        ]


class TestBernoulliLogProbSum(TestBernoulliLogProb):
    """The summed form, whose gradient for logits the forward pass makes (x bound: a gradient for
    x takes the per-row path, test_summed_with_a_gradient_for_x)."""

    reduction = "sum"
    constants = 1
    double_backward = False  # its gradient was made in the forward pass

    def distribution(self, *inputs):
        return super().distribution(*inputs).sum()

    def other_ops(self, library, inputs):
        x, logits = inputs
        with_grad = library.bernoulli_log_prob_with_grad.default
        return [(with_grad, (x, logits, 1, "sum")), (with_grad, (x, logits, 2, "mean"))]


class TestBernoulliLogProbMean(TestBernoulliLogProbSum):
    reduction = "mean"

    def distribution(self, *inputs):
        return super(TestBernoulliLogProbSum, self).distribution(*inputs).mean()


@pytest.mark.parametrize("event_dims", [0, 1, 2, 3])
def test_event_dims(event_dims):
    x, logits = inputs((2, 3, 17), 4)
    assert_matches(
        lambda x, l: af.bernoulli_log_prob(x, l, event_dims=event_dims),
        lambda x, l: reference.bernoulli_log_prob(x, l, event_dims=event_dims),
        (x, logits),
        torch.float64,
    )
    assert af.bernoulli_log_prob(x, logits, event_dims=event_dims).shape == logits.shape[: 4 - event_dims]
    assert torch.autograd.gradcheck(
        lambda x, l: af.bernoulli_log_prob(x, l, event_dims=event_dims),
        [t[..., :3].clone().requires_grad_() for t in (x, logits)],
    )


def test_x_broadcast_is_not_copied():
    x, logits = inputs((64, 784), 8)
    x.requires_grad_(False)
    logits.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        af.bernoulli_log_prob(x, logits)
    assert sum(saved) == x.numel() + logits.numel()


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits(dtype):
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.5]], dtype=dtype)
    logits = torch.tensor([[1e4, 1e4, -1e4, -1e4, 1e4]], dtype=dtype, requires_grad=True)
    ll = af.bernoulli_log_prob(x, logits, event_dims=0)
    l = logits.detach().double()  # 1e4 as the dtype stores it
    truth = torch.stack([-l[0, 0], l[0, 1] * 0, l[0, 2] * 0, l[0, 3], -0.5 * l[0, 4]])[None]
    torch.testing.assert_close(ll.double(), truth, rtol=1e-6, atol=1e-6)
    ll.sum().backward()
    torch.testing.assert_close(logits.grad.double(), torch.tensor([[-1.0, 0.0, 0.0, 1.0, -0.5]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32])
def test_binary_x_of_any_dtype_under_autocast(dtype):
    """The README's migration under torch.autocast: float32 (or bool, uint8) pixels with bfloat16
    logits from an autocast decoder give the float32 log-likelihood, and the logits' gradient."""
    x = torch.rand(8, 784, generator=torch.Generator().manual_seed(0)) > 0.5
    decoder = torch.nn.Linear(20, 784)
    z = torch.randn(8, 20, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = decoder(z)
        assert logits.dtype == torch.bfloat16
        ll = af.bernoulli_log_prob(x.to(dtype), logits)
    assert ll.dtype == torch.float32
    torch.testing.assert_close(ll, reference.bernoulli_log_prob(x.float(), logits.float()))
    ll.sum().backward()
    assert decoder.weight.grad is not None and torch.isfinite(decoder.weight.grad).all()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_summed_gradient_is_made_in_the_forward_and_handed_on(reduction):
    x, logits = inputs((6, 5), 2)
    logits.requires_grad_()
    total = af.bernoulli_log_prob(x, logits, reduction=reduction)
    expected = torch.autograd.grad(reference.bernoulli_log_prob(x, logits, reduction=reduction), logits)[0]
    assert "BernoulliLogProbTotal" in total.grad_fn.name()
    (2 * total).backward(retain_graph=True)  # scales a copy: the graph is kept
    total.backward(retain_graph=True)  # an incoming gradient of 1: the forward's gradient as it is
    (3 * total).backward()  # frees the graph: scales in place and hands the tensor on
    torch.testing.assert_close(logits.grad, 6 * expected)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        total.backward()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(af.bernoulli_log_prob(x, logits, reduction=reduction), logits, create_graph=True)


@pytest.mark.parametrize("device", ["cpu", "emulated_cuda"])
def test_summed_gradient_is_the_saved_tensor_itself(device):
    """What the forward saves is the gradient (no inputs), and the backward hands that very tensor
    on: one buffer of the logits' size, no copy."""
    require_device(device)
    x, logits = inputs((8, 32), 2)
    logits.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.data_ptr(), t.shape)) or t, lambda t: t):
        total = functions(device).bernoulli_log_prob(x, logits, reduction="mean")
    assert saved == [(saved[0][0], logits.shape)]
    (-total).backward()
    assert logits.grad.data_ptr() == saved[0][0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", ["cpu", "emulated_cuda"])
def test_per_row_and_summed_gradients_agree_to_the_bit(device, dtype):
    """The summed form makes its gradient in the forward, the per-row form in its backward: one
    formula (math.h: sigmoid from exp(-|l|)), so the same bits, at extreme logits too."""
    require_device(device)
    x, logits = inputs((64, 100), 4, dtype=dtype)
    logits = (logits * torch.logspace(-3, 2, 100, dtype=dtype)).requires_grad_()  # |l| up to ~500
    f = functions(device).bernoulli_log_prob
    per_row = torch.autograd.grad(f(x, logits).sum(), logits)[0]
    summed = torch.autograd.grad(f(x, logits, reduction="sum"), logits)[0]
    assert torch.equal(per_row, summed)


def test_summed_with_a_gradient_for_x():
    x, logits = inputs((4, 7), 3)
    assert_matches(
        lambda x, l: af.bernoulli_log_prob(x, l, reduction="sum"),
        lambda x, l: reference.bernoulli_log_prob(x, l, reduction="sum"),
        (x, logits),
        torch.float64,
    )
    with torch.no_grad():
        torch.testing.assert_close(
            af.bernoulli_log_prob(x, logits, reduction="mean"), reference.bernoulli_log_prob(x, logits).mean()
        )
