"""Tests for common/tensors.py: token logprob gathering and the weight-sync probe."""

import math
from types import SimpleNamespace
from typing import get_args

import pytest
import torch

from common.tensors import DTYPES, gather_token_logprobs, probe_logprobs
from protocols import ModelConfig


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


class TableLM(torch.nn.Module):
    """A causal LM whose next-token logits depend on the current token only: logits[t] = table[ids[t]]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


def test_probe_logprobs_hand_computed():
    # token 0 predicts [0, ln 3] -> P(1) = 3/4; token 1 predicts [ln 2, ln 2] -> P(0) = 1/2
    model = TableLM(torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]], dtype=torch.bfloat16))
    rows = probe_logprobs(model, [[0, 1, 0], [1, 1]])
    assert len(rows) == 2 and len(rows[0]) == 2 and len(rows[1]) == 1
    assert rows[0] == pytest.approx([math.log(0.75), math.log(0.5)], abs=1e-2)  # bf16 table, float32 math
    assert rows[1] == pytest.approx([math.log(0.5)])
    assert probe_logprobs(model, []) == []


def test_every_configurable_dtype_has_a_torch_dtype():
    assert set(get_args(ModelConfig.model_fields["dtype"].annotation)) == set(DTYPES)
