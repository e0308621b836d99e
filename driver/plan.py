"""Turn a RunConfig, its task and a judge manifest into a checked RunPlan, before anything starts.

Every check here is cheap (no model is built or loaded, no Ray): the algorithm exists, the task
loads (its prompts file parses), the judges' functions import, their model paths exist and their
API-key variables are set (population members included), there is an evaluation judge (the
manifest's `eval`, else the task's ground truth), the policy path exists, and the output directory
does not already hold a run (unless the launch continues one: driver/resume.py decides, under the
directory's lock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from driver.builtin import check_model_path, default_cache_root
from learner.algorithms import get_algorithm, resolved
from protocols import (
    HttpJudgeSpec,
    JudgeManifest,
    JudgeSpec,
    PairwiseJudgeSpec,
    PopulationJudgeSpec,
    RewardModelJudgeSpec,
    RuleJudgeSpec,
    RunConfig,
)
from protocols.config import SecurityConfig
from protocols.judges import POINTWISE_KINDS
from rollout.judges import resolve_function
from rollout.tasks import Task, load_task

logger = logging.getLogger("driver")


def ground_truth_judge(task: Task) -> RuleJudgeSpec | None:
    """The task's ground truth as a rule judge (hard comparisons), or None if it has none."""
    if task.ground_truth is None:
        return None
    return RuleJudgeSpec(
        name="ground-truth", kind="rule", function=task.ground_truth, args=task.ground_truth_args, temperature=0.0
    )


def task_manifest(task: Task) -> JudgeManifest:
    """The manifest of a run that names none: the task's ground truth labels and evaluates."""
    judge = ground_truth_judge(task)
    if judge is None:
        raise ValueError(
            f"task {task.name!r} has no ground truth to judge with; pass --judges MANIFEST naming the judges "
            f"(and a pointwise `eval` judge), e.g. deploy/judges/pairwise.yaml"
        )
    return JudgeManifest(judges=(judge,))


@dataclass(frozen=True)
class RunPlan:
    cfg: RunConfig
    task: Task
    manifest: JudgeManifest
    output: Path
    manifest_path: Path | None = None  # the file the manifest came from; watched for live judge swaps

    @property
    def eval_judge(self) -> RuleJudgeSpec | RewardModelJudgeSpec:
        """The manifest's `eval` judge, else the task's ground truth (resolve_plan checks one exists)."""
        judge = self.manifest.eval or ground_truth_judge(self.task)
        assert judge is not None, "resolve_plan refuses a run without an evaluation judge"
        return judge  # type: ignore[return-value]  # the manifest schema admits only pointwise eval judges

    @property
    def judge_weights(self) -> dict[str, float]:
        return {j.name: j.weight for j in self.manifest.judges}

    @property
    def judge_temperatures(self) -> dict[str, float]:
        """Bradley-Terry temperature of each judge, for turning its rewards into preferences."""
        return {j.name: j.temperature for j in self.manifest.judges}


def check_manifest(manifest: JudgeManifest, source: str, security: SecurityConfig | None = None) -> None:
    """Check what the schema cannot, for every judge and population member, without loading anything.

    rule: the function's module is allowed (`security.allowed_modules`, checked before anything is
    imported) and the function imports; reward_model / pairwise: the model path exists (or is
    built-in); http: the base_url's host is allowed (`security.allowed_http_hosts`) and the
    `api_key_env` variable is set (its value is never read into a message); population: the same
    for each member. Errors read
    "<source>: judge 'name': field 'field': reason" (members: "judge 'pop': member 'm': field ...").
    """
    specs = list(manifest.judges) + ([manifest.eval] if manifest.eval else [])
    for spec in specs:
        where = f"{source}: judge {spec.name!r}"
        if isinstance(spec, PopulationJudgeSpec):  # (the schema refuses members of kind 'self')
            for member in spec.members:
                _check_spec(member, f"{where}: member {member.name!r}", security)
        else:
            _check_spec(spec, where, security)


