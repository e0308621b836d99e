"""Do the reference's and the opponents' no-grad forwards pay as one batched forward?

    python bench/batched_forwards.py                 # built-in policy, 3 models (MNPO: reference + 2 opponents)
    python bench/batched_forwards.py --models 5 --rows 128 --threads 2

MNPO's pair step runs the same micro-batch through the reference and each opponent snapshot: models
of one architecture with different weights, so their forwards cannot share one batch of inputs.
They can share one call: `torch.func.stack_module_state` stacks their weights and `vmap` maps one
`functional_call` over them, which turns each layer's matmuls into one batched matmul. This times
that against the loop the learner runs (learner/pair_step.py), on the same inputs, after checking
both give the same logprobs. Not a test; record results in BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=3, help="no-grad models per micro-batch (reference + opponents)")
    parser.add_argument("--rows", type=int, default=64, help="sequences per micro-batch (the default micro_batch_size)")
    parser.add_argument("--tokens", type=int, default=36, help="padded sequence length (prompt + response)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args()
    import torch
    from torch.func import functional_call, stack_module_state, vmap
    from transformers import AutoModelForCausalLM

    from common.tensors import gather_token_logprobs
    from driver.builtin import ensure_builtin_models

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    base = AutoModelForCausalLM.from_pretrained(ensure_builtin_models().policy, attn_implementation=args.attention).eval()
    models = []
    for _ in range(args.models):  # snapshots: the same architecture, other weights
        model = copy.deepcopy(base)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        models.append(model)
    ids = torch.randint(3, base.config.vocab_size, (args.rows, args.tokens))
    mask = torch.ones_like(ids)
    mask[: args.rows // 2, -args.tokens // 4 :] = 0  # half the rows right-padded
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(base).to("meta")

    def one(p, b):
        logits = functional_call(skeleton, (p, b), (), {"input_ids": ids, "attention_mask": mask}).logits
        return gather_token_logprobs(logits[:, :-1], ids[:, 1:])

    def looped():
        rows = [gather_token_logprobs(m(input_ids=ids, attention_mask=mask).logits[:, :-1], ids[:, 1:]) for m in models]
        return torch.stack(rows)

    def batched():
        return vmap(one)(params, buffers)

    with torch.no_grad():
        gap = float((looped() - batched()).abs().max())
        seconds = {"loop": [], "vmap": []}
        for _ in range(args.repeats):  # interleaved, so drift on a busy machine hits both alike
            for name, fn in (("loop", looped), ("vmap", batched)):
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    loop, batch = statistics.median(seconds["loop"]), statistics.median(seconds["vmap"])
    print(f"{args.models} models x {args.rows} rows x {args.tokens} tokens, {args.threads} thread(s), {args.attention}")
    print(f"max |loop - vmap| logprob gap: {gap:.2e}")
    print(f"loop {loop * 1e3:.1f} ms, vmap {batch * 1e3:.1f} ms, vmap / loop {batch / loop:.2f}")


if __name__ == "__main__":
    main()
