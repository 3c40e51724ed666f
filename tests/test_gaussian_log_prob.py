import math

import pytest
import torch
from torch.distributions import Independent, Normal

import aevb_fast as af
from aevb_fast import reference

from testing import (
    DATA_SHAPES,
    DEVICES,
    DTYPES,
    LOW_PRECISION,
    assert_low_precision_ok,
    assert_matches,
    non_contiguous,
    rand,
    randn,
    functions,
    require_device,
    tensor_device,
)


def inputs(shape, num_samples=None, dtype=torch.float64, device="cpu"):
    param_shape = shape if num_samples is None else (num_samples, *shape)
    return (
        rand(*shape, dtype=dtype, device=device, seed=0),
        rand(*param_shape, dtype=dtype, device=device, seed=1),
        randn(*param_shape, dtype=dtype, device=device, seed=2, scale=0.5, shift=-2.0),
    )


def fn(event_dims=1, device="cpu"):
    ops = functions(device)
    return (
        lambda x, m, v: ops.gaussian_log_prob(x, m, v, event_dims=event_dims),
        lambda x, m, v: reference.gaussian_log_prob(x, m, v, event_dims=event_dims),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", DATA_SHAPES)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_matches_reference_float64(device, shape, num_samples):
    require_device(device)
    assert_matches(*fn(device=device), inputs(shape, num_samples, device=tensor_device(device)), torch.float64)


@pytest.mark.parametrize("event_dims", [0, 1, 2, 3])
def test_event_dims(event_dims):
    args = inputs((2, 3, 17), 4)
    assert_matches(*fn(event_dims), args, torch.float64)
    assert af.gaussian_log_prob(*args, event_dims=event_dims).shape == args[1].shape[: 4 - event_dims]


@pytest.mark.parametrize("shape", DATA_SHAPES)
def test_matches_torch_distributions(shape):
    x, mean, logvar = inputs(shape, 3)
    expected = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(x)
    torch.testing.assert_close(af.gaussian_log_prob(x, mean, logvar), expected, rtol=1e-10, atol=1e-9)


def test_gradcheck():
    args = tuple(t.requires_grad_() for t in inputs((3, 7), 2))
    assert torch.autograd.gradcheck(lambda x, m, v: af.gaussian_log_prob(x, m, v), args)
    assert torch.autograd.gradcheck(lambda x, m, v: af.gaussian_log_prob(x, m, v, event_dims=0), args)


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    x, mean, logvar = inputs((4, 9), 2, dtype=dtype)
    ops = torch.ops.aevb_fast
    torch.library.opcheck(ops.gaussian_log_prob.default, (x, mean.clone().requires_grad_(), logvar, 1))
    torch.library.opcheck(ops.gaussian_log_prob.default, (x.clone().requires_grad_(), mean, logvar, 2))
    grad = randn(2, 4, dtype=af.ops.accumulate_dtype(dtype), seed=5)
    torch.library.opcheck(ops.gaussian_log_prob_backward.default, (grad, x, mean, logvar, 1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(device, dtype):
    require_device(device)
    args = inputs((100, 784), 2, dtype=dtype, device=tensor_device(device))
    assert functions(device).gaussian_log_prob(*args).dtype == af.ops.accumulate_dtype(dtype)
    if dtype in LOW_PRECISION:
        assert_low_precision_ok(*fn(device=device), inputs((100, 784), 2, device=tensor_device(device)), dtype)
    else:
        assert_matches(*fn(device=device), args, dtype)


def test_non_contiguous():
    x, mean, logvar = inputs((6, 33), 2)
    assert_matches(*fn(), (non_contiguous(x), non_contiguous(mean), logvar), torch.float64)
    assert_matches(*fn(), (x.t().contiguous().t(), mean, non_contiguous(logvar)), torch.float64)


@pytest.mark.parametrize("shape, num_samples", [((0, 5), None), ((5, 0), 2), ((0,), None)])
def test_empty(shape, num_samples):
    x, mean, logvar = inputs(shape, num_samples)
    torch.testing.assert_close(af.gaussian_log_prob(x, mean, logvar), reference.gaussian_log_prob(x, mean, logvar))
    mean.requires_grad_()
    af.gaussian_log_prob(x, mean, logvar).sum().backward()
    assert mean.grad.shape == mean.shape


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


def test_bad_input():
    x, mean = torch.zeros(3, 4), torch.zeros(2, 3, 4)
    cases = [
        (lambda: af.gaussian_log_prob(torch.zeros(3, 5), mean, mean), "x has shape"),
        (lambda: af.gaussian_log_prob(x, mean, torch.zeros(2, 3, 5)), "logvar has shape"),
        (lambda: af.gaussian_log_prob(x.long(), mean.long(), mean.long()), "x must be a float"),
        (lambda: af.gaussian_log_prob(x, mean, mean.double()), "logvar has dtype"),
        (lambda: af.gaussian_log_prob(torch.zeros(()), torch.zeros(()), torch.zeros(())), "at least one dimension"),
        (lambda: af.gaussian_log_prob(x, mean, mean, event_dims=3), "event_dims must be between"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize("other", ["meta", "cuda"])
def test_mixed_devices(other):
    # meta runs everywhere: it goes through the fake implementation's device check.
    if other == "cuda":
        require_device("cuda")
    with pytest.raises(ValueError, match="on the same device"):
        af.gaussian_log_prob(torch.zeros(3, 4), torch.zeros(3, 4, device=other), torch.zeros(3, 4, device=other))
