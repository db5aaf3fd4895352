"""The Kubernetes deployment (deploy/k8s) checked by real tools and against the code it runs:
each overlay rendered by `kubectl kustomize`, every built-in resource validated by
`kubernetes-validate` against the Kubernetes 1.31 schema, the Prometheus Operator resources
against their CRDs' schemas (copied into deploy/k8s/crd-schemas), the generated alert rules by
`promtool`, and the probes, port, settings and stop sequence against serving, monitoring and
training."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from emotitrack.settings_reference import OTHER_VARIABLES, environment_variables
from monitoring.retention import RetentionSettings
from monitoring.settings import MonitoringSettings
from serving.prediction_log import PredictionLog
from serving.settings import ServingSettings
from training.settings import TrainingSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("small", "production")
KUBERNETES_VERSION = "1.31.0"
BIN = Path(sys.executable).parent  # the virtualenv's console scripts
CRD_SCHEMAS = {
    "ServiceMonitor": K8S / "crd-schemas" / "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": K8S / "crd-schemas" / "monitoring.coreos.com_prometheusrules.yaml",
}
# container name -> the settings model of the process it runs
SETTINGS_OF: dict[str, type[BaseSettings]] = {
    "api": ServingSettings,
    "monitor": MonitoringSettings,
    "prune": RetentionSettings,
    "train": TrainingSettings,
}
# variables other code reads: MLflow's client and server, prometheus_client, the serve command
OTHER_NAMES = {name.strip() for names, _, _ in OTHER_VARIABLES for name in names.split(",")} | {
    "HOME",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
    "MLFLOW_SERVER_ALLOWED_HOSTS",
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_BACKEND_STORE_URI",  # only expanded into `mlflow server --backend-store-uri`
}


def tool(name: str) -> str:
    """A real tool from the virtualenv or the machine; a missing one fails the test."""
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.fail(f"{name} is not installed (see docs/kubernetes.md#what-the-tests-prove)")
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rules_writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_rules", REPO / "scripts" / "k8s_rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{overlay: the file `kubectl kustomize` rendered for it}."""
    kubectl = tool("kubectl")
    out = tmp_path_factory.mktemp("k8s")
    files = {}
    for overlay in OVERLAYS:
        done = run(kubectl, "kustomize", str(K8S / "overlays" / overlay))
        assert done.returncode == 0, f"kubectl kustomize {overlay}:\n{done.stderr}"
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(done.stdout)
    return files


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, its pod spec) of every Deployment and CronJob."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def api_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = find(docs, "Deployment", "emotitrack-api")["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "api")


def environment(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str | None]:
    """Every variable the container gets: {name: value, or None when it comes from a Secret}."""
    names: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        config = find(docs, "ConfigMap", source["configMapRef"]["name"])
        names.update(config.get("data", {}))
    for variable in container.get("env", []):
        names[variable["name"]] = variable.get("value")
    return names


