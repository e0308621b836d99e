"""Tests for learner/ops.py: logprob gathering, masked reductions, KL estimators."""

import math

import pytest
import torch

from learner.ops import gather_token_logprobs, kl_k1, kl_k3, masked_mean, masked_sum, sequence_logprobs


def reference_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The obvious (memory-hungry) implementation."""
    return torch.log_softmax(logits.double(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def test_gather_hand_computed():
    # softmax([0, ln 3]) = [1/4, 3/4]; softmax([ln 2, ln 2]) = [1/2, 1/2]
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]]])
    labels = torch.tensor([[1, 0]])
    out = gather_token_logprobs(logits, labels)
    assert out.shape == (1, 2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[math.log(0.75), math.log(0.5)]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_gather_matches_log_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 11, generator=g) * 4).to(dtype)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    out = gather_token_logprobs(logits, labels)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    # low-precision logits are upcast before the softmax, so compare against the upcast values
    torch.testing.assert_close(out.double(), reference_logprobs(logits, labels), rtol=1e-5, atol=1e-5)
    assert (out <= 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_gradient_matches_log_softmax(dtype):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 4, 7, generator=g).to(dtype)
    labels = torch.randint(0, 7, (2, 4), generator=g)
    weights = torch.randn(2, 4, generator=g)
    ours = base.clone().requires_grad_(True)
    (gather_token_logprobs(ours, labels) * weights).sum().backward()
    ref = base.float().clone().requires_grad_(True)
    (torch.log_softmax(ref, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * weights).sum().backward()
    assert ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad.float(), ref.grad, rtol=1e-2, atol=1e-2)


def test_gather_extreme_logits_stay_finite():
    logits = torch.tensor([[[1000.0, -1000.0, 0.0]]])
    out = gather_token_logprobs(logits, torch.tensor([[0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0]]))
    assert torch.isfinite(gather_token_logprobs(logits, torch.tensor([[1]]))).all()


def test_gather_empty_batch_and_bad_shapes():
    assert gather_token_logprobs(torch.zeros(0, 3, 5, dtype=torch.bfloat16), torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"logits \[B, T, V\]"):
        gather_token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        gather_token_logprobs(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_masked_sum_and_mean_hand_computed():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    # row 0: 1 + 3 = 4, mean 2; row 1 all masked -> 0 (not NaN)
    torch.testing.assert_close(masked_sum(x, mask, dim=1), torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 0.0]))
    # over everything: 4 / 2
    torch.testing.assert_close(masked_sum(x, mask), torch.tensor(4.0))
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor(2.0))
    # over dim 0: columns [1, -, 3] each counted once
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([1.0, 0.0, 3.0]))


def test_masked_ops_accept_int_and_float_masks_and_broadcast():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    for mask in (torch.tensor([[1, 0], [1, 1]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])):
        torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([1.0, 3.5]))
    # a [1, 2] mask broadcast over rows: picks column 1 of every row
    torch.testing.assert_close(masked_mean(x, torch.tensor([[False, True]])), torch.tensor(3.0))


def test_masked_ops_ignore_nan_and_inf_under_the_mask():
    x = torch.tensor([[1.0, float("nan"), float("-inf")]], requires_grad=True)
    mask = torch.tensor([[True, False, False]])
    out = masked_mean(x, mask, dim=-1)
    torch.testing.assert_close(out, torch.tensor([1.0]), check_dtype=True, msg="masked NaN/inf leaked")
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[1.0, 0.0, 0.0]]))


def test_masked_mean_all_masked_is_zero_everywhere():
    x = torch.randn(3, 4)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    assert masked_mean(x, mask).item() == 0.0
    assert (masked_mean(x, mask, dim=-1) == 0).all()


def test_sequence_logprobs_sum_and_mean():
    token_logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0], [-4.0, -4.0, -4.0]])
    response_mask = torch.tensor([[False, True, True], [True, True, False], [False, False, False]])
    # row 0: -2 + -3 = -5 (mean -2.5); row 1: -1 (mean -0.5); row 2: empty response -> 0
    torch.testing.assert_close(sequence_logprobs(token_logprobs, response_mask, "sum"), torch.tensor([-5.0, -1.0, 0.0]))
    torch.testing.assert_close(sequence_logprobs(token_logprobs, response_mask, "mean"), torch.tensor([-2.5, -0.5, 0.0]))
    with pytest.raises(ValueError, match="'max'.*valid: sum, mean"):
        sequence_logprobs(token_logprobs, response_mask, "max")


def test_kl_estimators_hand_computed():
    logprobs = torch.tensor([[math.log(0.5), math.log(0.25)]])
    ref_logprobs = torch.tensor([[math.log(0.25), math.log(0.25)]])
    # k1 = logp - logp_ref = [ln 2, 0]
    torch.testing.assert_close(kl_k1(logprobs, ref_logprobs), torch.tensor([[math.log(2.0), 0.0]]))
    # k3: d = logp_ref - logp = [-ln 2, 0]; exp(d) - d - 1 = [0.5 + ln 2 - 1, 0]
    torch.testing.assert_close(kl_k3(logprobs, ref_logprobs), torch.tensor([[math.log(2.0) - 0.5, 0.0]]))


def test_kl_estimators_are_unbiased_on_a_categorical():
    # KL(p || q) for p = [0.7, 0.2, 0.1], q = [0.3, 0.3, 0.4]; E_p[k1] = E_p[k3] = KL exactly
    p = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    kl = (p * (p / q).log()).sum()
    k1 = kl_k1(p.log(), q.log())
    k3 = kl_k3(p.log(), q.log())
    torch.testing.assert_close((p * k1).sum(), kl)
    torch.testing.assert_close((p * k3).sum(), kl)
    assert (k3 >= 0).all() and (k1 < 0).any()


def test_kl_k3_precise_near_zero():
    logprobs = torch.tensor([-1.0], dtype=torch.float32)
    ref_logprobs = logprobs + 1e-4
    # d = 1e-4: exp(d) - d - 1 = d^2 / 2 + d^3 / 6 ~ 5.0002e-9; naive float32 exp(d) - d - 1 loses it
    torch.testing.assert_close(kl_k3(logprobs, ref_logprobs), torch.tensor([5.0e-9]), rtol=1e-2, atol=0.0)
