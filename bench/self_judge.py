"""How well does SmolLM2-135M-Instruct judge its own samples? Verdict accuracy per task and reading.

    python bench/self_judge.py                          # instruct and arithmetic, 48 held-out prompts each
    python bench/self_judge.py --tasks instruct --prompts 24 --k 4

For each chat task: the policy (`builtin:smollm2-135m-instruct`) samples K responses per held-out
prompt with vLLM at temperature 1 (through its chat template, as a run does); every within-prompt
pair whose ground truths differ is a test pair. Each judge variant gives P(first better) per pair;
a pair is judged right when P > 0.5 agrees with the ground truth (P == 0.5 counts as half right).
Reported per variant: accuracy, mean |P - 0.5| (strength), and accuracy on the most confident half.

Variants (all average both presentation orders, as the `self` judge does):
    ab-chat        the default `self` judge: A/B verdict after the default template, chat template on
    ab-raw         the same text without the chat template
    ab-rubric      chat, a template that states the criterion (follow every instruction / be correct)
    yesno-chat     pointwise: P(Yes) that one response follows the instruction, read for both
                   responses; P(first better) = sigmoid(logit_yes(first) - logit_yes(second))
Not a test: prints a markdown table (and writes it with --out).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from driver.builtin import BUILTIN_SMOLLM2, resolve_model_path  # noqa: E402
from protocols import PromptBatch, RolloutConfig, TaskConfig  # noqa: E402
from protocols.judges import DEFAULT_PAIRWISE_TEMPLATE  # noqa: E402
from rollout.judges.base import both_orders  # noqa: E402
from rollout.judges.rule import resolve_function  # noqa: E402
from rollout.judges.verdict import VerdictScorer, load_causal_lm  # noqa: E402
from rollout.tasks import load_task  # noqa: E402

RUBRIC = (
    "Instruction: {prompt}\nResponse A: {first}\nResponse B: {second}\n"
    "Which response follows the instruction better and answers it correctly? Answer A or B: "
)
YESNO = (
    "Instruction: {prompt}\nResponse: {first}\nDoes the response follow the instruction exactly and correctly? Answer Yes or No: "
)


def sample_pairs(path: str, task_name: str, prompts: int, k: int, seed: int):
    from rollout.sampler import VLLMSampler

    task = load_task(TaskConfig(name=task_name))
    truth = resolve_function(task.ground_truth)
    sampler = VLLMSampler(path, RolloutConfig(max_response_tokens=64, max_model_len=512), dtype="float32", seed=seed)
    batch = sampler.generate(PromptBatch(step=0, prompts=task.heldout[:prompts], samples_per_prompt=k), seed=seed)
    del sampler
    pairs = []
    for group in batch.groups():
        scores = [truth(r.prompt_text, r.response_text) for r in group]
        for i in range(k):
            for j in range(i + 1, k):
                if scores[i] != scores[j]:
                    pairs.append((group[i].prompt_text, group[i].response_text, group[j].response_text, scores[i] > scores[j]))
    mean = sum(truth(r.prompt_text, r.response_text) for r in batch.rollouts) / len(batch.rollouts)
    return pairs, mean


def judge(variant: str, model, tokenizer, pairs) -> list[float]:
    prompts, first, second = ([p[i] for p in pairs] for i in range(3))
    if variant.startswith("ab-"):
        template = RUBRIC if variant == "ab-rubric" else DEFAULT_PAIRWISE_TEMPLATE
        scorer = VerdictScorer(variant, model, tokenizer, template, ("A", "B"), 16, "off" if variant == "ab-raw" else "on")
        return scorer.compare(prompts, first, second)
    scorer = VerdictScorer(variant, model, tokenizer, YESNO, ("Yes", "No"), 16, "on")

    def one_order(ps, a, b):  # pointwise: each response judged alone, then compared
        gap_a = scorer.verdict_logit_gap([YESNO.format(prompt=p, first=x) for p, x in zip(ps, a)])
        gap_b = scorer.verdict_logit_gap([YESNO.format(prompt=p, first=x) for p, x in zip(ps, b)])
        return torch.sigmoid(gap_a - gap_b).tolist()

    return both_orders(one_order, prompts, first, second)


def summarise(probabilities: list[float], pairs) -> tuple[float, float, float]:
    right = [1.0 if (p > 0.5) == label else 0.5 if p == 0.5 else 0.0 for p, (*_, label) in zip(probabilities, pairs)]
    strength = [abs(p - 0.5) for p in probabilities]
    confident = sorted(range(len(pairs)), key=lambda i: -strength[i])[: max(1, len(pairs) // 2)]
    return sum(right) / len(right), sum(strength) / len(strength), sum(right[i] for i in confident) / len(confident)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["instruct", "arithmetic"])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["ab-chat", "ab-raw", "ab-rubric", "yesno-chat"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = resolve_model_path(BUILTIN_SMOLLM2)
    rows = [
        "| task | variant | pairs | accuracy | mean abs(P - 0.5) | accuracy, confident half | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        pairs, mean = sample_pairs(path, task, args.prompts, args.k, args.seed)
        print(f"{task}: {len(pairs)} pairs with different ground truth; mean ground truth of the samples {mean:.3f}", flush=True)
        model, tokenizer = load_causal_lm(path, "float32")
        for variant in args.variants:
            start = time.perf_counter()
            acc, strength, confident = summarise(judge(variant, model, tokenizer, pairs), pairs)
            rows.append(
                f"| {task} | {variant} | {len(pairs)} | {acc:.3f} | {strength:.3f} | {confident:.3f} | "
                f"{time.perf_counter() - start:.0f} |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
