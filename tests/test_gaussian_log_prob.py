import math

import pytest
import torch
from torch.distributions import Independent, Normal

import aevb_fast as af
from aevb_fast import reference

from op_tester import OpTester
from testing import DATA_SHAPES, assert_matches, rand, randn


def inputs(shape, num_samples=None, dtype=torch.float64, device="cpu"):
    param_shape = shape if num_samples is None else (num_samples, *shape)
    return [
        rand(*shape, dtype=dtype, device=device, seed=0),
        rand(*param_shape, dtype=dtype, device=device, seed=1),
        randn(*param_shape, dtype=dtype, device=device, seed=2, scale=0.5, shift=-2.0),
    ]


class TestGaussianLogProb(OpTester):
    op = "gaussian_log_prob"
    cases = [(shape, samples) for shape in DATA_SHAPES for samples in (None, 3)]
    empty_cases = [((0, 5), None), ((5, 0), 2), ((0,), None)]
    gradcheck_case = ((3, 7), 2)
    dtype_case = ((100, 784), 2)

    def make_inputs(self, case, dtype=torch.float64, device="cpu"):
        return inputs(*case, dtype=dtype, device=device)

    def call(self, f, x, mean, logvar):
        return f.gaussian_log_prob(x, mean, logvar)

    def distribution(self, x, mean, logvar):
        return Independent(Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(x)

    def op_args(self, library, inputs):
        x, mean, logvar = inputs
        return [(x, mean.clone().requires_grad_(), logvar, 1), (x.clone().requires_grad_(), mean, logvar, 2)]

    def backward_op_args(self, args, out_grads):
        return (out_grads[0], *args)

    def bad_inputs(self):
        x, mean, z, f = torch.zeros(3, 4), torch.zeros(2, 3, 4), torch.zeros, af.gaussian_log_prob
        return [
            (lambda: f(z(3, 5), mean, mean), "x has shape"),
            (lambda: f(x, mean, z(2, 3, 5)), "logvar has shape"),
            (lambda: f(x.long(), mean.long(), mean.long()), "x must be a float"),
            (lambda: f(x, mean, mean.double()), "logvar has dtype"),
            (lambda: f(z(()), z(()), z(())), "at least one dimension"),
            (lambda: f(x, mean, mean, event_dims=3), "event_dims must be between"),
        ]


@pytest.mark.parametrize("event_dims", [0, 1, 2, 3])
def test_event_dims(event_dims):
    args = inputs((2, 3, 17), 4)
    fused = lambda x, m, v: af.gaussian_log_prob(x, m, v, event_dims=event_dims)  # noqa: E731
    assert_matches(fused, lambda x, m, v: reference.gaussian_log_prob(x, m, v, event_dims=event_dims), args, torch.float64)
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
