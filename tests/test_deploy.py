"""deploy/kubernetes: every manifest valid for the pinned Kubernetes versions, offline, and in
step with the daemon (its port, probe paths, configuration names, the image's user).

The schemas are those kubernetes-validate bundles (the upstream OpenAPI documents turned into
JSON Schema, one directory per Kubernetes minor version): no cluster and no network. The
Prometheus Operator's PodMonitor is a CRD, which no bundled schema covers: it is checked
against the subset of its API written out below, closed (an unknown or misspelt field fails).
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sms_monitor.config import Settings
from sms_monitor.inputs.telemetry import REQUEST_BUCKETS
from sms_monitor.outputs.webconfig import OPEN_PATHS

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
WEBHOOKS = KUBE / "components" / "webhooks"

# The oldest Kubernetes the manifests are for (every field used is in its API), and the newest
# whose schemas kubernetes-validate bundles; both are checked.
KUBERNETES_VERSIONS = ("1.30", "1.37")

OPERATORS_PORT = 9839
WEBHOOKS_PORT = 9840
IMAGE_UID = 10001
# Names the sharding work adds to docs/configuration.md; until it lands they are allowed here.
PENDING_IN_CONFIGURATION_DOCS = {"SMS_MONITOR_TOTAL_SHARDS", "SMS_MONITOR_SHARD"}

NOT_RESOURCES = {"kustomization.yaml", "statefulset-patch.yaml"}


def _manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name not in NOT_RESOURCES)


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _one(path: Path) -> dict[str, Any]:
    (doc,) = _load(path)
    return doc


def _add(doc: Any, path: str, value: Any) -> None:
    """RFC 6902 `add`, all the webhooks component's patch uses."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    if isinstance(doc, list):
        doc.insert(len(doc) if last == "-" else int(last), value)
    else:
        doc[last] = value


def _patched_statefulset() -> dict[str, Any]:
    sts = copy.deepcopy(_one(KUBE / "statefulset.yaml"))
    for op in _one_list(WEBHOOKS / "statefulset-patch.yaml"):
        assert op["op"] == "add", op
        _add(sts, op["path"], copy.deepcopy(op["value"]))
    return sts


def _one_list(path: Path) -> list[dict[str, Any]]:
    ops = yaml.safe_load(path.read_text())
    assert isinstance(ops, list)
    return ops


def _container(sts: dict[str, Any]) -> dict[str, Any]:
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container


def _env(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(sts)["env"]}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Validation must not reach out: any connection or name lookup fails the test."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network use during validation: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


# ------------------------------------------------------------------ schemas


def _kubernetes_resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in _manifest_files():
        for doc in _load(path):
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue
            found.append((str(path.relative_to(KUBE)), doc))
    found.append(("statefulset.yaml + components/webhooks", _patched_statefulset()))
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "resource"), _kubernetes_resources(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_valid_for_kubernetes(no_network: None, version: str, name: str,
                                          resource: dict[str, Any]) -> None:
    # strict: the schemas with additionalProperties false, so a misspelt field fails too
    try:
        validated = kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        pytest.fail(f"{name}: {resource['kind']} invalid for Kubernetes {version} at {where}: "
                    f"{e.message}")
    assert validated == version


def test_the_validator_notices_a_mistake(no_network: None) -> None:
    sts = copy.deepcopy(_one(KUBE / "statefulset.yaml"))
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSIONS[0], strict=True)
    sts = copy.deepcopy(_one(KUBE / "statefulset.yaml"))
    sts["spec"]["replicas"] = "3"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSIONS[0], strict=True)


_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": _LABELS,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": _STR, "operator": _STR,
                           "values": {"type": "array", "items": _STR}}}},
    },
}
_RELABEL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": _STR}, "separator": _STR,
        "targetLabel": _STR, "regex": _STR, "modulus": {"type": "integer", "minimum": 1},
        "replacement": _STR,
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                            "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                            "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                            "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
    },
}
# PodMonitor (monitoring.coreos.com/v1), the fields of the Prometheus Operator's API
# reference that a PodMonitor for sms-monitor may use; everything else is refused.
PODMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS,
                                    "annotations": _LABELS}},
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": _STR,
                "podTargetLabels": {"type": "array", "items": _STR},
                "selector": _SELECTOR,
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": _STR}}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "labelLimit": {"type": "integer", "minimum": 0},
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": _STR, "portNumber": {"type": "integer"}, "path": _STR,
                        "scheme": {"enum": ["http", "https"]},
                        "interval": _DURATION, "scrapeTimeout": _DURATION,
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "enableHttp2": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": _RELABEL},
                        "metricRelabelings": {"type": "array", "items": _RELABEL},
                        "basicAuth": {
                            "type": "object", "additionalProperties": False,
                            "properties": {k: {
                                "type": "object", "additionalProperties": False,
                                "required": ["key"],
                                "properties": {"name": _STR, "key": _STR,
                                               "optional": {"type": "boolean"}}}
                                for k in ("username", "password")}},
                    },
                }},
            },
        },
    },
}