def settings_names(settings: type[BaseSettings]) -> set[str]:
    return {
        variable
        for name, field in settings.model_fields.items()
        for variable in environment_variables(settings, name, field)
    }


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused where the CRD lists the fields (the API server
    would drop them silently: a typo'd field would do nothing)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        tightened["additionalProperties"] = False
    return tightened


def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    crd = yaml.safe_load(CRD_SCHEMAS[kind].read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft4Validator(strict(version["schema"]["openAPIV3Schema"]))


# -- the real tools ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_passes_the_kubernetes_schema(
    overlay: str, rendered: dict[str, Path]
) -> None:
    done = run(
        tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", str(rendered[overlay])
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {doc["kind"] for doc in documents(rendered[overlay])}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"Ingress", "ConfigMap", "CronJob", "ServiceMonitor", "PrometheusRule"} <= kinds
    # every built-in kind was checked: only the operator's kinds have no schema in the tool
    unchecked = set(re.findall(r"Couldn't find schema for kind (\w+)", done.stdout + done.stderr))
    assert unchecked == {"ServiceMonitor", "PrometheusRule"}
    assert done.stdout.count("passed for resource") == len(documents(rendered[overlay])) - sum(
        doc["kind"] in unchecked for doc in documents(rendered[overlay])
    )


def test_schema_check_refuses_a_broken_manifest(rendered: dict[str, Path], tmp_path: Path) -> None:
    text = rendered["small"].read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        text.replace("containerPort: 8000", 'containerPort: "8000"').replace(
            "readinessProbe:", "readinesProbe:"
        )
    )
    done = run(tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", str(broken))
    assert done.returncode != 0
    assert "'8000' is not of type 'integer'" in done.stdout + done.stderr
    assert "readinesProbe" in done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_resources_match_their_crd_schema(overlay: str, rendered: dict[str, Path]) -> None:
    checked = 0
    for doc in documents(rendered[overlay]):
        if doc["kind"] in CRD_SCHEMAS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            errors = [e.message for e in crd_validator(doc["kind"]).iter_errors(doc)]
            assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
            checked += 1
    assert checked == 3  # two ServiceMonitors, one PrometheusRule


def test_crd_schema_check_refuses_a_typo() -> None:
    monitor = next(yaml.safe_load_all((K8S / "base" / "servicemonitor.yaml").read_text()))
    monitor["spec"]["endpoints"][0]["prot"] = monitor["spec"]["endpoints"][0].pop("port")
    assert not crd_validator("ServiceMonitor").is_valid(monitor)
    rule = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    rule["spec"]["groups"][0]["rules"][0]["for"] = 60  # a duration is a string
    assert not crd_validator("PrometheusRule").is_valid(rule)


def test_prometheus_rule_is_generated_from_alerts_yml() -> None:
    writer = rules_writer()
    alerts = writer.ALERTS.read_text()
    written = (K8S / "base" / "prometheusrule.yaml").read_text()
    assert written == writer.render(alerts), "stale: run `python scripts/k8s_rules.py`"
    rule = yaml.safe_load(written)
    assert rule["spec"]["groups"] == yaml.safe_load(alerts)["groups"]


def test_generated_rules_pass_promtool(tmp_path: Path) -> None:
    rule = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    done = run(tool("promtool"), "check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = sum(len(group["rules"]) for group in rule["spec"]["groups"])
    assert f"SUCCESS: {alerts} rules found" in done.stdout


def test_alerted_jobs_are_scraped(rendered: dict[str, Path]) -> None:
    """The alerts select `job="..."`; with the operator that label is the Service's name."""
    docs = documents(rendered["production"])
    rule = find(docs, "PrometheusRule", "emotitrack")
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    jobs = {job for expr in exprs for job in re.findall(r'job="([^"]+)"', expr)}
    assert jobs
    for job in jobs:
        service = find(docs, "Service", job)
        selected = [
            monitor
            for monitor in docs
            if monitor["kind"] == "ServiceMonitor"
            and monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
            and "jobLabel" not in monitor["spec"]
        ]
        assert selected, f"no ServiceMonitor scrapes Service {job}"
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert {e["port"] for m in selected for e in m["spec"]["endpoints"]} <= ports


# -- the manifests against the code -----------------------------------------------------------


def test_probes_are_routes_of_the_api(rendered: dict[str, Path]) -> None:
    from serving.app import create_app

    routes = {getattr(route, "path", None) for route in create_app().routes}
    for overlay in OVERLAYS:
        api = api_container(documents(rendered[overlay]))
        assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert api["livenessProbe"]["httpGet"]["path"] == "/health"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert api[probe]["httpGet"]["path"] in routes
            assert api[probe]["httpGet"]["port"] == "http"


def test_ingress_exposes_routes_only_and_keeps_internals_inside(
    rendered: dict[str, Path],
) -> None:
    from serving.app import create_app

    routes = [path for route in create_app().routes if (path := getattr(route, "path", None))]
    ingress = find(documents(rendered["production"]), "Ingress", "emotitrack-api")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for path in paths:
        prefix = path["path"]
        if path["pathType"] == "Exact":
            assert prefix in routes
        else:
            assert any(r == prefix or r.startswith(prefix + "/") for r in routes), prefix

    def exposed(route: str) -> bool:
        return any(
            route == p["path"] or (p["pathType"] == "Prefix" and route.startswith(p["path"] + "/"))
            for p in paths
        )

    assert exposed("/predict/batch") and exposed("/v2/models/{name}/infer")
    assert not any(exposed(route) for route in ("/metrics", "/admin/reload", "/ready"))
    assert ingress["spec"]["tls"][0]["secretName"] == "emotitrack-tls"


def test_container_port_is_the_one_the_image_listens_on(rendered: dict[str, Path]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    api_stage = dockerfile.split("\nFROM runtime AS api\n")[1].split("\nFROM ")[0]
    (exposed,) = re.findall(r"^EXPOSE (\d+)$", api_stage, re.MULTILINE)
    (port_default,) = re.findall(r"^\s+PORT=(\d+)", dockerfile, re.MULTILINE)
    assert exposed == port_default
    (user,) = re.findall(r"^USER (\d+):(\d+)$", api_stage, re.MULTILINE)
    for overlay in OVERLAYS:
        docs = documents(rendered[overlay])
        api = api_container(docs)
        (port,) = api["ports"]
        assert (port["name"], port["containerPort"]) == ("http", int(exposed))
        assert environment(api, docs)["PORT"] == exposed  # what `python -m serving` binds
        service = find(docs, "Service", "emotitrack-api")
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        pod = find(docs, "Deployment", "emotitrack-api")["spec"]["template"]["spec"]
        assert (
            str(pod["securityContext"]["runAsUser"]),
            str(pod["securityContext"]["runAsGroup"]),
        ) == user


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_environment_names_are_real_settings(
    overlay: str, rendered: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = documents(rendered[overlay])
    seen = set()
    for workload, spec in pod_specs(docs):
        for container in spec["containers"]:
            variables = environment(container, docs)
            settings = SETTINGS_OF.get(container["name"])
            known = (settings_names(settings) if settings else set()) | OTHER_NAMES
            unknown = sorted(set(variables) - known)
            assert not unknown, f"{workload}/{container['name']} sets unknown {unknown}"
            if settings is None:
                assert not any(name.startswith("EMOTITRACK_") for name in variables)
                continue
            seen.add(container["name"])
            # the values parse: the part's own settings model reads them as the pod would
            for name in list(os.environ):
                if name.startswith("EMOTITRACK_") or name == "MLFLOW_TRACKING_URI":
                    monkeypatch.delenv(name)
            for name, value in variables.items():
                if value is not None:
                    monkeypatch.setenv(name, value)
            loaded = settings().model_dump()
            if "tracking_uri" in loaded:  # the retention job needs no MLflow
                assert loaded["tracking_uri"] == variables["MLFLOW_TRACKING_URI"]
            if "EMOTITRACK_MODEL_URI" in variables:
                assert loaded["model_uri"] == variables["EMOTITRACK_MODEL_URI"]
    assert seen == set(SETTINGS_OF)


def test_the_api_writes_only_to_empty_dirs(rendered: dict[str, Path]) -> None:
    """Read-only root file system: the spill folder, prometheus_client's folder and the
    temporary folder (model downloads) are emptyDir volumes."""
    for overlay in OVERLAYS:
        docs = documents(rendered[overlay])
        pod = find(docs, "Deployment", "emotitrack-api")["spec"]["template"]["spec"]
        api = api_container(docs)
        variables = environment(api, docs)
        empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
        spill_dir = ServingSettings(spill_dir=variables["EMOTITRACK_SPILL_DIR"]).spill_dir
        for written in (str(spill_dir), variables["PROMETHEUS_MULTIPROC_DIR"], "/tmp"):
            assert written
            mount = next((m for m in mounts if written == m or written.startswith(m + "/")), None)
            assert mount is not None and mounts[mount] in empty, f"{written} is not writable"


def test_grace_period_covers_the_log_flush(rendered: dict[str, Path]) -> None:
    """SIGTERM -> preStop sleep, uvicorn's graceful shutdown, then the prediction log's close
    (its timeout, then a stalled writer's spill): the pod must not be killed before."""
    cli = ast.parse((REPO / "serving" / "cli.py").read_text())
    (uvicorn_grace,) = [
        float(node.value.value)
        for node in ast.walk(cli)
        if isinstance(node, ast.keyword)
        and node.arg == "timeout_graceful_shutdown"
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, int | float)
    ]
    flush = inspect.signature(PredictionLog.close).parameters["timeout"].default
    stall = inspect.signature(PredictionLog.__init__).parameters["stall_timeout_s"].default
    for overlay in OVERLAYS:
        docs = documents(rendered[overlay])
        pod = find(docs, "Deployment", "emotitrack-api")["spec"]["template"]["spec"]
        command = api_container(docs)["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        needed = float(command[1]) + uvicorn_grace + flush + stall
        assert pod["terminationGracePeriodSeconds"] >= needed
        strategy = find(docs, "Deployment", "emotitrack-api")["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_read_only_and_bounded(
    overlay: str, rendered: dict[str, Path]
) -> None:
    for workload, spec in pod_specs(documents(rendered[overlay])):
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        assert spec["automountServiceAccountToken"] is False, workload
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, workload
            assert context["allowPrivilegeEscalation"] is False, workload
            assert context["capabilities"]["drop"] == ["ALL"], workload
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_references_the_docs_list(overlay: str, rendered: dict[str, Path]) -> None:
    docs = documents(rendered[overlay])
    assert not [d for d in docs if d["kind"] == "Secret"]  # values are never committed
    guide = (REPO / "docs" / "kubernetes.md").read_text()
    referenced = set()
    for _, spec in pod_specs(docs):
        for container in spec["containers"]:
            for variable in container.get("env", []):
                if ref := variable.get("valueFrom", {}).get("secretKeyRef"):
                    referenced.add((ref["name"], ref["key"]))
    assert referenced
    for name, key in referenced:
        assert f"`{name}`" in guide and f"`{key}`" in guide, f"document Secret {name}/{key}"


def test_profiles_reach_the_registry_their_way(rendered: dict[str, Path]) -> None:
    small = documents(rendered["small"])
    mlflow = find(small, "Service", "emotitrack-mlflow")
    uri = environment(api_container(small), small)["MLFLOW_TRACKING_URI"]
    assert uri == f"http://{mlflow['metadata']['name']}:{mlflow['spec']['ports'][0]['port']}"
    server = find(small, "Deployment", "emotitrack-mlflow")["spec"]["template"]["spec"]
    args = server["containers"][0]["args"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args  # from the Secret
    allowed = environment(server["containers"][0], small)["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert allowed
    # MLflow refuses other Host headers than localhost and private IPs unless allowed
    from mlflow.server.security_utils import is_allowed_host_header

    hosts = allowed.split(",")
    for host in ("emotitrack-mlflow:5000", "emotitrack-mlflow.emotitrack.svc.cluster.local:5000"):
        assert is_allowed_host_header(hosts, host), host
    assert not is_allowed_host_header(hosts, "attacker.example:5000")
    auth = find(
        small,
        "ConfigMap",
        next(v["configMap"]["name"] for v in server["volumes"] if "configMap" in v),
    )
    copied = (K8S / "components" / "mlflow-server" / "basic_auth.ini").read_text()
    assert auth["data"]["basic_auth.ini"] == copied
    assert copied == (REPO / "deploy" / "mlflow" / "basic_auth.ini").read_text()

    production = documents(rendered["production"])
    assert not [d for d in production if "mlflow" in d["metadata"]["name"]]
    external = environment(api_container(production), production)["MLFLOW_TRACKING_URI"]
    assert external and external.startswith("https://")
    hpa = find(production, "HorizontalPodAutoscaler", "emotitrack-api")["spec"]
    assert hpa["minReplicas"] >= 3 and hpa["maxReplicas"] > hpa["minReplicas"]
