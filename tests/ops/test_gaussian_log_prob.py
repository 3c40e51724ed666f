import math

import pytest
import torch
from torch.distributions import Independent, Normal

import aevb_fast as af
from aevb_fast import reference
from op_tester import KernelPaths, OpTester
from testing import DATA_SHAPES, assert_matches, functions, non_contiguous, rand, randn, require_device


def inputs(shape, num_samples=None, dtype=torch.float64, device="cpu"):
    param_shape = shape if num_samples is None else (num_samples, *shape)
    return [
        rand(*shape, dtype=dtype, device=device, seed=0),
        rand(*param_shape, dtype=dtype, device=device, seed=1),
        randn(*param_shape, dtype=dtype, device=device, seed=2, scale=0.5, shift=-2.0),
    ]


def kernel_inputs(shape, samples):
    return [rand(*shape, seed=0), rand(samples, *shape, seed=1), randn(samples, *shape, seed=2, scale=0.5, shift=-1.0)]


# A huge mean, log-variances of -80 (finite in float32) and 80.
EXTREME = [
    torch.tensor([[0.5, 0.5, 0.5, 0.5]]),
    torch.tensor([[0.5, 0.25, 0.5, 1e3]]),
    torch.tensor([[-80.0, -80.0, 80.0, 80.0]]),
]
KERNEL_PATHS = {
    "gaussian_log_prob": KernelPaths(
        lambda f, x, m, v: f.gaussian_log_prob(x, m, v), kernel_inputs, extreme={"gaussian_log_prob": EXTREME}
    ),
    "gaussian_log_prob_mean": KernelPaths(
        lambda f, x, m, v: f.gaussian_log_prob(x.detach(), m, v, reduction="mean"),
        kernel_inputs,
        extreme={"gaussian_log_prob_mean": EXTREME},
    ),
}


class TestGaussianLogProb(OpTester):
    op = "gaussian_log_prob"
    broadcastable = (0, 1, 2)
    cases = [(shape, samples) for shape in DATA_SHAPES for samples in (None, 3)]
    empty_cases = [((0, 5), None), ((5, 0), 2), ((0,), None)]
    gradcheck_case = ((3, 7), 2)
    dtype_case = ((100, 784), 2)

    def make_inputs(self, case, dtype=torch.float64, device="cpu"):
        return inputs(*case, dtype=dtype, device=device)

    reduction = "none"

    def call(self, f, x, mean, logvar):
        return f.gaussian_log_prob(x, mean, logvar, event_dims=1, reduction=self.reduction)

    def distribution(self, x, mean, logvar):
        return Independent(Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(x)

    def op_args(self, library, inputs):
        x, mean, logvar = inputs
        return [
            (x, mean.clone().requires_grad_(), logvar, 1, self.reduction),
            (x.clone().requires_grad_(), mean, logvar, 2, self.reduction),
        ]

    def backward_op_args(self, args, out_grads):
        x, mean, logvar, event_dims, _ = args
        rows = mean.shape[: mean.dim() - event_dims]
        return (out_grads[0].expand(rows).contiguous(), x, mean, logvar, event_dims)

    def bad_inputs(self):
        x, mean, z, f = torch.zeros(3, 4), torch.zeros(2, 3, 4), torch.zeros, af.gaussian_log_prob
        return [
            (lambda: f(z(3, 5), mean, mean), "do not broadcast together: x"),
            (lambda: f(x, mean, z(2, 3, 5)), r"do not broadcast together: .*logvar \(2, 3, 5\)"),
            (lambda: f(z(2, 3, 4, 5), z(2, 3, 4, 5), 0.0), "x has 4 dims .*; pass event_dims"),
            (lambda: f(x.long(), mean.long(), mean.long()), "x must be a float"),
            (lambda: torch.ops.aevb_fast.gaussian_log_prob(x, mean, mean.double(), 1), "logvar has dtype"),
            (lambda: torch.ops.aevb_fast.gaussian_log_prob(x, mean, z(2, 3, 5), 1), "logvar has shape"),
            (lambda: f(z(()), z(()), z(())), "at least one dimension"),
            (lambda: f(x, mean, mean, event_dims=4), "event_dims must be between"),
            (lambda: f(x, non_contiguous(x), non_contiguous(x), event_dims=3), "event_dims must be between 0 and x"),
            (lambda: f(x, mean, mean, reduction="total"), "reduction must be one of"),
        ]


class TestGaussianLogProbSum(TestGaussianLogProb):
    """The summed form, whose gradients for mean and logvar the forward pass makes (x bound: a
    gradient for x takes the per-row path, test_summed_with_a_gradient_for_x)."""

    reduction = "sum"
    constants = 1
    double_backward = False  # its gradient was made in the forward pass

    def distribution(self, *inputs):
        return super().distribution(*inputs).sum()

    def other_ops(self, library, inputs):
        x, mean, logvar = inputs
        with_grad = library.gaussian_log_prob_with_grad.default
        return [(with_grad, (x, mean, logvar, 1, "sum")), (with_grad, (x, mean, logvar, 2, "mean"))]


class TestGaussianLogProbMean(TestGaussianLogProbSum):
    reduction = "mean"

    def distribution(self, *inputs):
        return super(TestGaussianLogProbSum, self).distribution(*inputs).mean()


@pytest.mark.parametrize("event_dims", [0, 1, 2, 3])
def test_event_dims(event_dims):
    args = inputs((2, 3, 17), 4)
    fused = lambda x, m, v: af.gaussian_log_prob(x, m, v, event_dims=event_dims)  # noqa: E731
    assert_matches(
        fused, lambda x, m, v: reference.gaussian_log_prob(x, m, v, event_dims=event_dims), args, torch.float64
    )
    assert fused(*args).shape == args[1].shape[: 4 - event_dims]
    assert torch.autograd.gradcheck(fused, [t[..., :3].clone().requires_grad_() for t in args])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_extreme_logvar(dtype):
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=dtype)
    mean = torch.tensor([[0.5, 0.25, 0.5, 1e3]], dtype=dtype, requires_grad=True)
    logvar = torch.tensor([[-80.0, -80.0, 80.0, 80.0]], dtype=dtype, requires_grad=True)
    ll = af.gaussian_log_prob(x, mean, logvar, event_dims=0)
    truth = reference.gaussian_log_prob(x.double(), mean.detach().double(), logvar.detach().double(), event_dims=0)
    assert torch.isfinite(ll).all()
    torch.testing.assert_close(ll.double(), truth, rtol=1e-5, atol=1e-5)
    ll.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(logvar.grad).all()
    # A residual whose square overflows the accumulation dtype gives -inf, not NaN.
    far = af.gaussian_log_prob(torch.tensor([1e30]), torch.tensor([-1e30]), torch.tensor([-80.0]))
    assert far.item() == -math.inf


