"""Every deployment file, checked by the real tool that reads it (no Docker engine runs here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.processes import free_port, wait_for_http
from harness.registries import Registry, make_registry
from harness.servers import ApiServer, start_api
from tests.conftest import REPO

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent  # the virtualenv's console scripts
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTMANAGER_DIR = REPO / "deploy" / "alertmanager"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "emotitrack.json"
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def tool(name: str) -> str:
    """A check tool from the dev dependencies or Debian; missing means failing, never skipping."""
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    assert found, (
        f"{name} is not installed: run `make test` (dev dependencies, scripts/system-deps.sh)"
    )
    return found


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


def dockerfile_stages() -> dict[str, str]:
    """{stage name: its lines} of the Dockerfile, in order."""
    stages: dict[str, str] = {}
    for block in ("\n" + (REPO / "Dockerfile").read_text()).split("\nFROM ")[1:]:
        stages[block.split("\n", 1)[0].split(" AS ")[1]] = block
    return stages


def test_dockerfile_passes_hadolint() -> None:
    run(tool("hadolint"), "--failure-threshold", "warning", "Dockerfile")
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm\n" in dockerfile  # pinned
    stages = dockerfile_stages()
    assert list(stages)[-2:] == ["jobs", "api"]  # `docker build .` builds the API
    for image in ("jobs", "api"):
        assert "USER 10001:10001" in stages[image]
        assert f"COPY --from=venv-{image} /opt/venv /opt/venv" in stages[image]
    # each image installs its profile's lock exactly: no test or lint tools, and the API none
    # of training's or monitoring's libraries
    assert "--require-hashes requirements-serving.lock" in stages["venv-api"]
    assert "--require-hashes requirements-runtime.lock" in stages["venv-jobs"]
    assert "requirements.lock" not in dockerfile
    assert "/health" in stages["api"]
    assert 'CMD ["python", "-m", "serving", "--host", "0.0.0.0"]' in stages["api"]


def test_compose_file_is_valid_and_keeps_secrets_out(tmp_path: Path) -> None:
    compose = tool("docker-compose")
    resolved = run(
        compose,
        "--env-file",
        ".env.example",
        "-f",
        "docker-compose.yml",
        "--profile",
        "jobs",
        "config",
        "--format",
        "json",
    )
    config = json.loads(resolved.stdout)
    services = config["services"]
    assert {
        "postgres",
        "mlflow",
        "api",
        "prometheus",
        "pushgateway",
        "grafana",
        "train",
        "monitor",
        "lb",
        "alertmanager",
        "reports",
    } <= set(services)
    assert (
        services["api"]["environment"]["EMOTITRACK_MODEL_URI"]
        == "models:/emotitrack-sentiment@production"
    )
    assert services["api"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["api"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "--artifacts-destination=/mlartifacts" in services["mlflow"]["command"]
    assert services["train"]["profiles"] == ["jobs"] and services["monitor"]["profiles"] == ["jobs"]
    # Without the secrets the stack refuses to start instead of running with a default password.
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    refused = subprocess.run(
        [compose, "--env-file", str(empty_env), "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


def compose_config(env_file: Path) -> dict[str, Any]:
    resolved = run(
        tool("docker-compose"), "--env-file", str(env_file), "-f", "docker-compose.yml",
        "--profile", "jobs", "config", "--format", "json",
    )  # fmt: skip
    config: dict[str, Any] = json.loads(resolved.stdout)
    return config


def test_compose_runs_mlflow_with_basic_auth_and_clients_log_in() -> None:
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    services = compose_config(REPO / ".env.example")["services"]
    mlflow_server = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow_server["command"]
    env = mlflow_server["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == example["MLFLOW_TRACKING_USERNAME"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == example["MLFLOW_TRACKING_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == example["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    mounts = {v["target"]: v for v in mlflow_server["volumes"]}
    assert mounts["/etc/mlflow/basic_auth.ini"]["read_only"] is True
    assert mounts["/mlauth"]["source"] == "mlflow-auth"  # the user store survives restarts
    for name in ("api", "train", "monitor"):
        client = services[name]["environment"]
        assert client["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert client["MLFLOW_TRACKING_USERNAME"] == example["MLFLOW_TRACKING_USERNAME"], name
        assert client["MLFLOW_TRACKING_PASSWORD"] == example["MLFLOW_TRACKING_PASSWORD"], name


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # mlflow.server imports starlette's wsgi
def test_the_auth_config_is_what_mlflow_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(REPO / "deploy/mlflow/basic_auth.ini"))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    config = read_auth_config()
    assert config.default_permission == "NO_PERMISSIONS"
    assert config.database_uri == "sqlite:////mlauth/basic_auth.db"
    assert config.admin_password is None  # no password in the file: only from the environment


def test_the_api_container_runs_unprivileged_on_a_read_only_file_system() -> None:
    api = compose_config(REPO / ".env.example")["services"]["api"]
    assert api["user"] == "10001:10001" and api["read_only"] is True
    assert set(api["tmpfs"]) == {"/tmp", "/run/prometheus"}
    assert api["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/prometheus"
    writable = [v for v in api["volumes"] if not v.get("read_only")]
    assert [(v["source"], v["target"]) for v in writable] == [("api-data", "/data")]
    for name in ("EMOTITRACK_API_KEYS", "EMOTITRACK_CORS_ORIGINS", "EMOTITRACK_STORE_TEXT"):
        assert name in api["environment"]


def test_every_volume_our_image_mounts_is_writable_by_its_user() -> None:
    # A new named volume copies the owner of its mount point in the image; a mount point the
    # image lacks is created as root, and the non-root services could not write there.
    dockerfile = (REPO / "Dockerfile").read_text()
    chown = next(line for line in dockerfile.splitlines() if "chown 10001:10001" in line)
    owned = set(chown.split("chown 10001:10001", 1)[1].split())
    services = compose_config(REPO / ".env.example")["services"]
    ours = {n: s for n, s in services.items() if s.get("image", "").startswith("emotitrack-")}
    assert {"api", "mlflow", "train", "monitor"} <= set(ours)
    targets = {name: service["build"]["target"] for name, service in ours.items()}
    assert targets == {**dict.fromkeys(ours, "jobs"), "api": "api"}  # the lean image serves
    assert set(targets.values()) <= set(dockerfile_stages())
    for name, service in ours.items():
        assert service.get("user", "10001:10001") == "10001:10001", name
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["target"] in owned, (name, volume["target"])


def test_compose_scales_the_api_behind_the_load_balancer() -> None:
    services = compose_config(REPO / ".env.example")["services"]
    api, lb = services["api"], services["lb"]
    # `docker compose up --scale api=3` needs an api with no host port and no fixed name
    assert "ports" not in api and "container_name" not in api
    assert [p["published"] for p in lb["ports"]] == ["8000"] and lb["image"].startswith("haproxy:")
    mounts = {v["target"]: v for v in lb["volumes"]}
    config = mounts["/usr/local/etc/haproxy/haproxy.cfg"]
    assert config["source"] == str(REPO / "deploy/haproxy/haproxy.cfg") and config["read_only"]
    assert "api" in lb["depends_on"]
    # Prometheus finds every replica through Docker's DNS, not one static target
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "emotitrack-api")
    assert "static_configs" not in job
    assert job["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]


def test_compose_delivers_alerts_and_serves_the_reports() -> None:
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    services = compose_config(REPO / ".env.example")["services"]
    manager = services["alertmanager"]
    assert manager["environment"]["ALERTMANAGER_WEBHOOK_URL"] == example["ALERTMANAGER_WEBHOOK_URL"]
    assert manager["entrypoint"] == ["/bin/sh", "/etc/alertmanager/entrypoint.sh"]
    assert "--cluster.listen-address=" in manager["command"]
    assert manager["environment"]["ALERTMANAGER_CONFIG"].startswith(tuple(manager["tmpfs"]))
    mounts = {v["target"]: v for v in manager["volumes"]}
    for name in ("alertmanager.yml", "entrypoint.sh"):
        mount = mounts[f"/etc/alertmanager/{name}"]
        assert mount["source"] == str(REPO / "deploy/alertmanager" / name) and mount["read_only"]
    assert "alertmanager" in services["prometheus"]["depends_on"]
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    # the drift alerts link to the report index the `reports` service publishes
    reports = services["reports"]
    assert reports["read_only"] is True
    served = {v["target"]: v for v in reports["volumes"]}["/usr/share/nginx/html"]
    assert served["source"] == "reports" and served["read_only"] is True
    assert services["monitor"]["environment"]["EMOTITRACK_REPORTS_DIR"] == "/reports"
    monitor_mounts = {v["target"]: v["source"] for v in services["monitor"]["volumes"]}
    assert monitor_mounts["/reports"] == "reports"
    (port,) = reports["ports"]
    index = f"http://{port['host_ip']}:{port['published']}/index.html"
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    for name in ("EmotiTrackDataDrift", "EmotiTrackPredictionDrift", "EmotiTrackQualityDegraded"):
        assert rules[name]["annotations"]["report_index"] == index, name


def render_alertmanager_config(tmp_path: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    """The compose entrypoint rendering the config, with `true` instead of Alertmanager."""
    env = {
        "PATH": os.environ["PATH"],
        "ALERTMANAGER_BIN": "true",
        "ALERTMANAGER_TEMPLATE": str(ALERTMANAGER_DIR / "alertmanager.yml"),
        "ALERTMANAGER_CONFIG": str(tmp_path / "alertmanager.yml"),
        **({"ALERTMANAGER_WEBHOOK_URL": url} if url is not None else {}),
    }
    return subprocess.run(
        ["sh", str(ALERTMANAGER_DIR / "entrypoint.sh")],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_alertmanager_config_renders_from_the_environment_and_passes_amtool(
    tmp_path: Path,
) -> None:
    run(tool("shellcheck"), str(ALERTMANAGER_DIR / "entrypoint.sh"))
    url = "https://hooks.example.com/services/T0/B0?token=a&b=c|d"  # & and | copied verbatim
    assert render_alertmanager_config(tmp_path, url).returncode == 0
    rendered = tmp_path / "alertmanager.yml"
    run(tool("amtool"), "check-config", str(rendered))
    config = yaml.safe_load(rendered.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    (webhook,) = receivers[config["route"]["receiver"]]["webhook_configs"]
    assert webhook == {"url": url, "send_resolved": True}
    # every severity the rules use has its own route
    severities = {r["labels"]["severity"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
                  for r in g["rules"]}  # fmt: skip
    routed = {m.split("=")[1].strip('"') for r in config["route"]["routes"] for m in r["matchers"]}
    assert severities == routed == {"page", "ticket"}
    for bad in (None, "", "hooks.example.com/no-scheme", 'https://x/"; rm -rf /'):
        refused = render_alertmanager_config(tmp_path, bad)
        assert refused.returncode == 2 and "ALERTMANAGER_WEBHOOK_URL" in refused.stderr, bad


def test_compose_refuses_to_start_without_the_mlflow_credentials(tmp_path: Path) -> None:
    for missing in (
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "ALERTMANAGER_WEBHOOK_URL",
    ):
        env_file = tmp_path / f"without-{missing}.env"
        env_file.write_text(
            "\n".join(
                line
                for line in (REPO / ".env.example").read_text().splitlines()
                if not line.startswith(f"{missing}=")
            )
        )
        refused = subprocess.run(
            [tool("docker-compose"), "--env-file", str(env_file), "-f", "docker-compose.yml", "config", "-q"],
            cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]},
        )  # fmt: skip
        assert refused.returncode != 0 and missing in refused.stderr, missing


@pytest.mark.parametrize(
    "workflow", sorted((REPO / ".github" / "workflows").glob("*.yml")), ids=lambda p: p.name
)
def test_workflow_passes_schema_and_actionlint(workflow: Path) -> None:
    tool("shellcheck")  # actionlint checks `run:` scripts with it when it is on PATH
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow))
    run(tool("actionlint"), str(workflow))


def test_workflows_do_what_they_promise() -> None:
    flows = {
        p.stem: yaml.safe_load(p.read_text())
        for p in (REPO / ".github" / "workflows").glob("*.yml")
    }
    assert set(flows) == {"ci", "cd-heroku", "retrain", "monitor"}
    assert "make test" in json.dumps(flows["ci"])
    cd_trigger = flows["cd-heroku"][True]["workflow_run"]  # YAML reads `on` as True
    assert cd_trigger["workflows"] == ["CI"] and cd_trigger["branches"] == ["main"]
    assert "conclusion == 'success'" in flows["cd-heroku"]["jobs"]["deploy"]["if"]
    assert "secrets.HEROKU_API_KEY" in json.dumps(flows["cd-heroku"])
    assert "schedule" in flows["retrain"][True] and "--gate" in json.dumps(flows["retrain"])
    assert "schedule" in flows["monitor"][True] and "--fail-on-drift" in json.dumps(
        flows["monitor"]
    )


def test_prometheus_config_rules_and_rule_tests() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
    run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS_DIR)
    tested = run(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in tested.stdout
    alerts = {
        r["alert"]
        for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tests = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    assert all(f"alertname: {alert}" in tests for alert in alerts)  # every alert has a rule test


def dashboard_queries() -> list[tuple[str, str]]:
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    dashboard = Dashboard.from_json(json.loads(DASHBOARD.read_text()))
    provisioned = {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    queries = []
    for panel in dashboard.panels or []:
        assert panel.datasource is not None and panel.datasource.uid in provisioned, panel.title
        for target in panel.targets or []:
            queries.append((panel.title, target.expr))
    return queries


def test_dashboard_parses_and_uses_the_provisioned_data_source() -> None:
    queries = dashboard_queries()
    titles = {title for title, _ in queries}
    assert len(titles) == 16 and len(queries) >= 35
    # the trends an on-call engineer reads over time: time series with their alert thresholds
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    for title, threshold in {
        "Monitoring verdicts": 1,
        "Drift share": 0.4,
        "Mean confidence vs alert minimum": 0.7,
        "Accuracy: estimated vs measured": 0.8,
    }.items():
        panel = panels[title]
        defaults = panel["fieldConfig"]["defaults"]
        assert panel["type"] == "timeseries", title
        assert threshold in [step["value"] for step in defaults["thresholds"]["steps"]], title
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", title
    replicas = [t["expr"] for t in panels["Requests per replica"]["targets"]]
    assert any("by (instance)" in expr for expr in replicas)  # each replica
    assert any(expr.startswith("sum(rate(") for expr in replicas)  # and their sum


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("deployment"))


def test_procfile_runs_under_honcho(registry: Registry, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        "EMOTITRACK_SPILL_DIR": str(tmp_path / "spill"),
    }
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen(
            [tool("honcho"), "-f", str(REPO / "Procfile"), "-d", str(tmp_path), "start"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", honcho, timeout=60, log=log)
            answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "A lovely film."})
            assert answer.status_code == 200 and answer.json()["sentiment"] == "positive"
        finally:
            os.killpg(honcho.pid, 15)
            honcho.wait(timeout=60)


@pytest.fixture(scope="module")
def live_prometheus(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ApiServer, ApiServer]]:
    """Two API replicas, and a real Prometheus scraping both every second (compose finds them
    through Docker's DNS; here they are listed)."""
    work = tmp_path_factory.mktemp("prometheus")
    replicas = [
        start_api(registry.tracking_uri, tmp_path_factory.mktemp(f"replica-{name}"))
        for name in ("a", "b")
    ]
    port = free_port()
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    config.pop("alerting")  # delivery has its own test (test_alert_delivery.py)
    targets = [api.url.removeprefix("http://") for api in replicas]
    config["scrape_configs"] = [
        {"job_name": "emotitrack-api", "static_configs": [{"targets": targets}]}
    ]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = work / "prometheus.log"
    with log.open("wb") as out:
        prometheus = subprocess.Popen(
            [tool("prometheus"), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_http(f"http://127.0.0.1:{port}/-/ready", prometheus, timeout=60, log=log)
            yield f"http://127.0.0.1:{port}", replicas[0], replicas[1]
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
            for api in replicas:
                api.terminate()


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, object]]:
    params = {"query": expr, **({"time": str(at)} if at is not None else {})}
    answer = httpx.get(f"{prometheus}/api/v1/query", params=params, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def wait_for_value(prometheus: str, expr: str, expected: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = query(prometheus, expr)
        if result and float(result[0]["value"][1]) == expected:  # type: ignore[index]
            return
        assert time.monotonic() < deadline, f"{expr} never reached {expected}: {result}"
        time.sleep(0.5)


def test_prometheus_scrapes_the_api_and_counts_predictions(
    live_prometheus: tuple[str, ApiServer, ApiServer],
) -> None:
    prometheus, api, _ = live_prometheus
    wait_for_value(prometheus, 'count(up{job="emotitrack-api"} == 1)', 2)
    texts = ["Great film.", "Awful film.", "Loved it.", "Hated it.", "Superb cast."]
    assert httpx.post(f"{api.url}/predict/batch", json={"texts": texts}).status_code == 200
    wait_for_value(prometheus, "sum(emotitrack_predictions_total)", 5)
    wait_for_value(prometheus, "min(emotitrack_model_loaded)", 1)


def test_every_dashboard_and_alert_query_runs(
    live_prometheus: tuple[str, ApiServer, ApiServer],
) -> None:
    """Every query parses; each one over series the live API exports also returns data. Series
    only the monitoring job pushes (through the Pushgateway) are absent here: those parse."""
    prometheus, api, _ = live_prometheus
    assert httpx.post(f"{api.url}/predict/batch", json={"texts": ["Fine.", "Dull."]}).is_success
    assert httpx.post(f"{api.url}/predict", json={}).status_code == 422  # a 4xx to show
    # a rate needs two scrapes of the series: wait for it, not for the first sample
    wait_for_value(prometheus, 'count(rate(emotitrack_http_requests_total{status="422"}[5m]))', 1)
    names = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values").json()["data"])
    for title, expr in dashboard_queries():
        result = query(prometheus, expr)
        used = set(re.findall(r"\b(?:emotitrack|process|haproxy)_[a-z0-9_]+|\bup\b", expr))
        if used <= names and '"5.."' not in expr:  # no request failed with a 5xx here
            assert result, f"{title}: {expr} returned nothing although the API exports {used}"
    alerts = [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for expr in alerts:
        query(prometheus, expr)
    loaded_rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert len(loaded_rules) == len(alerts) and all(r["health"] != "err" for r in loaded_rules)


def dashboard_panel(title: str) -> dict[str, str]:
    """{legend: query} of one panel."""
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == title)
    return {target["legendFormat"]: target["expr"] for target in panel["targets"]}


def test_the_replica_panels_count_each_replica_and_their_sum(
    live_prometheus: tuple[str, ApiServer, ApiServer], registry: Registry
) -> None:
    prometheus, first, second = live_prometheus
    for api, texts in ((first, ["Fine."] * 3), (second, ["Dull."] * 5)):
        assert httpx.post(f"{api.url}/predict/batch", json={"texts": texts}).is_success
    requests = dashboard_panel("Requests per replica")
    wait_for_value(prometheus, requests["replicas up"], 2)
    at = time.time()  # both queries at one instant: each scrape moves the rates
    per_replica = query(prometheus, requests["{{instance}}"], at)
    instances = {api.url.removeprefix("http://") for api in (first, second)}
    assert {r["metric"]["instance"] for r in per_replica} == instances  # type: ignore[index]
    total = float(query(prometheus, requests["all replicas"], at)[0]["value"][1])  # type: ignore[index]
    assert total == pytest.approx(sum(float(r["value"][1]) for r in per_replica))  # type: ignore[index]
    # the versions panel counts replicas (not worker processes) per version served
    versions_panel = dashboard_panel("Model versions served (replicas per version)")
    versions = query(prometheus, versions_panel["{{model_name}} v{{version}}"])
    served = [(r["metric"]["version"], r["value"][1]) for r in versions]  # type: ignore[index]
    assert served == [(registry.first.version, "2")]
