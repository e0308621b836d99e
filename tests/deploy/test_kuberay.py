"""deploy/kuberay/: the RayCluster and RayJob manifests (CPU and GPU) against a JSON-schema subset of
the KubeRay CRDs (tests/deploy/kuberay_schema.json), against the run they start (the RayJob's
entrypoint parses as the driver's command line; the worker groups hold the custom resources and
GPUs its config asks for; the run directory is mounted on every pod), and a lint of the Dockerfile
that builds their image. Nothing here talks to Kubernetes or Docker: no test deploys them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from deploy import placement
from deploy.loading import load_manifest
from driver.cli import parse_config

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "deploy" / "kuberay"
SCHEMA = json.loads((Path(__file__).parent / "kuberay_schema.json").read_text())
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
SECRET_NAME = re.compile(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)", re.I)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def pods(doc: dict) -> list[dict]:
    spec = cluster_spec(doc)
    return [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]


def custom_resources(group: dict) -> dict[str, float]:
    """KubeRay's rayStartParams `resources`: a JSON object inside a quoted string ('"{\\"r\\": 1}"')."""
    raw = group.get("rayStartParams", {}).get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def test_there_is_a_raycluster_and_a_rayjob_for_cpu_and_for_gpu():
    assert {(load(p)["kind"], "gpu" if "gpu" in p.name else "cpu") for p in MANIFESTS} == {
        ("RayCluster", "cpu"),
        ("RayCluster", "gpu"),
        ("RayJob", "cpu"),
        ("RayJob", "gpu"),
    }


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_crd_subset(path):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(load(path), SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    "broken, where",
    [
        (lambda d: d.update(apiVersion="ray.io/v1alpha1"), "apiVersion"),
        (lambda d: d["metadata"].update(name="Online_RLHF"), "name"),
        (lambda d: cluster_spec(d)["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}), "num-cpus"),
        (lambda d: cluster_spec(d)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].pop("image"), "image"),
        (
            lambda d: cluster_spec(d)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"].pop("limits"),
            "limits",
        ),
        (lambda d: cluster_spec(d)["headGroupSpec"].update(templates={}), "templates"),  # a misspelt field
        (lambda d: d["spec"].pop("entrypoint") if d["kind"] == "RayJob" else d["spec"].pop("headGroupSpec"), "required"),
    ],
)
@pytest.mark.parametrize("path", [KUBERAY / "raycluster-cpu.yaml", KUBERAY / "rayjob-gpu.yaml"], ids=lambda p: p.name)
def test_the_schema_refuses_broken_manifests(path, broken, where):
    doc = load(path)
    broken(doc)
    with pytest.raises(jsonschema.ValidationError, match=where):
        jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pods_run_this_ray_from_the_project_image_and_hold_no_secret(path):
    doc, gpu = load(path), "gpu" in path.name
    assert cluster_spec(doc)["rayVersion"] == ray.__version__  # the version pyproject.toml pins
    for group in pods(doc):
        for container in group["template"]["spec"]["containers"]:
            image = container["image"]
            assert re.fullmatch(r"[\w.\-/:]+/online-rlhf:[\w.\-]+-" + ("gpu" if gpu else "cpu"), image), image
            assert not image.endswith(":latest")
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{path.name}: {env['name']}"
    worker_gpus = [
        c["resources"]["limits"].get("nvidia.com/gpu")
        for g in cluster_spec(doc)["workerGroupSpecs"]
        for c in g["template"]["spec"]["containers"]
    ]
    assert all(worker_gpus) if gpu else not any(worker_gpus)


def entrypoint(doc: dict, path: Path) -> list[str]:
    """The driver's arguments: the RayJob's entrypoint, or the command in the RayCluster's comment."""
    if doc["kind"] == "RayJob":
        command = doc["spec"]["entrypoint"]
    else:
        command = re.search(r"^#\s+(python -m driver .*)$", path.read_text(), flags=re.M).group(1)
    words = shlex.split(command.replace("/app/", f"{REPO}/"))  # the image holds the checkout at /app
    assert words[:3] == ["python", "-m", "driver"]
    return words[3:]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_cluster_fits_the_run_it_is_for(path):
    doc = load(path)
    _, cfg = parse_config(entrypoint(doc, path))  # the driver's own parsing and config checks
    manifest = load_manifest(REPO / cfg.judges)
    judges = [*manifest.judges, *([manifest.eval] if manifest.eval else [])]
    groups = cluster_spec(doc)["workerGroupSpecs"]

    def group_with(resources: dict[str, float]) -> dict:
        holders = [g for g in groups if all(custom_resources(g).get(k, 0) >= v for k, v in resources.items())]
        assert len(holders) == 1, f"{path.name}: {resources} is held by {len(holders)} worker groups"
        return holders[0]

    rollout, learner = group_with(cfg.rollout.resources), group_with(cfg.learner.resources)
    assert rollout is not learner
    for spec in judges:
        group_with(spec.resources)
    # every custom resource the run asks for, in the amounts it asks (replicas x per-actor amount)
    held: dict[str, float] = {}
    for g in groups:
        for name, amount in custom_resources(g).items():
            held[name] = held.get(name, 0.0) + amount * g["replicas"]
    assert all(held.get(k, 0.0) >= v for k, v in placement.custom_resources(cfg, judges).items())
    # GPUs and CPUs of each group cover what its actors ask for
    for group, section in ((rollout, cfg.rollout), (learner, cfg.learner)):
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert float(limits.get("nvidia.com/gpu", 0)) * group["replicas"] >= section.num_workers * section.num_gpus
        assert float(limits["cpu"]) * group["replicas"] >= section.num_workers * section.num_cpus
    # the run directory is on a volume every pod mounts (the learner writes the final weights there)
    output = Path(cfg.output)
    for group in pods(doc):
        mounts = group["template"]["spec"]["containers"][0].get("volumeMounts", [])
        volumes = {v["name"]: v for v in group["template"]["spec"].get("volumes", [])}
        shared = [
            m for m in mounts if output.is_relative_to(m["mountPath"]) and "persistentVolumeClaim" in volumes.get(m["name"], {})
        ]
        assert shared, f"{path.name}: {output} is not on a persistent volume in group {group.get('groupName', 'head')}"


# ---------------------------------------------------------------- the Dockerfile
DOCKERFILE = KUBERAY / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction: comments and blank lines dropped, continued lines joined."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def lint(text: str) -> list[str]:
    """What is wrong with a Dockerfile, by our rules: FROM first with a pinned tag (never latest),
    WORKDIR set, a non-root USER, no secret in ENV/ARG names or values."""
    steps = instructions(text)
    problems = []
    if not steps or steps[0][0] != "FROM":
        problems.append("the first instruction is not FROM")
    for keyword, rest in steps:
        if keyword == "FROM":
            image = rest.split()[0]
            name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            if not tag or tag == "latest":
                problems.append(f"FROM {image}: pin a tag other than latest")
        if keyword in ("ENV", "ARG"):
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=?(\"[^\"]*\"|\S*)", rest):
                if SECRET_NAME.search(name):
                    problems.append(f"{keyword} {name}: secrets never go in the image")
                if re.search(r"sk-[A-Za-z0-9]{8,}|[0-9a-f]{32,}", value):
                    problems.append(f"{keyword} {name}: looks like a secret value")
    if "WORKDIR" not in {k for k, _ in steps}:
        problems.append("no WORKDIR")
    users = [rest for k, rest in steps if k == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("runs as root")
    return problems


def test_the_dockerfile_passes_the_lint():
    assert lint(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ("WORKDIR /app\nFROM python:3.11.9-slim\nUSER ray\n", "the first instruction is not FROM"),
        ("FROM python:latest\nWORKDIR /app\nUSER ray\n", "pin a tag other than latest"),
        ("FROM python\nWORKDIR /app\nUSER ray\n", "pin a tag other than latest"),
        ("FROM python:3.11.9-slim\nUSER ray\n", "no WORKDIR"),
        ("FROM python:3.11.9-slim\nWORKDIR /app\n", "runs as root"),
        ("FROM python:3.11.9-slim\nWORKDIR /app\nENV PATH=/x \\\n    JUDGE_API_KEY=abc\nUSER ray\n", "JUDGE_API_KEY"),
        ("FROM python:3.11.9-slim\nWORKDIR /app\nARG HF_TOKEN\nUSER ray\n", "HF_TOKEN"),
        ("FROM python:3.11.9-slim\nWORKDIR /app\nENV X=0123456789abcdef0123456789abcdef\nUSER ray\n", "secret value"),
    ],
)
def test_the_lint_catches(text, problem):
    assert any(problem in p for p in lint(text)), lint(text)


def test_the_image_installs_with_setup_sh_and_copies_the_checkout():
    steps = instructions(DOCKERFILE.read_text())
    runs = " ".join(rest for k, rest in steps if k == "RUN")
    assert "GPU=${GPU}" in runs and "bash deploy/setup.sh" in runs  # CPU by default, GPU=1 with --build-arg GPU=1
    assert ("ARG", "GPU=0") in steps
    assert any(
        k == "COPY" and rest.split()[-2:] == [".", "/app"]
        for k, rest in steps
        if k == "COPY"
        for rest in [rest.replace("--chown=ray:ray ", "")]
    )
    assert ("WORKDIR", "/app") in steps
    env = " ".join(rest for k, rest in steps if k == "ENV")
    assert "PYTHONPATH=/app" in env and "PATH=/app/.venv/bin:$PATH" in env
    # the build context leaves out what the image makes itself and what runs write
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv/", "runs/", ".git/"} <= set(ignored)