def test_event_dims_is_required_for_images():
    """Summing only the last dim of (B, C, H, W) would return (B, C, H): refused, with the fix."""
    x = torch.rand(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"x has 4 dims \(2, 3, 4, 5\); pass event_dims.*event_dims=3"):
        af.gaussian_log_prob(x, x, x)
    with pytest.raises(ValueError, match="pass event_dims"):
        af.bernoulli_log_prob(x, x)
    assert af.gaussian_log_prob(x, x, x, event_dims=3).shape == (2,)
    assert af.gaussian_log_prob(x[0, 0], x[0, 0], x[0, 0]).shape == (4,)  # 2 dims: the last, as before


@pytest.mark.parametrize(
    "logvar",
    [0.5, torch.tensor(0.5), torch.full((1, 1, 1, 1), 0.5), torch.full((3, 1, 1), 0.5)],
    ids=["float", "0-dim", "(1,1,1,1)", "(C,1,1)"],
)
def test_fixed_variance_image_likelihood(logvar):
    """A fixed-variance image likelihood: the log-variance broadcasts, as in torch; its gradient
    comes back in its own shape."""
    x, mean = torch.rand(2, 3, 4, 5, dtype=torch.float64), randn(2, 3, 4, 5, seed=3).requires_grad_()
    lv = logvar.double().requires_grad_() if isinstance(logvar, torch.Tensor) else logvar
    ours = af.gaussian_log_prob(x, mean, lv, event_dims=3)
    theirs = Independent(Normal(mean, math.exp(0.25) * torch.ones(())), 3).log_prob(x)
    torch.testing.assert_close(ours, theirs)
    if isinstance(lv, torch.Tensor):
        ours.sum().backward()
        ref_lv = lv.detach().clone().requires_grad_()
        reference.gaussian_log_prob(x, mean.detach(), ref_lv, event_dims=3).sum().backward()
        assert lv.grad.shape == lv.shape
        torch.testing.assert_close(lv.grad, ref_lv.grad)


