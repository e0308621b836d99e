"""The TRL side of bench/vs_trl.py: one TRL training run, timed step by step, in TRL's own venv.

    TRL_VENV/bin/python bench/trl_worker.py SPEC.json

Not meant to be run by hand: bench/vs_trl.py writes SPEC.json (the trainer, model, prompts in
the order the project's prompt stream serves them, reward function, hyperparameters, seed, output
directory, the parent's launch time) and reads RESULT.json back. This file imports only what TRL's
venv has (trl, datasets, and through a .pth file the project venv's torch / transformers /
accelerate) plus the task's reward function by its import path; nothing else of the project.

Recorded per step: wall-clock begin and end (Trainer callbacks), completions and generated tokens
(counted where the reward function sees them: tokens up to and including the first EOS, as vLLM
counts them on the project side), and TRL's own logged metrics. The final model is saved to
OUTPUT/final (an HF checkpoint with the tokenizer) for the common evaluator.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/ itself off the path: bench/profile.py would shadow the standard library's `profile` (cProfile, torch);
# the repository on it: the task's reward function ('module:function') lives in the project.
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]


def load_function(path: str, args: dict):
    module, _, name = path.partition(":")
    fn = getattr(importlib.import_module(module), name)
    return (lambda prompt, response: fn(prompt, response, **args)) if args else fn


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    warnings.filterwarnings("ignore", message=".*TRL currently supports vLLM.*")  # TRL never uses vLLM here

    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    out = Path(spec["output"])
    ground_truth = load_function(spec["reward_function"], spec.get("reward_args") or {})
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    eos = {tokenizer.eos_token_id, *([model.generation_config.eos_token_id] if model.generation_config else [])} - {None}
    pad = tokenizer.pad_token_id
    generated: list[tuple[int, int]] = []  # per reward call (one per step): completions, generated tokens
    same_prompts: list[bool] = []  # per reward call: were they the step's prompts of the project's stream?
    per_step = spec["prompts_per_step"]

    def response_tokens(ids: list[int]) -> int:
        for i, token in enumerate(ids):
            if token in eos:
                return i + 1
        return sum(1 for t in ids if t != pad)

    # the prompts TRL is handed (chat-templated for a chat model) -> the task's raw text, which the reward reads
    raw = dict(zip(spec["prompts"], spec.get("raw_prompts") or spec["prompts"]))

    def ground_truth_reward(prompts, completions, completion_ids=None, **_) -> list[float]:
        step = len(generated)
        generated.append((len(completions), sum(response_tokens(list(ids)) for ids in completion_ids or [])))
        same_prompts.append(sorted(set(prompts)) == sorted(set(spec["prompts"][step * per_step : (step + 1) * per_step])))
        return [float(ground_truth(raw[p], c)) for p, c in zip(prompts, completions)]

    lora = spec.get("lora")
    if lora:  # adapters as the project's learner puts them (learner/lora.py); TRL then needs no reference copy
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        # wrapped here, not by the trainer, so that the optimizer below is handed the adapters' parameters
        model = get_peft_model(model, config)

    # The project's optimizer and schedule, exactly (learner/engine.py): torch AdamW, lr factor min(1, (s + 1) / warmup).
    warmup = max(spec["warmup_steps"], 1)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=spec["lr"],
        betas=tuple(spec["betas"]),
        weight_decay=spec["weight_decay"],
        eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    common = dict(
        output_dir=str(out / "trainer"),
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        weight_decay=spec["weight_decay"],
        adam_beta1=spec["betas"][0],
        adam_beta2=spec["betas"][1],
        max_grad_norm=spec["grad_clip"],
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        seed=spec["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        temperature=spec["temperature"],
        top_p=spec["top_p"],
        top_k=0,
        disable_dropout=True,
    )
    dataset = Dataset.from_dict({"prompt": spec["prompts"]})  # already in the project's prompt-stream order
    if spec["trainer"] == "grpo":
        args = trl.GRPOConfig(
            **common,
            per_device_train_batch_size=spec["prompts_per_step"] * spec["samples_per_prompt"],
            num_generations=spec["samples_per_prompt"],
            max_completion_length=spec["max_new_tokens"],
            beta=spec["kl_coef"],
            epsilon=spec["clip_eps"],
            num_iterations=spec["epochs"],
            loss_type="grpo",  # token mean per sequence, then mean over sequences (learner/algorithms/grpo.py)
            scale_rewards="group",
            shuffle_dataset=False,
            log_completions=False,
        )
        trainer_cls = trl.GRPOTrainer
    elif spec["trainer"] == "online_dpo":
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        if spec["samples_per_prompt"] != 2:
            raise ValueError("OnlineDPOTrainer samples exactly 2 completions per prompt")
        args = OnlineDPOConfig(
            **common,
            per_device_train_batch_size=spec["prompts_per_step"],
            max_new_tokens=spec["max_new_tokens"],
            beta=spec["beta"],
            loss_type="sigmoid",
            train_sampling_strategy="sequential",
        )
        trainer_cls = OnlineDPOTrainer
    else:
        raise ValueError(f"unknown trainer {spec['trainer']!r}")

    times: dict[str, list[float]] = {"begin": [], "end": []}
    history: list[dict] = []  # TRL's own logged metrics, one entry per step

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            times["begin"].append(time.time())

        def on_step_end(self, args, state, control, **kwargs):
            times["end"].append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if numbers:
                history.append({"step": state.global_step, **numbers})

    trainer = trainer_cls(
        model=model,
        reward_funcs=ground_truth_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Clock()],
        optimizers=(optimizer, scheduler),
    )
    trainer.train()
    trained = time.time()
    if lora:  # a plain HF checkpoint for the evaluator: the adapters merged into the weights
        trainer.model.merge_and_unload().save_pretrained(str(out / "final"))
    else:
        trainer.save_model(str(out / "final"))
    tokenizer.save_pretrained(str(out / "final"))
    result = {
        "trl_version": trl.__version__,
        "torch_threads": torch.get_num_threads(),
        "launched": spec["launched"],
        "step_begin": times["begin"],
        "step_end": times["end"],
        "trained": trained,
        "completions": [c for c, _ in generated],
        "tokens": [t for _, t in generated],
        "same_prompts": same_prompts,
        "logs": history,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
