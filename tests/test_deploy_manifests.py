"""deploy/ as shipped: the Dockerfile, the compose stack and the Kubernetes base are checked
offline, the Kubernetes resources with kubernetes-validate's schemas (shipped in its wheel),
the compose file with the Compose Specification's schema (vendored by check-jsonschema) and
for every file, variable and image it names, and each remedy.toml they carry loads as
Remedy loads it."""

from __future__ import annotations

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from temporalio.common import SearchAttributeIndexedValueType

from remedy import names
from remedy.config import RemedyConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "deploy" / "compose"
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
# The newest Kubernetes whose schemas the pinned kubernetes-validate ships.
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
# A tag that names a release: no `latest`, no bare major version (PostgreSQL's are 16.9).
PINNED_TAG = re.compile(r"^[^:@]+:v?\d+\.\d+(\.\d+)?([-.][\w.-]+)?$")
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
REMEDY_ROLES = {"serve", "worker"}


def _named_env_variables(config: RemedyConfig) -> set[str]:
    """Every environment variable a config names for a secret (the `*_env` keys)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("_env") and isinstance(item, str):
                    found.add(item)
                else:
                    walk(item)

    walk(config.model_dump())
    return found


def expected_search_attributes() -> dict[str, str]:
    """Remedy's search attributes as registration commands spell them: name -> type."""
    kinds = {
        SearchAttributeIndexedValueType.KEYWORD: "Keyword",
        SearchAttributeIndexedValueType.INT: "Int",
        SearchAttributeIndexedValueType.DATETIME: "Datetime",
    }
    return {key.name: kinds[key.indexed_value_type] for key in names.SEARCH_ATTRIBUTES}


# ---------------------------------------------------------------------------- the image


def test_the_dockerfile_builds_from_what_the_context_holds_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert "*" in ignored, ".dockerignore must exclude everything not named"
    copied = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert copied, "the Dockerfile copies no sources"
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert source in allowed, f"Dockerfile copies {source}, which .dockerignore leaves out"
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2, "not a multi-stage build"
    assert re.search(r"^USER 10001", dockerfile, re.M), "the image must not run as root"
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile, (
        "torch must be the CPU build"
    )
    python_image = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.M)
    assert python_image and PINNED_TAG.match(python_image[1]), "pin the Python base image"
    makefile_torch = re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_torch and f"TORCH_VERSION={makefile_torch[1]}" in dockerfile, (
        "the image's torch differs from the one `make` installs"
    )


# ---------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    return loaded


def _compose_validator() -> jsonschema.protocols.Validator:
    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _compose_validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)
    misspelt = {**compose, "services": {**compose["services"], "qdrant": {
        **compose["services"]["qdrant"], "healthcheck": {"tests": ["CMD", "true"]}
    }}}  # fmt: skip
    assert list(_compose_validator().iter_errors(misspelt)), "the schema checks nothing"


