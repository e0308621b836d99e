"""Tests for learner/algorithms/__init__.py: every registered AlgorithmSpec is well-formed."""

import pytest

from learner.algorithms import ALGORITHMS, AlgorithmSpec, dpo, get_algorithm, grpo, inpo, ipo, mnpo, osp, ppo, rdpo, rloo, sppo
from protocols import RunConfig

EXPECTED = {"mnpo": mnpo, "inpo": inpo, "dpo": dpo, "ipo": ipo, "rdpo": rdpo, "osp": osp,
            "sppo": sppo, "ppo": ppo, "grpo": grpo, "rloo": rloo}


def test_registry_holds_every_module_spec():
    assert set(ALGORITHMS) == set(EXPECTED)
    for name, module in EXPECTED.items():
        assert ALGORITHMS[name] is module.SPEC
        assert get_algorithm(name) is module.SPEC


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_is_well_formed(name):
    spec = ALGORITHMS[name]
    assert isinstance(spec, AlgorithmSpec) and spec.name == name
    assert spec.description.strip() and "\n" not in spec.description
    assert spec.config_section in RunConfig.model_fields
    section = getattr(RunConfig(), spec.config_section)  # the adapter's cfg
    assert type(section).__module__ == "protocols.config"
    if spec.family == "pair":
        assert callable(spec.pair_loss) and spec.sequence_loss is None
        assert spec.pair_loss is EXPECTED[name].pair_loss
        assert spec.advantage == "none" and not spec.needs_values
        assert hasattr(section, "pairing")
    else:
        assert spec.family == "sequence"
        assert callable(spec.sequence_loss) and spec.pair_loss is None
        assert spec.sequence_loss is EXPECTED[name].sequence_loss
        assert not spec.needs_opponents and spec.fixed_opponents is None
    # advantage estimators that need rewards are declared consistently
    if spec.advantage != "none":
        assert spec.needs_rewards and spec.needs_old_logprobs
    if spec.needs_opponents:
        assert spec.config_section == "mnpo"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown algorithm 'nope'; valid: ") as raised:
        get_algorithm("nope")
    assert str(raised.value).endswith(", ".join(sorted(ALGORITHMS)))


def test_specs_are_frozen_and_validated():
    with pytest.raises(AttributeError):
        ALGORITHMS["dpo"].name = "other"
    with pytest.raises(ValueError, match="pair-family spec needs pair_loss"):
        AlgorithmSpec(name="x", description="x", family="pair", config_section="dpo", needs_reference=True)
    with pytest.raises(ValueError, match="pair-family spec needs pair_loss"):  # a sequence spec with a pair loss
        AlgorithmSpec(name="x", description="x", family="sequence", config_section="ppo", needs_reference=True,
                      sequence_loss=ppo.sequence_loss, pair_loss=dpo.pair_loss)
    with pytest.raises(ValueError, match="sequence-family spec needs sequence_loss"):
        AlgorithmSpec(name="x", description="x", family="sequence", config_section="ppo", needs_reference=True)
