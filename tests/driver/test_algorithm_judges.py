"""driver/plan.py: the judges must give what the algorithm trains on, and OSP brings its own manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.loading import load_manifest
from driver.plan import check_algorithm_judges, default_judges
from learner.algorithms import ALGORITHMS
from protocols import RunConfig

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = {
    name: load_manifest(REPO / "deploy/judges" / f"{name}.yaml")
    for name in ("default", "pairwise", "self", "population", "mixture")
}


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo"])
@pytest.mark.parametrize("manifest", ["pairwise", "self", "population"])
def test_reward_algorithms_refuse_preference_only_judges(algo, manifest):
    with pytest.raises(ValueError) as err:
        check_algorithm_judges(algo, MANIFESTS[manifest], f"{manifest}.yaml")
    judge = MANIFESTS[manifest].judges[0]
    message = str(err.value)
    assert message.startswith(f"{manifest}.yaml: judge {judge.name!r}: field 'kind'")
    assert f"algorithm {algo!r} needs scalar rewards" in message and judge.kind in message


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo", "mnpo", "dpo", "sppo"])
def test_pointwise_manifests_suit_every_non_self_algorithm(algo):
    for name in ("default", "mixture"):
        check_algorithm_judges(algo, MANIFESTS[name], name)  # no error


def test_osp_needs_a_self_judge_and_gets_one_by_default():
    with pytest.raises(ValueError, match="default.yaml: field 'judges': algorithm 'osp' needs a judge of kind 'self'"):
        check_algorithm_judges("osp", MANIFESTS["default"], "default.yaml")
    check_algorithm_judges("osp", MANIFESTS["self"], "self.yaml")
    assert default_judges(RunConfig(algo="osp")).judges == "deploy/judges/self.yaml"
    assert default_judges(RunConfig(algo="osp", judges="mine.yaml")).judges == "mine.yaml"  # the user's choice wins
    assert default_judges(RunConfig(algo="mnpo")).judges == RunConfig().judges


def test_every_default_manifest_exists_and_suits_its_algorithm():
    for name, spec in ALGORITHMS.items():
        if spec.default_judges:
            check_algorithm_judges(name, load_manifest(REPO / spec.default_judges), spec.default_judges)