def _check_allowed(spec: JudgeSpec, where: str, security: SecurityConfig | None) -> None:
    """The run config's allow-lists (docs/security.md); none set: anything goes."""
    if security is None:
        return
    if isinstance(spec, RuleJudgeSpec) and security.allowed_modules is not None:
        module = spec.function.partition(":")[0]
        if not any(module == m or module.startswith(m + ".") for m in security.allowed_modules):
            raise ValueError(
                f"{where}: field 'function': module {module!r} is not in security.allowed_modules "
                f"{list(security.allowed_modules)}; it was not imported"
            )
    if isinstance(spec, HttpJudgeSpec) and security.allowed_http_hosts is not None:
        url = urlsplit(spec.base_url)
        host = (url.hostname or "").lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        allowed = {h.lower() for h in security.allowed_http_hosts}
        if host not in allowed and f"{host}:{port}" not in allowed:
            raise ValueError(
                f"{where}: field 'base_url': host {host}:{port} is not in security.allowed_http_hosts "
                f"{sorted(allowed)}; the judge's prompts and API key would go there"
            )


def _check_spec(spec: JudgeSpec, where: str, security: SecurityConfig | None = None) -> None:
    _check_allowed(spec, where, security)
    if isinstance(spec, RuleJudgeSpec):
        try:
            resolve_function(spec.function)
        except ValueError as err:
            raise ValueError(f"{where}: field 'function': {err}") from None
    elif isinstance(spec, RewardModelJudgeSpec | PairwiseJudgeSpec):
        what = "reward model path" if isinstance(spec, RewardModelJudgeSpec) else "judge model path"
        try:
            check_model_path(spec.path, what)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{where}: field 'path': {err}") from None
        except ValueError as err:  # an unknown 'builtin:...' name
            raise ValueError(f"{where}: field 'path': {err}") from None
    elif isinstance(spec, HttpJudgeSpec) and spec.api_key_env is not None:
        if not os.environ.get(spec.api_key_env):  # the value itself never goes into a message
            # Name the variable only if it looks like one: a key pasted here by mistake stays unprinted.
            named = repr(spec.api_key_env) if spec.api_key_env.isupper() else "(name not shown: not upper case)"
            raise ValueError(
                f"{where}: field 'api_key_env': environment variable {named} is not set (or empty); "
                f"export it before starting the run, or remove api_key_env for an endpoint without a key"
            )


def check_algorithm_judges(algo: str, manifest: JudgeManifest, source: str) -> None:
    """The training judges give what the algorithm needs: scalar rewards (PPO, GRPO, RLOO) or a
    judge of kind 'self' (OSP)."""
    spec = get_algorithm(algo)
    if spec.needs_rewards:
        for judge in manifest.judges:
            if judge.kind not in POINTWISE_KINDS:
                raise ValueError(
                    f"{source}: judge {judge.name!r}: field 'kind': algorithm {algo!r} needs scalar rewards, but "
                    f"kind {judge.kind!r} gives only preferences; use a pointwise judge ({', '.join(POINTWISE_KINDS)})"
                )
    if spec.needs_self_judge and not any(j.kind == "self" for j in manifest.judges):
        raise ValueError(
            f"{source}: field 'judges': algorithm {algo!r} needs a judge of kind 'self' (the policy judging its "
            f"own samples), e.g. deploy/judges/self.yaml"
        )


def default_judges(cfg: RunConfig) -> RunConfig:
    """The algorithm's own default manifest (e.g. OSP's self judge) when the run names none."""
    spec = get_algorithm(cfg.algo)
    if spec.default_judges and cfg.judges is None:
        return cfg.model_copy(update={"judges": spec.default_judges})
    return cfg


def resolve_plan(
    cfg: RunConfig,
    manifest: JudgeManifest | None,
    resume: bool = False,
    manifest_path: str | Path | None = None,
    task: Task | None = None,
) -> RunPlan:
    """Check everything; `manifest` None means the task's ground truth (`task_manifest`)."""
    get_algorithm(cfg.algo)  # raises, listing the valid names
    cfg = resolved(cfg)  # the algorithm's section checked (and no other's), written out in full
    task = task or load_task(cfg.task)
    check_model_path(cfg.model.path, "model path")
    source = cfg.judges or f"the task {task.name!r}'s ground truth"
    if manifest is None:
        manifest = task_manifest(task)
    check_manifest(manifest, source, cfg.security)
    check_algorithm_judges(cfg.algo, manifest, source)
    if manifest.eval is None and task.ground_truth is None:
        raise ValueError(
            f"{source}: field 'eval': task {task.name!r} has no ground truth, so the manifest must name a "
            f"pointwise `eval` judge (rule or reward_model) to measure the policy with"
        )
    if get_algorithm(cfg.algo).family == "sequence" and cfg.rollout.prompts_per_step < cfg.learner.num_workers:
        raise ValueError(
            f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} is smaller than learner.num_workers="
            f"{cfg.learner.num_workers}: {cfg.algo} gives each learner rank whole prompt groups, so a rank would get none"
        )
    if cfg.rollout.prompts_per_step < cfg.rollout.num_workers:
        raise ValueError(
            f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} is smaller than "
            f"rollout.num_workers={cfg.rollout.num_workers}"
        )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(cfg.output) if cfg.output else Path("runs") / f"{cfg.algo}-{stamp}"
    if not resume and (output / "metrics.jsonl").exists():
        raise ValueError(
            f"output directory {str(output)!r} already holds a run (metrics.jsonl); choose another --output, "
            f"or continue it (`--resume {output}`, or this command with `--resume-mode auto`)"
        )
    return RunPlan(
        cfg=cfg,
        task=task,
        manifest=manifest,
        output=output,
        manifest_path=Path(manifest_path) if manifest_path is not None else None,
    )


