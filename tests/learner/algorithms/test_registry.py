"""Tests for learner/algorithms/__init__.py: every registered AlgorithmSpec is well-formed."""

import pytest

from learner.advantages import ESTIMATORS
from learner.algorithms import (
    ALGORITHMS,
    AlgorithmConfigError,
    AlgorithmSpec,
    algorithm_config,
    dpo,
    get_algorithm,
    grpo,
    inpo,
    ipo,
    mnpo,
    osp,
    ppo,
    rdpo,
    resolved,
    rloo,
    sppo,
)
from learner.pairing import PAIRINGS
from protocols import RunConfig

EXPECTED = {
    "mnpo": mnpo,
    "inpo": inpo,
    "dpo": dpo,
    "ipo": ipo,
    "rdpo": rdpo,
    "osp": osp,
    "sppo": sppo,
    "ppo": ppo,
    "grpo": grpo,
    "rloo": rloo,
}


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
    assert spec.config_section not in RunConfig.model_fields  # algorithm sections live beside their losses
    assert spec.config.__module__.startswith("learner.algorithms.")
    section = algorithm_config(RunConfig(algo=name))  # the loss's cfg: defaults when the section is unset
    assert type(section) is spec.config
    if spec.family == "pair":
        assert callable(spec.pair_loss) and spec.sequence_loss is None
        assert spec.pair_loss is EXPECTED[name].pair_loss
        assert spec.advantage is None and not spec.needs_values
        assert section.pairing in PAIRINGS
    else:
        assert spec.family == "sequence"
        assert callable(spec.sequence_loss) and spec.pair_loss is None
        assert spec.sequence_loss is EXPECTED[name].sequence_loss
        assert not spec.needs_opponents and spec.fixed_opponents is None
    # advantage estimators that need rewards are declared consistently
    if spec.advantage is not None:
        assert spec.advantage in ESTIMATORS
        assert spec.needs_rewards and spec.needs_old_logprobs
    if spec.needs_values:
        assert spec.critic_loss is not None and "critic_lr" in spec.config.model_fields
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
        AlgorithmSpec(name="x", description="x", family="pair", config=dpo.DPOConfig, config_section="dpo", needs_reference=True)
    with pytest.raises(ValueError, match="pair-family spec needs pair_loss"):  # a sequence spec with a pair loss
        AlgorithmSpec(
            name="x",
            description="x",
            family="sequence",
            config=ppo.PPOConfig,
            config_section="ppo",
            needs_reference=True,
            sequence_loss=ppo.sequence_loss,
            pair_loss=dpo.pair_loss,
        )
    with pytest.raises(ValueError, match="sequence-family spec needs sequence_loss"):
        AlgorithmSpec(
            name="x", description="x", family="sequence", config=ppo.PPOConfig, config_section="ppo", needs_reference=True
        )
    with pytest.raises(ValueError, match="unknown advantage estimator 'nope'; valid: gae, group, leave_one_out"):
        AlgorithmSpec(
            name="x",
            description="x",
            family="sequence",
            config=ppo.PPOConfig,
            config_section="ppo",
            needs_reference=True,
            sequence_loss=ppo.sequence_loss,
            advantage="nope",
        )
    with pytest.raises(ValueError, match="a pair-family config needs a `pairing` field"):
        AlgorithmSpec(
            name="x",
            description="x",
            family="pair",
            config=ppo.PPOConfig,
            config_section="ppo",
            needs_reference=True,
            pair_loss=dpo.pair_loss,
        )


def test_algorithm_config_reads_only_its_own_section():
    assert algorithm_config(RunConfig(algo="ipo", dpo={"beta": 0.3})) == dpo.DPOConfig(beta=0.3)  # IPO reads `dpo`
    with pytest.raises(
        AlgorithmConfigError,
        match=r"sets section\(s\) 'mnpo', which algorithm 'dpo' does not read "
        r"\('mnpo' is read by inpo, mnpo\); dpo reads 'dpo'",
    ):
        algorithm_config(RunConfig(algo="dpo", mnpo={"eta": 0.9}))
    with pytest.raises(AlgorithmConfigError, match=r"'mnpoo' is not a config section"):  # a misspelt section
        algorithm_config(RunConfig(algo="mnpo", mnpoo={"eta": 0.9}))
    with pytest.raises(AlgorithmConfigError, match=r"field 'mnpo.pairing': .*unknown pairing 'best'; valid: best_vs_worst"):
        algorithm_config(RunConfig(algo="mnpo", mnpo={"pairing": "best"}))
    with pytest.raises(AlgorithmConfigError, match=r"field 'ppo.epochs': Input should be greater than or equal to 1 \(got 0\)"):
        algorithm_config(RunConfig(algo="ppo", ppo={"epochs": 0}))
    with pytest.raises(AlgorithmConfigError, match=r"field 'grpo.kl_coeff': Extra inputs are not permitted"):
        algorithm_config(RunConfig(algo="grpo", grpo={"kl_coeff": 0.1}))


def test_resolved_writes_the_section_out_in_full_and_round_trips():
    run = resolved(RunConfig(algo="mnpo", mnpo={"eta": 0.9}))
    assert run.sections == {"mnpo": mnpo.MNPOConfig(eta=0.9).model_dump(mode="json")}
    again = RunConfig.model_validate(run.model_dump(mode="json"))  # what OUTPUT/config.yaml holds, read back
    assert algorithm_config(again) == mnpo.MNPOConfig(eta=0.9)


def test_a_stray_scalar_is_not_a_section():
    with pytest.raises(ValueError, match=r"unknown field 'stepz' \(got 3\)"):
        RunConfig.model_validate({"stepz": 3})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_reference_is_one_decision_per_spec_and_config(name):
    """The reference model and its pass exist only when the loss reads them: never for SPPO, always
    for the pair family (pi_ref is inside its loss), for PPO / GRPO / RLOO only at kl_coef > 0."""
    spec = ALGORITHMS[name]
    default = algorithm_config(RunConfig(algo=name))
    if not spec.needs_reference:
        assert name == "sppo" and not spec.reads_reference(default)
    elif spec.family == "pair":
        assert spec.kl_weight is None and spec.reads_reference(default)
    else:
        assert spec.reads_reference(default) and default.kl_coef > 0
        assert not spec.reads_reference(spec.config(kl_coef=0.0))
        assert spec.reads_reference(spec.config(kl_coef=1e-6))


def test_kl_weight_is_refused_where_it_cannot_turn_the_reference_off():
    with pytest.raises(ValueError, match="kl_weight is for a sequence-family spec that declares needs_reference"):
        AlgorithmSpec(
            name="x",
            description="x",
            family="pair",
            config=dpo.DPOConfig,
            config_section="dpo",
            needs_reference=True,
            pair_loss=dpo.pair_loss,
            kl_weight=lambda cfg: cfg.beta,
        )
    with pytest.raises(ValueError, match="kl_weight is for a sequence-family spec that declares needs_reference"):
        AlgorithmSpec(
            name="x",
            description="x",
            family="sequence",
            config=sppo.SPPOConfig,
            config_section="sppo",
            needs_reference=False,
            sequence_loss=sppo.sequence_loss,
            kl_weight=lambda cfg: 1.0,
        )
