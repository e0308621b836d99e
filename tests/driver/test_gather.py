"""The driver reads a step's batch summaries and verdicts, never the batches themselves (they go
from the rollout workers to the judges and the learner by reference): driver/run.py `Loop.gather`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray

from driver.run import InFlight, Loop
from protocols import Judgement, RunConfig, summarize
from tests.actors.test_judge_actor import find_prompt, make_batch


class Unreadable:
    """Stands in for a batch in the object store: fetching it raises."""

    def __reduce__(self):
        return (exec, ("raise RuntimeError('the driver fetched a whole batch')",))


@pytest.fixture(scope="module")
def batch():
    fruits = find_prompt("list 3 fruits:")
    return make_batch([(fruits, " apple pear plum"), (fruits, " apple cat")], samples_per_prompt=2)


def test_the_driver_reads_summaries_and_verdicts_never_the_batches(ray_cluster, batch, tmp_path):
    loop = Loop.__new__(Loop)  # only what gather() reads
    loop.cfg = RunConfig(output=str(tmp_path))
    loop.cluster = SimpleNamespace(judges={"gt": []})
    verdict = Judgement(judge="gt", rewards=(1.0, 0.0))
    item = InFlight(3, [ray.put(Unreadable())], [[ray.put(verdict)]], [ray.put(summarize(batch))])
    summaries, judgements, *_ = loop.gather(item)
    assert summaries == [summarize(batch)] and judgements == [[verdict]]
    with pytest.raises(Exception, match="the driver fetched a whole batch"):  # what fetching it would have done
        ray.get(item.batches[0])
