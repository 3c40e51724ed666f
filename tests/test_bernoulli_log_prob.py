import pytest
import torch
from torch.distributions import Bernoulli, Independent

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
    logits_shape = shape if num_samples is None else (num_samples, *shape)
    return rand(*shape, dtype=dtype, device=device, seed=0), randn(
        *logits_shape, dtype=dtype, device=device, seed=1, scale=3.0
    )


def fn(event_dims=1, device="cpu"):
    ops = functions(device)
    return (
        lambda x, logits: ops.bernoulli_log_prob(x, logits, event_dims=event_dims),
        lambda x, logits: reference.bernoulli_log_prob(x, logits, event_dims=event_dims),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", DATA_SHAPES)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_matches_reference_float64(device, shape, num_samples):
    require_device(device)
    assert_matches(*fn(device=device), inputs(shape, num_samples, device=tensor_device(device)), torch.float64)


@pytest.mark.parametrize("event_dims", [0, 1, 2, 3])
def test_event_dims(event_dims):
    x, logits = inputs((2, 3, 17), 4)
    assert_matches(*fn(event_dims), (x, logits), torch.float64)
    assert af.bernoulli_log_prob(x, logits, event_dims=event_dims).shape == logits.shape[: 4 - event_dims]


@pytest.mark.parametrize("shape", DATA_SHAPES)
def test_matches_torch_distributions(shape):
    x, logits = inputs(shape, 3)
    x = torch.bernoulli(x)  # Bernoulli.log_prob validates binary values
    expected = Independent(Bernoulli(logits=logits), 1).log_prob(x.expand_as(logits))
    torch.testing.assert_close(af.bernoulli_log_prob(x, logits), expected, rtol=1e-10, atol=1e-10)


def test_gradcheck():
    x, logits = (t.requires_grad_() for t in inputs((3, 7), 2))
    assert torch.autograd.gradcheck(lambda x, l: af.bernoulli_log_prob(x, l), (x, logits))
    assert torch.autograd.gradcheck(lambda x, l: af.bernoulli_log_prob(x, l, event_dims=2), (x, logits))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    x, logits = inputs((4, 9), 2, dtype=dtype)
    ops = torch.ops.aevb_fast
    torch.library.opcheck(ops.bernoulli_log_prob.default, (x, logits.clone().requires_grad_(), 1))
    torch.library.opcheck(ops.bernoulli_log_prob.default, (x.clone().requires_grad_(), logits, 2))
    grad = randn(2, 4, dtype=af.ops.accumulate_dtype(dtype), seed=5)
    torch.library.opcheck(ops.bernoulli_log_prob_backward.default, (grad, x, logits, 1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(device, dtype):
    require_device(device)
    x, logits = inputs((100, 784), 2, dtype=dtype, device=tensor_device(device))
    assert functions(device).bernoulli_log_prob(x, logits).dtype == af.ops.accumulate_dtype(dtype)
    if dtype in LOW_PRECISION:
        assert_low_precision_ok(*fn(device=device), inputs((100, 784), 2, device=tensor_device(device)), dtype)
    else:
        assert_matches(*fn(device=device), (x, logits), dtype)


def test_non_contiguous():
    x, logits = inputs((6, 33), 2)
    assert_matches(*fn(), (non_contiguous(x), non_contiguous(logits)), torch.float64)
    assert_matches(*fn(), (x.t().contiguous().t(), logits), torch.float64)


def test_x_broadcast_is_not_copied():
    x, logits = inputs((64, 784), 8)
    x.requires_grad_(False)
    logits.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        af.bernoulli_log_prob(x, logits)
    assert sum(saved) == x.numel() + logits.numel()


@pytest.mark.parametrize("shape, num_samples", [((0, 5), None), ((5, 0), 2), ((0,), None)])
def test_empty(shape, num_samples):
    x, logits = inputs(shape, num_samples)
    out = af.bernoulli_log_prob(x, logits)
    torch.testing.assert_close(out, reference.bernoulli_log_prob(x, logits))
    logits.requires_grad_()
    af.bernoulli_log_prob(x, logits).sum().backward()
    assert logits.grad.shape == logits.shape


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


def test_bad_input():
    x, logits = torch.zeros(3, 4), torch.zeros(2, 3, 4)
    cases = [
        (lambda: af.bernoulli_log_prob(torch.zeros(3, 5), logits), "x has shape"),
        (lambda: af.bernoulli_log_prob(torch.zeros(2, 2, 3, 4), logits), "x has shape"),
        (lambda: af.bernoulli_log_prob(x.long(), logits.long()), "x must be a float"),
        (lambda: af.bernoulli_log_prob(x.double(), logits), "x has dtype"),
        (lambda: af.bernoulli_log_prob(torch.zeros(()), torch.zeros(())), "at least one dimension"),
        (lambda: af.bernoulli_log_prob(x, logits, event_dims=3), "event_dims must be between"),
        (lambda: af.bernoulli_log_prob(x, logits, event_dims=-1), "event_dims must be between"),
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
        af.bernoulli_log_prob(torch.zeros(3, 4), torch.zeros(3, 4, device=other))