def test_podmonitor_matches_the_operators_api() -> None:
    monitor = _one(KUBE / "podmonitor.yaml")
    jsonschema.Draft202012Validator.check_schema(PODMONITOR_SCHEMA)
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    misspelt = copy.deepcopy(monitor)
    misspelt["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, PODMONITOR_SCHEMA)


# ------------------------------------------------------------------ kustomize


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    kustomization = _one(KUBE / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    top = {p.name for p in KUBE.glob("*.yaml")} - NOT_RESOURCES - {"secret.example.yaml"}
    assert set(kustomization["resources"]) == top
    component = _one(WEBHOOKS / "kustomization.yaml")
    assert component["kind"] == "Component"
    for resource in component["resources"]:
        assert (WEBHOOKS / resource).is_file()
    for patch in component["patches"]:
        assert (WEBHOOKS / patch["path"]).is_file()
        target = patch["target"]
        sts = _one(KUBE / "statefulset.yaml")
        assert (target["kind"], target["name"]) == (sts["kind"], sts["metadata"]["name"])
    # the component is named in the kustomization's comment, where it is switched on
    assert "components/webhooks" in (KUBE / "kustomization.yaml").read_text()


def test_names_are_unique_per_kind() -> None:
    seen = [(doc["kind"], doc["metadata"]["name"]) for p in _manifest_files() for doc in _load(p)]
    assert len(seen) == len(set(seen)), seen


# ------------------------------------------------------------------ consistency


def test_ports_and_probes_are_the_daemons() -> None:
    sts = _one(KUBE / "statefulset.yaml")
    container = _container(sts)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": OPERATORS_PORT}
    assert Settings.model_fields["listen_address"].default == f"0.0.0.0:{OPERATORS_PORT}"
    env = _env(sts)
    assert env["SMS_MONITOR_LISTEN_ADDRESS"]["value"].endswith(f":{OPERATORS_PORT}")
    assert f"EXPOSE {OPERATORS_PORT}" in (ROOT / "Dockerfile").read_text()
    probes = {kind: container[kind]["httpGet"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in OPEN_PATHS  # no basic auth on probes: the kubelet has none
        assert probe["port"] == "http"


def test_webhooks_component_listens_where_its_service_points() -> None:
    sts = _patched_statefulset()
    ports = {p["name"]: p["containerPort"] for p in _container(sts)["ports"]}
    assert ports == {"http": OPERATORS_PORT, "webhooks": WEBHOOKS_PORT}
    env = _env(sts)
    assert env["SMS_MONITOR_WEBHOOK_LISTEN_ADDRESS"]["value"].endswith(f":{WEBHOOKS_PORT}")
    # off loopback the webhook listener requires public_url (the daemon exits 2 otherwise)
    assert env["SMS_MONITOR_PUBLIC_URL"]["value"].startswith("https://")
    service = _one(WEBHOOKS / "service-webhooks.yaml")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["webhooks"]


def test_services_and_monitor_point_at_named_container_ports() -> None:
    sts = _one(KUBE / "statefulset.yaml")
    names = {p["name"] for p in _container(sts)["ports"]}
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    headless = _one(KUBE / "service-headless.yaml")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    for path in (KUBE / "service.yaml", KUBE / "service-headless.yaml"):
        service = _one(path)
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names and port["port"] == OPERATORS_PORT
    for doc in (sts, _one(KUBE / "poddisruptionbudget.yaml"), _one(KUBE / "podmonitor.yaml")):
        assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = _one(KUBE / "podmonitor.yaml")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in names and endpoint["path"] == "/metrics"


def test_shard_count_is_the_replica_count() -> None:
    sts = _one(KUBE / "statefulset.yaml")
    env = _env(sts)
    assert int(env["SMS_MONITOR_TOTAL_SHARDS"]["value"]) == sts["spec"]["replicas"]
    # the shard number comes from the pod's ordinal (HOSTNAME sms-monitor-N), not a fixed value
    assert "SMS_MONITOR_SHARD" not in env
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_env_names_are_documented_configuration() -> None:
    documented = set(re.findall(r"`((?:SMS_MONITOR|TWILIO)_[A-Z0-9_]+)`",
                                (ROOT / "docs" / "configuration.md").read_text()))
    assert "SMS_MONITOR_STATE_DIR" in documented  # the pattern reads the table
    for sts in (_one(KUBE / "statefulset.yaml"), _patched_statefulset()):
        for name in _env(sts):
            assert name in documented | PENDING_IN_CONFIGURATION_DOCS, \
                f"{name} is not in docs/configuration.md"


def test_secret_references_match_the_example_secret() -> None:
    secret = _one(KUBE / "secret.example.yaml")
    env = _env(_one(KUBE / "statefulset.yaml"))
    refs = {e["valueFrom"]["secretKeyRef"]["key"]: e["valueFrom"]["secretKeyRef"]
            for e in env.values() if "valueFrom" in e}
    assert set(refs) == set(secret["stringData"])
    assert {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SMS_MONITOR_DATABASE_URL"} <= set(refs)
    for name, ref in refs.items():
        assert ref["name"] == secret["metadata"]["name"]
        assert name == next(n for n, e in env.items() if e.get("valueFrom", {})
                            .get("secretKeyRef") is ref)  # the variable is named as its key
    # the credentials are required, the rest optional
    assert not refs["TWILIO_AUTH_TOKEN"].get("optional", False)
    assert refs["SMS_MONITOR_DATABASE_URL"]["optional"] is True
    # no credential in plain text in the StatefulSet
    for name, e in env.items():
        if name.startswith("TWILIO_") or name == "SMS_MONITOR_DATABASE_URL":
            assert "value" not in e, name


def test_runs_as_the_images_user_on_a_read_only_root() -> None:
    assert f"--uid {IMAGE_UID}" in (ROOT / "Dockerfile").read_text()
    sts = _one(KUBE / "statefulset.yaml")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["fsGroup"] == IMAGE_UID
    assert pod["automountServiceAccountToken"] is False
    container = _container(sts)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # the state directory lies on a writable volume
    state_dir = Path(_env(sts)["SMS_MONITOR_STATE_DIR"]["value"])
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    assert any(state_dir.is_relative_to(path) for path in mounts.values())
    volumes = {v["name"] for v in pod["volumes"]}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    assert set(mounts) <= volumes | claims


def test_disruption_budget_keeps_all_but_one_shard() -> None:
    pdb = _one(KUBE / "poddisruptionbudget.yaml")
    assert pdb["spec"]["maxUnavailable"] == 1


# ------------------------------------------------------------------ docs


def _series_per_account(account: str) -> int:
    text = (ROOT / "tests" / "fixtures" / "sample_exposition.txt").read_text()
    return sum(1 for line in text.splitlines()
               if not line.startswith("#") and f'account="{account}"' in line)


def test_prometheus_at_scale_page_states_todays_series_count() -> None:
    page = (ROOT / "docs" / "prometheus-at-scale.md").read_text()
    count = _series_per_account("primary")
    assert f"**{count}**" in page, f"the page should state {count} series for one account"
    for needed in ("hashmod", "modulus", "Thanos", "Mimir", "record:", "retention"):
        assert needed in page, needed
    for link in re.findall(r"\]\(((?:\.\./)?deploy/[^)#]+)\)", page):
        assert (ROOT / "docs" / link).resolve().exists(), link


def _blocks(page: str, first_word: str) -> list[str]:
    return [b for b in re.findall(r"```yaml\n(.*?)```", page, re.S) if b.startswith(first_word)]


def test_prometheus_at_scale_rules_and_scrape_config_load(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is required (scripts/test installs Debian's prometheus)"
    page = (ROOT / "docs" / "prometheus-at-scale.md").read_text()
    (rules,) = _blocks(page, "groups:")
    (scrape,) = _blocks(page, "scrape_configs:")
    (external,) = _blocks(page, "global:")
    (tmp_path / "rules.yml").write_text(rules)
    # Debian's Prometheus is built without Kubernetes discovery: the relabelling is what is
    # checked here, so the discovery becomes a static target
    sd = "    kubernetes_sd_configs:\n      - role: pod\n"
    assert sd in scrape
    scrape = scrape.replace(sd, '    static_configs:\n      - targets: ["sms-monitor-0:9839"]\n')
    (tmp_path / "prometheus.yml").write_text(external + scrape)
    for args in (["check", "rules", "rules.yml"], ["check", "config", "prometheus.yml"]):
        result = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    for name in set(re.findall(r"\b((?:sms|twilio)_[a-z_]+?)(?:_bucket)?\{", rules)):
        assert f"`{name}`" in metrics, name
    assert len(REQUEST_BUCKETS) == 11 and "14 per endpoint" in page


def test_scraped_job_is_the_one_the_shipped_rules_select() -> None:
    monitor = _one(KUBE / "podmonitor.yaml")
    pod_labels = _one(KUBE / "statefulset.yaml")["spec"]["template"]["metadata"]["labels"]
    job = pod_labels[monitor["spec"]["jobLabel"]]
    assert f'job="{job}"' in (ROOT / "alerts.rules.yml").read_text()