def test_every_compose_image_is_pinned_and_every_remedy_service_is_the_built_image(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            assert (COMPOSE_DIR / service["build"]["context"] / "Dockerfile").is_file()
            assert service["command"][0] in REMEDY_ROLES, name
            continue
        assert PINNED_TAG.match(image), f"service {name}: image {image!r} is not pinned"


def test_every_file_compose_mounts_or_reads_exists(compose: dict[str, Any]) -> None:
    named_volumes = set(compose["volumes"])
    for name, service in compose["services"].items():
        assert "env_file" not in service, f"{name}: give a service only the secrets it uses"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"service {name} mounts missing {source}"
            else:
                assert source in named_volumes, f"service {name}: volume {source} not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} waits for unknown {dependency}"


def test_every_compose_variable_is_in_env_example_or_has_a_default() -> None:
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    example = (COMPOSE_DIR / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    used = {match["name"]: match["rest"] for match in COMPOSE_VARIABLE.finditer(text)}
    assert used, "compose.yaml reads no variable (the pattern is wrong)"
    for name, rest in used.items():
        assert name in defined or rest.startswith(":-"), f"${{{name}}} is not in .env.example"


def test_every_service_others_wait_for_says_when_it_is_ready(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = condition["condition"]
            target = compose["services"][dependency]
            if wanted == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health check"
            else:
                assert wanted == "service_completed_successfully", (name, dependency)
                assert target.get("restart") == "no", f"{dependency} is a one-shot"


def test_the_one_shot_registers_every_search_attribute_with_its_type(
    compose: dict[str, Any],
) -> None:
    script = "\n".join(compose["services"]["temporal-search-attributes"]["command"])
    registered = dict(re.findall(r"(Remedy\w+)=(Keyword|Int|Datetime)", script))
    assert registered == expected_search_attributes()


def test_the_compose_remedy_toml_loads_and_its_secrets_reach_the_services() -> None:
    config = load_config(COMPOSE_DIR / "remedy.toml")
    assert config.temporal.index_task_queue, "worker-index needs [temporal] index_task_queue"
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    given: set[str] = set()
    for service in compose["services"].values():
        if "build" in service:
            given |= set(service["environment"])
    missing = _named_env_variables(config) - given - _optional_secrets(config)
    assert not missing, f"no Remedy service in compose.yaml is given {sorted(missing)}"


def _optional_secrets(config: RemedyConfig) -> set[str]:
    """Variables of integrations the sample leaves off: a Slack app-level token (Socket
    Mode), a GitHub App's key, the codec's keys and token while [codec] is disabled."""
    optional = {config.slack.app_token_env, config.github.app_private_key_env}
    if not config.codec.enabled:
        optional |= {config.codec.keys_env, config.codec.server_token_env}
    return optional


# ---------------------------------------------------------------------------- Kubernetes


def _kubernetes_resources(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES_DIR / "kustomization.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for name in kustomization["resources"]:
        path = KUBERNETES_DIR / name
        assert path.is_file(), f"kustomization.yaml lists missing {name}"
        found.extend(_kubernetes_resources(path))
    return found


def _all_manifests() -> list[Path]:
    """Every Kubernetes resource file; kustomization.yaml is Kustomize's (checked below)."""
    return sorted(set(KUBERNETES_DIR.glob("*.yaml")) - {KUBERNETES_DIR / "kustomization.yaml"})


@pytest.mark.parametrize("path", _all_manifests(), ids=lambda path: path.name)
def test_every_kubernetes_manifest_validates_against_the_strict_schemas(path: Path) -> None:
    documents = _kubernetes_resources(path)
    assert documents, f"{path.name} holds no resource"
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{path.name}: {document['kind']}: {exc.message}") from None


def test_a_wrong_field_fails_the_validator() -> None:
    """The validator really checks: a misspelt probe field is refused."""
    deployment = _kubernetes_resources(KUBERNETES_DIR / "deployment-intake.yaml")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGets"] = container["livenessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _deployments(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == "Deployment"}


def test_each_role_runs_unprivileged_with_probes_and_resources(
    resources: list[dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    deployments = _deployments(resources)
    roles = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"][:3:2]
        for name, d in deployments.items()
    }
    assert sorted(map(tuple, roles.values())) == [
        ("serve", "/etc/remedy/remedy.toml"),
        ("worker", "/etc/remedy/remedy.toml"),
        ("worker", "/etc/remedy/remedy.toml"),
    ]
    image_names = {image["name"] for image in kustomization["images"]}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        ), name
        for container in pod["containers"]:
            assert container["image"] in image_names, f"{name}: image not set by kustomization"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["resources"]["requests"]["memory"], name
            assert "livenessProbe" in container, name
            ports = {port["name"] for port in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] in ports, f"{name} {probe}"
    intake = deployments["remedy-intake"]["spec"]["template"]["spec"]["containers"][0]
    assert intake["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert intake["readinessProbe"]["httpGet"]["path"] == "/readyz"
    index = deployments["remedy-worker-index"]["spec"]["template"]["spec"]["containers"][0]
    assert "index" in index["args"]
    assert _memory_mib(index["resources"]["requests"]["memory"]) >= 2048, (
        "the index worker holds the embedding model and its batches"
    )


def _memory_mib(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_intake_is_reachable_and_keeps_a_replica_through_a_drain(
    resources: list[dict[str, Any]],
) -> None:
    deployments = _deployments(resources)
    pod_labels = {
        name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()
    }

    def selects(selector: dict[str, str]) -> set[str]:
        return {name for name, labels in pod_labels.items() if selector.items() <= labels.items()}

    services = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Service"}
    assert selects(services["remedy-intake"]["spec"]["selector"]) == {"remedy-intake"}
    ingress = next(r for r in resources if r["kind"] == "Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] in services
    budgets = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    covered = set().union(*(selects(b["spec"]["selector"]["matchLabels"]) for b in budgets))
    assert {"remedy-intake", "remedy-worker-main"} <= covered
    for name in ("remedy-intake", "remedy-worker-main"):
        assert deployments[name]["spec"]["replicas"] >= 2, f"{name}: one replica has no peer"


def test_the_configmap_is_a_remedy_toml_and_the_secret_names_its_variables(
    resources: list[dict[str, Any]], tmp_path: Path
) -> None:
    configmap = next(r for r in resources if r["kind"] == "ConfigMap")
    text = configmap["data"]["remedy.toml"]
    tomllib.loads(text)
    (tmp_path / "remedy.toml").write_text(text)
    config = load_config(tmp_path / "remedy.toml")
    assert config.temporal.index_task_queue and config.qdrant.url
    secret = _kubernetes_resources(KUBERNETES_DIR / "secret.example.yaml")[0]
    assert (
        "secret.example.yaml"
        not in yaml.safe_load((KUBERNETES_DIR / "kustomization.yaml").read_text())["resources"]
    ), "applying the base must not overwrite real secrets with the example's"
    missing = _named_env_variables(config) - set(secret["stringData"]) - _optional_secrets(config)
    assert not missing, f"secret.example.yaml lacks {sorted(missing)}"
    for deployment in _deployments(resources).values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
