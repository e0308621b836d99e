"""The vLLM sampler: prompts -> on-policy rollouts, and in-place weight updates from the learner.

Sits between the driver's PromptBatch and the judges. Wrapped by actors/rollout.py; usable
without Ray (the tests drive it directly).

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set by the actor before vLLM
is imported) so the learner's tensors can be handed to it directly. Weight updates go through
vLLM's layerwise `reload_weights` with `is_checkpoint_format=True`, which re-runs vLLM's own weight
processing (fused qkv / gate_up repacking); loading raw tensors into the runner without it was seen
to leave fused layers stale (docs/stack.md). Every update is verified: the engine's prompt
logprobs on fixed probe sequences must match the learner's within `sync_tolerance`, otherwise
`WeightSyncError` is raised and the run stops rather than training on a policy it is not serving.

On GPUs the same `load_weights` contract is kept; a broadcast (NCCL) transport that fills the
iterator from a collective instead of the object store plugs in at `load_weights`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

from protocols import PromptBatch, Rollout, RolloutBatch, RolloutConfig, SyncReport, WeightVersion
from rollout.chat import ChatMode, prompt_token_ids, uses_chat_template
from rollout.sync import WeightSyncError, load_verified

logger = logging.getLogger(__name__)

__all__ = ["VLLMSampler", "WeightSyncError"]


class VLLMSampler:
    """One vLLM engine serving the current policy version."""

    def __init__(
        self,
        model_path: str,
        cfg: RolloutConfig,
        *,
        dtype: str,
        seed: int,
        name: str = "rollout-0",
        chat_template: ChatMode = "auto",
    ):
        self.cfg = cfg
        self.name = name
        self.policy_version = 0
        start = time.perf_counter()
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=cfg.max_model_len,
            enforce_eager=True,  # CUDA graphs / torch.compile cost more start-up than they save here
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_prefix_caching=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.chat = uses_chat_template(self.tokenizer, chat_template)
        logger.info(
            "%s: vLLM engine for %s ready in %.1fs (%s)",
            name,
            model_path,
            time.perf_counter() - start,
            "prompts through the chat template" if self.chat else "raw prompts",
        )

    # ------------------------------------------------------------------ sampling
    def generate(self, batch: PromptBatch, *, seed: int | None = None, temperature: float | None = None) -> RolloutBatch:
        """Sample `batch.samples_per_prompt` responses per prompt with the current weights.

        With `seed`, the samples depend only on (weights, prompts, seed): the in-process engine
        draws from torch's global generator, which is re-seeded here. The driver derives one seed
        per step, so a resumed run samples exactly what the uninterrupted run sampled.
        """
        if seed is not None:
            torch.manual_seed(seed)
        params = SamplingParams(
            n=batch.samples_per_prompt,
            temperature=self.cfg.temperature if temperature is None else temperature,
            top_p=self.cfg.top_p,
            max_tokens=self.cfg.max_response_tokens,
            logprobs=0,  # logprob of the sampled token only
        )
        inputs = [TokensPrompt(prompt_token_ids=prompt_token_ids(self.tokenizer, p.text, self.chat)) for p in batch.prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        rollouts = []
        for prompt, out in zip(batch.prompts, outputs, strict=True):
            prompt_ids = np.asarray(out.prompt_token_ids, dtype=np.int32)
            prompt_ids.flags.writeable = False  # read-only: the prompt's K rollouts share this one array
            for completion in out.outputs:
                token_ids = list(completion.token_ids)
                logprobs = np.fromiter(
                    (step[tok].logprob for step, tok in zip(completion.logprobs, token_ids)), np.float32, len(token_ids)
                )
                np.minimum(logprobs, 0.0, out=logprobs)  # rounding can put a logprob a hair above 0
                logprobs.flags.writeable = False  # read-only: the Rollout keeps it as it is, no copy
                rollouts.append(
                    Rollout(
                        prompt_id=prompt.prompt_id,
                        prompt_text=prompt.text,
                        prompt_token_ids=prompt_ids,
                        response_text=completion.text,
                        response_token_ids=token_ids,
                        logprobs=logprobs,
                        policy_version=self.policy_version,
                        finish_reason="stop" if completion.finish_reason == "stop" else "length",
                    )
                )
        return RolloutBatch(
            step=batch.step,
            policy_version=self.policy_version,
            samples_per_prompt=batch.samples_per_prompt,
            rollouts=tuple(rollouts),
        )

    # ------------------------------------------------------------------ weights
    def prompt_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """log p(seq[t+1] | seq[:t+1]) for every t, as computed by the serving engine."""
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        prompts = [TokensPrompt(prompt_token_ids=list(s)) for s in sequences]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        result = []
        for seq, out in zip(sequences, outputs, strict=True):
            steps = out.prompt_logprobs[1:]  # the first prompt token has no logprob
            result.append([step[tok].logprob for step, tok in zip(steps, seq[1:], strict=True)])
        return result

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: WeightVersion) -> SyncReport:
        """Replace the served weights in place, verify them against the learner's probe (rollout/sync.py)."""

        def load() -> None:
            self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=list(weights), is_checkpoint_format=True))
            self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights

        report = load_verified(
            version, self.policy_version, load, self.prompt_logprobs, self.cfg.sync_tolerance, who=self.name, worker=self.name
        )
        self.policy_version = version.version
        return report
