"""Tests for learner/ops.py: masked reductions, sequence logprobs, KL estimators (gathering: tests/common)."""

import math

import pytest
import torch

from learner.ops import kl_k1, kl_k3, masked_mean, masked_sum, sequence_logprobs


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