def check_context(cfg: RunConfig, task: Task, model_path: str) -> int:
    """The longest prompt of the task (as the policy sees it, through its chat template) plus
    `rollout.max_response_tokens` must fit in `rollout.max_model_len`, or vLLM would cut responses
    short (or refuse the prompt) mid-run. Returns the longest prompt's length in tokens.

    The longest prompt is remembered per tokenizer, prompts and chat mode (`cached_longest_prompt`):
    measuring it imports transformers, seconds of every launch, and a run started again on the
    same model and prompts measures nothing new."""
    longest, text, chat = cached_longest_prompt(cfg, task, model_path)
    need = longest + cfg.rollout.max_response_tokens
    if need > cfg.rollout.max_model_len:
        raise ValueError(
            f"rollout.max_model_len={cfg.rollout.max_model_len} is too small: the task's longest prompt is {longest} "
            f"tokens{' through the chat template' if chat else ''} ({text[:40]!r}...) plus "
            f"rollout.max_response_tokens={cfg.rollout.max_response_tokens}; set rollout.max_model_len to at least {need}"
        )
    return longest


# files of a model directory that do not change how it tokenizes (weights), left out of the key
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")


def longest_prompt(cfg: RunConfig, task: Task, model_path: str) -> tuple[int, str, bool]:
    """(tokens, text) of the task's longest prompt as the policy's engine is fed it, and whether
    that is through the chat template."""
    from transformers import AutoTokenizer

    from rollout.chat import prompt_token_ids, uses_chat_template

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as err:
        raise ValueError(f"model.path: cannot load the tokenizer of {model_path!r}: {str(err).splitlines()[0]}") from None
    chat = uses_chat_template(tokenizer, cfg.model.chat_template)
    longest, text = max((len(prompt_token_ids(tokenizer, p.text, chat)), p.text) for p in (*task.train, *task.heldout))
    return longest, text, chat


def prompt_length_key(cfg: RunConfig, task: Task, model_path: str) -> str | None:
    """A hash of everything `longest_prompt` depends on: the transformers version, the chat mode,
    the model directory's non-weight files (names, sizes, modification times: its tokenizer
    files and config), and every prompt's text. None where the model is not a local directory."""
    directory = Path(model_path)
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    digest.update(f"{importlib.metadata.version('transformers')}\0{cfg.model.chat_template}\0".encode())
    for file in sorted(directory.iterdir()):
        if file.is_file() and not file.name.endswith(WEIGHT_SUFFIXES):
            stat = file.stat()
            digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for prompt in (*task.train, *task.heldout):
        digest.update(prompt.text.encode() + b"\0")
    return digest.hexdigest()[:24]


def cached_longest_prompt(cfg: RunConfig, task: Task, model_path: str) -> tuple[int, str, bool]:
    """`longest_prompt`, remembered under `$ONLINE_RLHF_CACHE/prompt-lengths/<key>.json` (the
    built-in model's cache root). A cache that cannot be read is measured again; one that cannot
    be written is logged and the run goes on."""
    key = prompt_length_key(cfg, task, model_path)
    path = default_cache_root() / "prompt-lengths" / f"{key}.json" if key else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            return int(saved["longest"]), str(saved["text"]), bool(saved["chat"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("prompt-length cache %s is unreadable (%s); measuring again", path, err)
    longest, text, chat = longest_prompt(cfg, task, model_path)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps({"longest": longest, "text": text, "chat": chat, "model": model_path}))
            partial.replace(path)  # whole or absent: a reader never sees half a file
        except OSError as err:
            logger.warning("could not cache the task's prompt lengths at %s (%s); the next launch measures them again", path, err)
    return longest, text, chat