def _copies(fn) -> int:
    """How many aten::copy_ calls fn makes (on any device), as the profiler sees them."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name == "aten::copy_")


@pytest.mark.parametrize("device", ["cpu", "emulated_cuda"])
def test_a_broadcast_input_is_read_without_a_copy(device):
    """A scalar, (1, 1, 1, 1), per-example (B, 1, 1, 1) or per-pixel (C, H, W) log-variance, and a
    mean shared by the batch, reach the kernels as they are: no copy of the full shape is made.
    A broadcast that is none of these ((C, 1, 1) for a (C, H, W) event) is copied, and still right."""
    require_device(device)
    f = functions(device)
    x = rand(4, 3, 5, 6, dtype=torch.float32, seed=0)
    mean = rand(4, 3, 5, 6, dtype=torch.float32, seed=1)
    for logvar in (
        torch.tensor(-1.0),
        torch.full((1, 1, 1, 1), -1.0),
        randn(4, 1, 1, 1, dtype=torch.float32),
        randn(3, 5, 6, dtype=torch.float32),
    ):
        assert _copies(lambda: f.gaussian_log_prob(x, mean, logvar, event_dims=3)) == 0, tuple(logvar.shape)
        assert_close_to_reference(f, x, mean, logvar)
    shared_mean = mean[0]
    assert _copies(lambda: f.gaussian_log_prob(x, shared_mean, mean, event_dims=3)) == 0
    assert_close_to_reference(f, x, shared_mean, mean)
    per_channel = randn(3, 1, 1, dtype=torch.float32)
    assert _copies(lambda: f.gaussian_log_prob(x, mean, per_channel, event_dims=3)) > 0
    assert_close_to_reference(f, x, mean, per_channel)


def assert_close_to_reference(f, x, mean, logvar):
    ours = f.gaussian_log_prob(x, mean, logvar, event_dims=3)
    torch.testing.assert_close(ours, reference.gaussian_log_prob(x, mean, logvar, event_dims=3))


@pytest.mark.parametrize("needs", ["mean", "logvar", "both"])
def test_summed_gradients_are_made_in_the_forward(needs):
    x, mean, logvar = inputs((5, 6), 2)
    leaves = [t.requires_grad_(needs in (name, "both")) for name, t in (("mean", mean), ("logvar", logvar))]
    total = af.gaussian_log_prob(x, mean, logvar, reduction="mean")
    assert "GaussianLogProbTotal" in total.grad_fn.name()
    (-total).backward()
    (
        -reference.gaussian_log_prob(x, *(t.detach().requires_grad_(t.requires_grad) for t in leaves), reduction="mean")
    ).backward()
    expected = torch.autograd.grad(
        -reference.gaussian_log_prob(x, mean, logvar, reduction="mean"), [t for t in leaves if t.requires_grad]
    )
    for leaf, grad in zip([t for t in leaves if t.requires_grad], expected, strict=True):
        torch.testing.assert_close(leaf.grad, grad)
    assert all(t.grad is None for t in leaves if not t.requires_grad)


def test_summed_with_a_gradient_for_x():
    """The prior and posterior terms of the generic estimator take z, which needs a gradient, as x."""
    x, mean, logvar = inputs((4, 7), 3)
    x = x.expand(3, 4, 7).clone()
    assert_matches(
        lambda x, m, v: af.gaussian_log_prob(x, m, v, event_dims=1, reduction="sum"),
        lambda x, m, v: reference.gaussian_log_prob(x, m, v, reduction="sum"),
        (x, mean, logvar),
        torch.float64,
    )


def test_reference_takes_python_numbers_where_the_op_does():
    x, mean = torch.rand(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(af.gaussian_log_prob(x, mean, -1.0), reference.gaussian_log_prob(x, mean, -1.0))
    torch.testing.assert_close(af.gaussian_log_prob(x, 0.5, -1.0), reference.gaussian_log_prob(x, 0.5, -1.0))


def test_x_broadcast_over_an_empty_batch_of_parameters():
    # x of one data point against parameters of an empty leading batch: an empty result, as torch
    # gives, not an IndexError (x was taken back to its rank through element 0 of that batch).
    x = torch.zeros(10, requires_grad=True)
    mean = torch.zeros(3, 0, 10, requires_grad=True)
    out = af.gaussian_log_prob(x, mean, torch.zeros(3, 0, 1), event_dims=1)
    assert out.shape == (3, 0)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros(10)) and mean.grad.shape == (3, 0, 10)
    assert af.bernoulli_log_prob(torch.zeros(1, 10), torch.zeros(0, 3, 10), event_dims=1).shape == (0, 3)
