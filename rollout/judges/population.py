"""Population judge: heterogeneous annotators behind one judge.

Each member is built with `build_judge` too. It implements `compare` only, so it labels
preferences, never rewards.

Each member gives P(first > second) for a triple: pairwise members (pairwise, http) through their
`compare`, pointwise members (rule, reward_model) through `bradley_terry` of their own two scores
with the member's `temperature` (0 = a hard 1 / 0.5 / 0 vote). Every member is called once per
batch on all the triples it labels (pointwise members score each distinct (prompt, response)
once), never once per pair. Then, by `mode`:
- "draw": each triple is labelled by one member, drawn with probability weight / sum(weights) by a
  random.Random seeded from sha256(seed, prompt, sorted(first, second)). The draw depends only on
  the triple, not on the batch or the call: it is reproducible, and (a, b) and (b, a) get the same
  member, so P(a > b) + P(b > a) = 1 whenever the members' own P is order-symmetric.
- "vote": the weighted mean of all members' P.

Why preferences can be non-transitive: each member ranks responses by its own criterion, which is
transitive; but a majority over criteria need not be. The built-in task's three annotator groups
(rollout/tasks/wordlist.py: topical, exact_count, varied) as hard-voting members with equal weights
prefer A > B > C > A for A = " apple pear plum peach apple", B = " apple apple cat",
C = " apple cat dog red" on "list 3 fruits:" (each preference carried by two of three groups; see
tests/rollout/test_wordlist.py). No scalar reward reproduces such a cycle, which is what
preference-based learners (SPPO, MNPO) are for. In "draw" mode the expected label is the vote's,
but each single label comes from one annotator, as with a crowd of human raters.

Missing verdicts: a member's missing verdict (base.NoVerdict, or output that is not a finite
number) is the population's for that triple, named after the member ("member 'rm': returned nan");
in "vote" mode a triple any member could not judge has no verdict. The population's `on_failure`
applies (members' own are refused by the schema).

Members of kind `self` are not allowed: they would need the policy's weights after every update,
which the driver sends only to top-level self judges (the manifest schema refuses them with a clear
error). Members' `replicas`/`num_cpus`/`num_gpus` are ignored: every member runs inside the
population's own actor, with the population's resources.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

from protocols import PopulationJudgeSpec
from rollout.judges.base import Judge, NoVerdict, PairwiseComparer, PointwiseJudge, Verdict, as_verdict, bradley_terry


class PopulationJudge:
    def __init__(self, spec: PopulationJudgeSpec, members: Sequence[Judge]):
        """`members[i]` is the judge built from `spec.members[i]` (see rollout.judges.build_judge)."""
        if len(members) != len(spec.members):
            raise ValueError(f"population {spec.name!r}: {len(members)} judges for {len(spec.members)} member specs")
        self.name = spec.name
        self.mode = spec.mode
        self.seed = spec.seed
        self.specs = spec.members
        self.judges = list(members)
        self.weights = [m.weight for m in spec.members]

    def compare(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[Verdict]:
        """P(first[i] preferred over second[i]) by the population; > 0.5 favours first (NoVerdict where
        the member drawn, or in 'vote' mode any member, has none)."""
        n = len(prompts)
        if not n == len(first) == len(second):
            raise ValueError(f"got {n} prompts, {len(first)} first and {len(second)} second responses")
        if self.mode == "vote":
            total = sum(self.weights)
            votes: list[Verdict] = [0.0] * n
            for m, weight in enumerate(self.weights):
                for i, p in enumerate(self.member_probabilities(m, prompts, first, second)):
                    so_far = votes[i]
                    if isinstance(so_far, NoVerdict):
                        continue
                    votes[i] = p if isinstance(p, NoVerdict) else so_far + weight * p / total
            return votes
        drawn = [self.draw(p, a, b) for p, a, b in zip(prompts, first, second)]
        out: list[Verdict] = [0.5] * n
        for m in range(len(self.judges)):
            rows = [i for i, d in enumerate(drawn) if d == m]
            if rows:
                probabilities = self.member_probabilities(
                    m, [prompts[i] for i in rows], [first[i] for i in rows], [second[i] for i in rows]
                )
                for i, p in zip(rows, probabilities):
                    out[i] = p
        return out

    def draw(self, prompt: str, first: str, second: str) -> int:
        """Index of the member labelling this triple: by weight, a pure function of (seed, triple)."""
        low, high = sorted((first, second))  # (a, b) and (b, a) draw the same member
        key = json.dumps([self.seed, prompt, low, high]).encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        return rng.choices(range(len(self.weights)), weights=self.weights)[0]

    def member_probabilities(self, m: int, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[Verdict]:
        """Member m's P(first > second) for every triple, in one call of the member (NoVerdict, naming
        the member, where it has none)."""
        judge, spec = self.judges[m], self.specs[m]

        def named(value: object) -> Verdict:
            verdict = as_verdict(value)
            if isinstance(verdict, NoVerdict):
                return NoVerdict(f"member {spec.name!r}: {verdict.reason}", verdict.error)
            return verdict

        probabilities: list[Verdict]
        if isinstance(judge, PairwiseComparer):
            probabilities = [named(p) for p in judge.compare(prompts, first, second)]
            for i, p in enumerate(probabilities):
                if not isinstance(p, NoVerdict) and not 0.0 <= p <= 1.0:
                    probabilities[i] = NoVerdict(f"member {spec.name!r}: returned probability {p}, outside [0, 1]")
        elif isinstance(judge, PointwiseJudge):
            keys = list(dict.fromkeys([*zip(prompts, first), *zip(prompts, second)]))  # distinct, in order
            scores = judge.score([p for p, _ in keys], [r for _, r in keys])
            if len(scores) != len(keys):
                raise ValueError(f"member {spec.name!r} returned {len(scores)} scores for {len(keys)} responses")
            score = dict(zip(keys, (named(s) for s in scores)))
            probabilities = []
            for p, a, b in zip(prompts, first, second):
                ra, rb = score[(p, a)], score[(p, b)]
                if isinstance(ra, NoVerdict) or isinstance(rb, NoVerdict):
                    probabilities.append(ra if isinstance(ra, NoVerdict) else rb)
                else:
                    probabilities.append(bradley_terry(ra, rb, spec.temperature))
        else:
            raise TypeError(f"member {spec.name!r} implements neither score nor compare")
        if len(probabilities) != len(prompts):
            raise ValueError(f"member {spec.name!r} returned {len(probabilities)} probabilities for {len(prompts)} pairs")
        return probabilities
