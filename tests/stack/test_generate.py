"""stack/generate.py: schema-valid compose files, the rules the schema cannot express, drift."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import REPO, SCHEMA, STACK, pools_env_text
from .rules import compose_problems


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _check(gen, validator, env: dict[str, str]):
    settings = gen.Settings.from_env(env)
    text = gen.render_compose(settings)
    assert text.startswith("# GENERATED")
    compose = yaml.safe_load(text)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    problems = compose_problems(compose, settings)
    assert not problems, "\n".join(problems)
    return settings, compose


# ---- the committed files ------------------------------------------------------------------


def test_committed_compose_validates(validator, gen, example_env):
    compose = yaml.safe_load((STACK / "compose.yml").read_text(encoding="utf-8"))
    assert not list(validator.iter_errors(compose))
    assert compose_problems(compose, gen.Settings.from_env(example_env)) == []


def test_committed_files_equal_generator_output(gen, example_env):
    files = gen.generate(gen.Settings.from_env(example_env))
    for name, content in files.items():
        committed = (STACK / name).read_text(encoding="utf-8")
        assert committed == content, (
            f"stack/{name} drifted: run python stack/generate.py --env stack/.env.example"
        )


def test_cli_writes_and_checks(tmp_path):
    cmd = [sys.executable, str(STACK / "generate.py"), "--env", str(STACK / ".env.example")]
    out = subprocess.run(cmd + ["--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert "kubernetes/overlays/production/qdrant-values.yaml" in written
    for name in written:
        assert (tmp_path / name).read_text() == (STACK / name).read_text()
    ok = subprocess.run(cmd + ["--out", str(STACK), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "nginx.conf").write_text("stale\n")
    (tmp_path / "kubernetes" / "overlays" / "dev" / "qdrant.yaml").unlink()
    stale = subprocess.run(
        cmd + ["--out", str(tmp_path), "--check"], capture_output=True, text=True
    )
    assert stale.returncode == 1
    assert stale.stderr.count(str(tmp_path)) == 2, stale.stderr
    assert "nginx.conf" in stale.stderr and "overlays/dev/qdrant.yaml" in stale.stderr


def test_cli_reports_bad_env(tmp_path):
    bad = tmp_path / ".env"
    bad.write_text("MODEL_ID=x\nTEI_VERSION=latest\n")
    out = subprocess.run(
        [sys.executable, str(STACK / "generate.py"), "--env", str(bad), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "TEI_VERSION" in out.stderr
    assert not (tmp_path / "compose.yml").exists()


def _generate(env_file, out):
    cmd = [sys.executable, str(STACK / "generate.py"), "--env", str(env_file), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.parametrize(
    "change, fix",
    [
        (
            "PROXY_BIND=0.0.0.0\n",
            "generate.py: refused: PROXY_BIND=0.0.0.0 publishes the proxy beyond this host "
            "without API keys: set PROXY_API_KEYS, or PROXY_BIND=127.0.0.1, or "
            "PROXY_ALLOW_ANONYMOUS=true to serve anyone who can reach it",
        ),
        (
            "MONITORING=true\n",
            "generate.py: refused: MONITORING=true needs GRAFANA_ADMIN_PASSWORD in stack/.env "
            "(e.g. the output of `openssl rand -hex 16`), or MONITORING=false",
        ),
    ],
)
def test_cli_refuses_unsafe_deployments(tmp_path, change, fix):
    env = tmp_path / ".env"
    env.write_text((STACK / ".env.example").read_text(encoding="utf-8") + change)
    out = _generate(env, tmp_path)
    assert (out.returncode, out.stderr, out.stdout) == (1, fix + "\n", "")
    assert not (tmp_path / "compose.yml").exists()


@pytest.mark.parametrize(
    "change",
    [
        "PROXY_BIND=0.0.0.0\nPROXY_API_KEYS=k1,k2\n",
        "PROXY_BIND=::\nPROXY_ALLOW_ANONYMOUS=true\n",
        "PROXY_BIND=::1\n",
        "MONITORING=true\nGRAFANA_ADMIN_PASSWORD=pw-never-written\n",
    ],
)
def test_cli_accepts_what_is_explicitly_safe(tmp_path, change):
    env = tmp_path / ".env"
    env.write_text((STACK / ".env.example").read_text(encoding="utf-8") + change)
    out = _generate(env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "k1" not in (tmp_path / "compose.yml").read_text()
    assert "pw-never-written" not in (tmp_path / "compose.yml").read_text()


def test_readme_main_command_generates(tmp_path):
    """`cp .env.example .env`, the README's sed line, then the generator: it succeeds."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sed = re.search(r"^\s*&& (sed -i .*stack/\.env) \\$", readme, re.M)
    assert sed, "the README's main command lost its sed line"
    (tmp_path / "stack").mkdir()
    shutil.copy(STACK / ".env.example", tmp_path / "stack" / ".env")
    subprocess.run(["bash", "-c", sed.group(1)], cwd=tmp_path, check=True)
    env = (tmp_path / "stack" / ".env").read_text()
    assert re.search(r"^QDRANT_API_KEY=[0-9a-f]{64}$", env, re.M), env
    out = _generate(tmp_path / "stack" / ".env", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    for name in ("compose.yml", "nginx.conf", "prometheus.yml"):
        assert (tmp_path / "out" / name).read_text() == (STACK / name).read_text()


def test_system_python_with_pyyaml_runs_it():
    """The generator needs no virtualenv: the system python3 (isolated) and PyYAML suffice."""
    system = Path("/usr/bin/python3")
    if not system.exists() or subprocess.run([system, "-I", "-c", "import yaml"]).returncode:
        pytest.skip("no system python3 with PyYAML (Debian: python3-yaml)")
    out = subprocess.run(
        [str(system), "-I", str(STACK / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert (out.returncode, out.stderr) == (0, "")


def test_without_pyyaml_one_line_names_the_fix():
    # -S: no site-packages, so no PyYAML (the standard library is all there is)
    out = subprocess.run(
        [sys.executable, "-S", str(STACK / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        "generate.py: PyYAML is missing: pip install pyyaml (or apt install python3-yaml)\n"
    )


def _declared(gen) -> dict[str, object]:
    """.env variable -> its declaration (EnvVar) in generate.py's Settings."""
    import dataclasses

    return {f.metadata["env"].name: f.metadata["env"] for f in dataclasses.fields(gen.Settings)}


def test_every_example_variable_is_documented_and_declared(gen):
    text = (STACK / ".env.example").read_text(encoding="utf-8")
    lines = text.splitlines()
    declared = _declared(gen)
    in_example = []
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and "=" in line:
            key = line.split("=", 1)[0]
            in_example.append(key)
            assert lines[i - 1].startswith("#"), f"{key} has no comment above it"
            assert key in declared, f"{key} is not a setting"
    assert sorted(in_example) == sorted(declared)
    secrets = dict.fromkeys(gen.COMPOSE_SECRETS, "s3cret-value")
    settings = gen.Settings.from_env(dict(gen.parse_dotenv(text), MONITORING="true", **secrets))
    compose = gen.render_compose(settings)
    for secret in gen.COMPOSE_SECRETS:  # read by compose only, as ${VAR}
        assert secret in declared and "${" + secret in compose
    assert "s3cret-value" not in compose


def test_example_header_lists_every_generated_file(gen, example_env):
    header = (STACK / ".env.example").read_text(encoding="utf-8").split("\n\n", 1)[0]
    for name in gen.generate(gen.Settings.from_env(example_env)):
        shown = name.split("/", 1)[0] + ("/" if "/" in name else "")
        assert f"stack/{shown}" in header, name


def test_example_shows_the_defaults(gen, example_env):
    """Each variable is declared once, with its default: the example writes the defaults out."""
    declared = _declared(gen)
    differ = {
        name: (example_env[name], var.default)
        for name, var in declared.items()
        if example_env[name] != var.default
    }
    assert differ == {
        "MODEL_ID": ("BAAI/bge-small-en-v1.5", ""),
        "GPU_IDS": ("0", ""),
        "GRAFANA_PUBLISH_PORT": ("3000", ""),
    }
    minimal = {name: value for name, (value, _) in differ.items()}
    assert gen.Settings.from_env(minimal) == gen.Settings.from_env(example_env)


# ---- variants -----------------------------------------------------------------------------


def test_example_is_one_gpu_with_internal_nginx_and_qdrant(gen, validator, example_env):
    s, c = _check(gen, validator, example_env)
    assert list(c["services"]) == ["tei-0", "nginx", "qdrant", "proxy"]
    assert "ports" not in c["services"]["nginx"] and "ports" not in c["services"]["qdrant"]
    q = c["services"]["qdrant"]
    assert q["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"
    assert q["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY:?")
    assert "6334" in q["expose"] and "qdrant-storage:/qdrant/storage" in q["volumes"]
    assert "curl" not in json.dumps(q["healthcheck"]) and "/readyz" in q["healthcheck"]["test"][-1]
    tei = c["services"]["tei-0"]
    assert tei["image"] == "ghcr.io/huggingface/text-embeddings-inference:hopper-1.9.3"
    assert tei["healthcheck"]["start_period"] == "30m"
    assert "HF_TOKEN" not in tei["environment"]  # empty in the example: not passed at all
    proxy = c["services"]["proxy"]
    assert proxy["build"] == {"context": "..", "dockerfile": "stack/Dockerfile"}


def test_four_gpus(gen, validator, example_env):
    env = dict(example_env, GPU_IDS="0,1,2,3", TEI_VARIANT="89")
    s, c = _check(gen, validator, env)
    tei = [n for n in c["services"] if n.startswith("tei-")]
    assert tei == ["tei-0", "tei-1", "tei-2", "tei-3"]
    for i, n in enumerate(tei):
        dev = c["services"][n]["deploy"]["resources"]["reservations"]["devices"]
        assert dev == [{"driver": "nvidia", "device_ids": [str(i)], "capabilities": ["gpu"]}]
        assert c["services"][n]["image"].endswith(":89-1.9.3")
    assert c["services"]["nginx"]["depends_on"]["tei-0"] == {"condition": "service_healthy"}
    conf = gen.render_nginx_conf(s)
    for n in tei:
        assert f"server {n}:80 resolve max_fails=3 fail_timeout=10s;" in conf
    assert "proxy_next_upstream_tries 3;" in conf


def test_gpu_uuids_and_plain_variant(gen, validator, example_env):
    env = dict(example_env, GPU_IDS="GPU-1a2b, GPU-3c4d", TEI_VARIANT="plain")
    s, c = _check(gen, validator, env)
    assert c["services"]["tei-1"]["image"].endswith(":1.9.3")
    assert c["services"]["tei-1"]["deploy"]["resources"]["reservations"]["devices"][0][
        "device_ids"
    ] == ["GPU-3c4d"]


def test_cpu_replicas(gen, validator, example_env):
    env = dict(example_env, TEI_VARIANT="cpu", GPU_IDS="", TEI_REPLICAS="3")
    s, c = _check(gen, validator, env)
    tei = [n for n in c["services"] if n.startswith("tei-")]
    assert len(tei) == 3
    for n in tei:
        assert "deploy" not in c["services"][n]
        assert c["services"][n]["image"].endswith(":cpu-1.9.3")


def test_remote_upstreams(gen, validator, example_env):
    env = dict(example_env, GPU_IDS="0,1", TEI_REMOTE_UPSTREAMS="10.0.0.12:8080, gpu-box-2:80")
    s, c = _check(gen, validator, env)
    conf = gen.render_nginx_conf(s)
    # names are re-resolved through Docker's DNS; an address has nothing to resolve
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in conf
    for up in ("tei-0:80", "tei-1:80", "gpu-box-2:80"):
        assert f"server {up} resolve max_fails" in conf
    assert "server 10.0.0.12:8080 max_fails" in conf
    assert "proxy_next_upstream_tries 3;" in conf


def test_remote_only(gen, validator, example_env):
    env = dict(
        example_env,
        TEI_VARIANT="cpu",
        GPU_IDS="",
        TEI_REPLICAS="0",
        TEI_REMOTE_UPSTREAMS="10.0.0.12:8080",
    )
    s, c = _check(gen, validator, env)
    assert not [n for n in c["services"] if n.startswith("tei-")]
    assert "depends_on" not in c["services"]["nginx"]
    assert "tei-models" not in c.get("volumes", {})


def test_external_qdrant(gen, validator, example_env):
    env = dict(
        example_env,
        QDRANT_URL="https://qdrant.internal:6333/",
        QDRANT_SHARDS="6",
        QDRANT_REPLICATION_FACTOR="2",
    )
    s, c = _check(gen, validator, env)
    assert "qdrant" not in c["services"] and "qdrant-storage" not in c["volumes"]
    env_ = c["services"]["proxy"]["environment"]
    assert env_["CACHED_TEI_QDRANT_URL"] == "https://qdrant.internal:6333"
    assert (
        env_["CACHED_TEI_QDRANT_SHARDS"] == "6"
        and env_["CACHED_TEI_QDRANT_REPLICATION_FACTOR"] == "2"
    )
    assert list(c["services"]["proxy"]["depends_on"]) == ["nginx"]


def test_published_nginx_and_qdrant_are_loopback_only(gen, validator, example_env):
    env = dict(
        example_env,
        NGINX_PUBLISH_PORT="8080",
        QDRANT_PUBLISH_PORT="6333",
        QDRANT_GRPC_PUBLISH_PORT="6334",
        PROXY_BIND="127.0.0.1",
        PROXY_PORT="9000",
    )
    s, c = _check(gen, validator, env)
    assert c["services"]["nginx"]["ports"] == [
        {"target": 80, "published": "8080", "host_ip": "127.0.0.1", "protocol": "tcp"}
    ]
    assert [p["published"] for p in c["services"]["qdrant"]["ports"]] == ["6333", "6334"]
    assert c["services"]["proxy"]["ports"][0]["host_ip"] == "127.0.0.1"


def test_secrets_are_references_never_values(gen, validator, example_env):
    env = dict(
        example_env,
        HF_TOKEN="hf_secretvalue",
        TEI_API_KEY="tei-secret",
        QDRANT_API_KEY="q-secret",
        PROXY_API_KEYS="a,b",
    )
    s, c = _check(gen, validator, env)
    text = gen.render_compose(s) + gen.render_nginx_conf(s)
    for secret in ("hf_secretvalue", "tei-secret", "q-secret"):
        assert secret not in text
    assert c["services"]["tei-0"]["environment"]["HF_TOKEN"] == "${HF_TOKEN}"
    assert c["services"]["tei-0"]["environment"]["API_KEY"] == "${TEI_API_KEY}"
    assert c["services"]["proxy"]["environment"]["CACHED_TEI_API_KEY"] == "${TEI_API_KEY}"


def test_tei_limits_reach_tei_nginx_and_proxy(gen, validator, example_env):
    env = dict(
        example_env,
        TEI_PAYLOAD_LIMIT="8000000",
        TEI_MAX_CLIENT_BATCH_SIZE="64",
        TEI_AUTO_TRUNCATE="false",
        MODEL_REVISION="abc123",
        TEI_DTYPE="float16",
        CACHE_TTL="86400",
    )
    s, c = _check(gen, validator, env)
    e = c["services"]["tei-0"]["environment"]
    assert (
        e["PAYLOAD_LIMIT"],
        e["MAX_CLIENT_BATCH_SIZE"],
        e["AUTO_TRUNCATE"],
        e["REVISION"],
        e["DTYPE"],
    ) == ("8000000", "64", "false", "abc123", "float16")
    assert c["services"]["proxy"]["environment"]["CACHED_TEI_TTL"] == "86400"
    assert c["services"]["proxy"]["environment"]["CACHED_TEI_MAX_PAYLOAD_BYTES"] == "8000000"
    assert "client_max_body_size 8000000;" in gen.render_nginx_conf(s)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"TEI_VERSION": "latest"}, "TEI_VERSION"),
        ({"QDRANT_VERSION": "latest"}, "QDRANT_VERSION"),
        ({"NGINX_VERSION": "1.27"}, "NGINX_VERSION"),
        ({"NGINX_VERSION": "1.27.2"}, "NGINX_VERSION 1.27.2 is too old: the TEI names are re-res"),
        ({"TEI_VARIANT": "ampere"}, "TEI_VARIANT"),
        ({"GPU_IDS": "0,1,0"}, "more than once"),
        ({"GPU_IDS": ""}, "no TEI upstream"),
        ({"TEI_VARIANT": "cpu"}, "GPU_IDS must be empty"),
        ({"TEI_REMOTE_UPSTREAMS": "no-port"}, "host:port"),
        ({"MODEL_ID": ""}, "MODEL_ID"),
        ({"QDRANT_URL": "https://q:6333", "QDRANT_PUBLISH_PORT": "6333"}, "QDRANT_PUBLISH_PORT"),
        ({"NGINX_PUBLISH_PORT": "8000"}, "collide"),
        ({"PROXY_PORT": "70000"}, "PROXY_PORT"),
        ({"CACHE_TTL": "1d"}, "CACHE_TTL"),
        ({"TEI_AUTO_TRUNCATE": "maybe"}, "TEI_AUTO_TRUNCATE"),
        ({"NGINX_READ_TIMEOUT": "5 minutes"}, "NGINX_READ_TIMEOUT"),
        ({"QDRANT_VERSION": "v1.15.1"}, "too old: the cache stores collection metadata"),
        ({"PROXY_WORKERS": "0"}, "PROXY_WORKERS"),
        ({"PROXY_WORKERS": "many"}, "PROXY_WORKERS"),
        ({"MONITORING": "yes please"}, "MONITORING"),
        ({"PROMETHEUS_VERSION": "latest"}, "PROMETHEUS_VERSION"),
        ({"GRAFANA_VERSION": "12"}, "GRAFANA_VERSION"),
        ({"MONITORING": "true", "GRAFANA_PUBLISH_PORT": "8000"}, "collide"),
        ({"MONITORING": "true", "PROMETHEUS_PUBLISH_PORT": "99999"}, "PROMETHEUS_PUBLISH_PORT"),
    ],
)
def test_bad_settings_are_refused(gen, example_env, change, message):
    with pytest.raises(gen.ConfigError, match=message):
        gen.Settings.from_env(dict(example_env, **change))


def test_qdrant_is_pinned_to_the_release_the_store_is_checked_against(gen, example_env):
    s = gen.Settings.from_env(example_env)
    assert gen.build_compose(s)["services"]["qdrant"]["image"] == "qdrant/qdrant:v1.19.0"
    assert gen.Settings.from_env(dict(example_env, QDRANT_VERSION="v1.16.0")).qdrant_version
    readme = (STACK / "README.md").read_text(encoding="utf-8")
    assert "v1.19.0" in readme and "v1.16.0" in readme


def test_proxy_workers(gen, validator, example_env):
    s, c = _check(gen, validator, example_env)
    assert c["services"]["proxy"]["environment"]["CACHED_TEI_PROXY_WORKERS"] == "auto"
    s, c = _check(gen, validator, dict(example_env, PROXY_WORKERS=" 04 "))
    assert c["services"]["proxy"]["environment"]["CACHED_TEI_PROXY_WORKERS"] == "4"
    s, c = _check(gen, validator, dict(example_env, PROXY_WORKERS="AUTO"))
    assert c["services"]["proxy"]["environment"]["CACHED_TEI_PROXY_WORKERS"] == "auto"


def test_no_monitoring_by_default(gen, validator, example_env):
    s, c = _check(gen, validator, example_env)
    assert not s.monitoring
    assert "prometheus" not in c["services"] and "grafana" not in c["services"]
    assert "secrets" not in c and "prometheus-data" not in c["volumes"]


def test_monitoring(gen, validator, example_env):
    env = dict(example_env, MONITORING="true", GPU_IDS="0,1", TEI_REMOTE_UPSTREAMS="gpu-box:8080")
    s, c = _check(gen, validator, env)
    services = c["services"]
    assert list(services) == ["tei-0", "tei-1", "nginx", "qdrant", "proxy", "prometheus", "grafana"]
    prom, graf = services["prometheus"], services["grafana"]
    assert prom["image"] == "prom/prometheus:v3.13.1" and graf["image"] == "grafana/grafana:12.4.3"
    assert prom["profiles"] == ["monitoring"] and graf["profiles"] == ["monitoring"]
    assert "ports" not in prom
    assert graf["ports"] == [
        {"target": 3000, "published": "3000", "host_ip": "127.0.0.1", "protocol": "tcp"}
    ]
    assert graf["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == (
        "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in stack/.env}"
    )
    # Qdrant's key reaches Prometheus as a compose secret, never in a file of ours
    assert c["secrets"] == {"qdrant_api_key": {"environment": "QDRANT_API_KEY"}}
    assert prom["secrets"] == ["qdrant_api_key"]
    assert {"prometheus-data", "grafana-data"} <= set(c["volumes"])
    # the mounted files exist, and Grafana's home dashboard is the provisioned one
    for svc in (prom, graf):
        for mount in svc["volumes"]:
            source = mount.split(":", 1)[0]
            if source.startswith("./"):
                assert (STACK / source).exists(), source
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/cached-tei.json"
    assert "./grafana/dashboards:/etc/grafana/dashboards:ro" in graf["volumes"]

    scrape = {job["job_name"]: job for job in gen.build_prometheus_config(s)["scrape_configs"]}
    assert scrape["cached-tei-proxy"]["static_configs"] == [{"targets": ["proxy:8000"]}]
    assert scrape["tei"]["static_configs"] == [
        {"targets": ["tei-0:80", "tei-1:80", "gpu-box:8080"]}
    ]
    assert scrape["qdrant"]["static_configs"] == [{"targets": ["qdrant:6333"]}]
    assert scrape["qdrant"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/qdrant_api_key",
    }
    assert "QDRANT_API_KEY" not in gen.render_prometheus_config(s)


@pytest.mark.parametrize("key", ["", "q-secret"])
def test_monitoring_with_external_qdrant(gen, validator, example_env, key):
    env = dict(
        example_env,
        MONITORING="true",
        QDRANT_URL="https://qdrant.internal:6333/base/",
        QDRANT_API_KEY=key,
        PROMETHEUS_PUBLISH_PORT="9090",
        GRAFANA_PUBLISH_PORT="",  # not published
    )
    s, c = _check(gen, validator, env)
    job = gen.build_prometheus_config(s)["scrape_configs"][-1]
    assert job["scheme"] == "https" and job["metrics_path"] == "/base/metrics"
    assert job["static_configs"] == [{"targets": ["qdrant.internal:6333"]}]
    assert ("authorization" in job) == bool(key)
    assert ("secrets" in c) == bool(key)
    assert "ports" not in c["services"]["grafana"]
    assert c["services"]["prometheus"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert key == "" or key not in gen.render_compose(s) + gen.render_prometheus_config(s)


def test_rules_catch_violations(gen, example_env):
    s = gen.Settings.from_env(dict(example_env, GPU_IDS="0,1"))
    c = gen.build_compose(s)
    c["services"]["tei-1"]["deploy"]["resources"]["reservations"]["devices"][0].update(
        device_ids=["0"], count=1
    )
    c["services"]["nginx"]["ports"] = ["8080:80"]
    c["services"]["qdrant"]["image"] = "qdrant/qdrant:latest"
    c["services"]["proxy"]["depends_on"]["ghost"] = {"condition": "service_started"}
    c["services"]["proxy"]["profiles"] = ["monitoring"]
    c["services"]["proxy"]["stop_grace_period"] = "30s"
    problems = "\n".join(compose_problems(c, s))
    for expected in (
        "count and device_ids",
        "more than once",
        "beyond loopback",
        "not pinned",
        "ghost",
        "proxy: profiles ['monitoring']",
        "proxy: stop_grace_period 30s does not exceed its 30s graceful stop",
    ):
        assert expected in problems


def test_rules_catch_monitoring_violations(gen, example_env):
    s = gen.Settings.from_env(dict(example_env, MONITORING="true"))
    c = gen.build_compose(s)
    del c["services"]["grafana"]["profiles"]
    c["services"]["prometheus"]["ports"] = ["9090:9090"]
    c["services"]["prometheus"]["volumes"] = []
    del c["secrets"]
    c["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "admin"
    problems = "\n".join(compose_problems(c, s))
    for expected in (
        "grafana: profiles [], expected the monitoring profile only",
        "prometheus: port 9090 published beyond loopback",
        "prometheus: does not mount the generated prometheus.yml",
        "prometheus: secret 'qdrant_api_key' not declared",
        "grafana: secret GF_SECURITY_ADMIN_PASSWORD is written literally",
    ):
        assert expected in problems
    off = gen.Settings.from_env(example_env)
    assert "MONITORING=false but a prometheus service" in "\n".join(compose_problems(c, off))


def test_dotenv_parser(gen):
    env = gen.parse_dotenv(
        "# comment\n\nexport A=1\nB = two words  # trailing comment\nC='lit # $x'\n"
        'D="q\\"uote\\nline"\nE=\nF=a#b\n'
    )
    assert env == {
        "A": "1",
        "B": "two words",
        "C": "lit # $x",
        "D": 'q"uote\nline',
        "E": "",
        "F": "a#b",
    }
    with pytest.raises(gen.ConfigError):
        gen.parse_dotenv("NOEQUALS\n")
    with pytest.raises(gen.ConfigError):
        gen.parse_dotenv("A='unterminated\n")


def test_stack_env_is_git_ignored():
    out = subprocess.run(["git", "check-ignore", "-q", "stack/.env"], cwd=REPO)
    assert out.returncode == 0, "stack/.env (holds secrets) must be git-ignored"


def test_readme_covers_the_operations(gen):
    readme = (STACK / "README.md").read_text(encoding="utf-8")
    assert "python stack/generate.py" in readme
    for variant in gen.TEI_VARIANTS:
        assert f"`{variant}`" in readme, f"TEI_VARIANT {variant} missing from the GPU table"
    for section in (
        "## Prerequisites",
        "## First start",
        "## Scaling",
        "## Sparse and rerank pools",
        "## Adding hosts",
        "## External or clustered Qdrant",
        "## Monitoring",
        "## Upgrading the model",
    ):
        assert section in readme
    for setting in (
        "CACHED_TEI_URL",
        "CACHED_TEI_QDRANT_URL",
        "NGINX_PUBLISH_PORT",
        "QDRANT_PUBLISH_PORT",
        "SPARSE_MODEL_ID",
        "RERANK_GPU_IDS",
        "CACHED_TEI_SPARSE_URL",
        "CACHED_TEI_RERANK_URL",
    ):
        assert setting in readme


@pytest.mark.parametrize("variant", ["example", "everything", "pools"])
def test_proxy_environment_is_what_the_package_reads(
    gen, example_env, pools_env, variant, monkeypatch
):
    """Every CACHED_TEI_* the compose file gives the proxy is a real setting and parses."""
    from cached_tei.proxy.settings import ProxySettings
    from cached_tei.settings import CachedTEISettings

    core_cls, proxy_cls = CachedTEISettings, ProxySettings
    known = {"CACHED_TEI_URL"}
    for cls in (core_cls, proxy_cls):
        prefix = cls.model_config.get("env_prefix", "")
        known |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    env = dict(pools_env if variant == "pools" else example_env)
    if variant == "everything":
        env.update(
            TEI_API_KEY="k",
            QDRANT_SHARDS="3",
            QDRANT_REPLICATION_FACTOR="2",
            CACHE_TTL="3600",
            QDRANT_URL="https://q.example:6333",
            PROXY_LOG_LEVEL="debug",
        )
    compose = gen.build_compose(gen.Settings.from_env(env))
    proxy_env = compose["services"]["proxy"]["environment"]
    unknown = sorted(set(proxy_env) - known)
    assert not unknown, f"the package reads no such settings: {unknown}"
    samples = {"QDRANT_API_KEY": "qk", "PROXY_API_KEYS": "a,b", "TEI_API_KEY": "tk"}
    for key in [k for k in __import__("os").environ if k.startswith("CACHED_TEI_")]:
        monkeypatch.delenv(key)
    for key, value in proxy_env.items():
        m = re.match(r"^\$\{(\w+)", value)
        monkeypatch.setenv(key, samples[m.group(1)] if m else value)
    monkeypatch.chdir(STACK)  # no stray .env
    core = core_cls()
    proxy = proxy_cls()
    assert core.tei_url == "http://nginx:80"
    assert (core.sparse_url, core.rerank_url) == (
        ("http://nginx:8081", "http://nginx:8082") if variant == "pools" else (None, None)
    )
    assert proxy.log_level == env.get("PROXY_LOG_LEVEL", "info")
    if variant == "everything":
        assert (
            core.ttl == 3600 and core.qdrant_shards == 3 and core.api_key.get_secret_value() == "tk"
        )


# ---- the sparse and rerank pools ----------------------------------------------------------


def test_pools(gen, validator, pools_env):
    s, c = _check(gen, validator, pools_env)
    services = c["services"]
    assert list(services) == [
        "tei-0",
        "tei-1",
        "tei-sparse-0",
        "tei-rerank-0",
        "tei-rerank-1",
        "nginx",
        "qdrant",
        "proxy",
    ]
    for name, gpu, model in (
        ("tei-1", "1", "BAAI/bge-small-en-v1.5"),
        ("tei-sparse-0", "2", "naver/efficient-splade-VI-BT-large-doc"),
        ("tei-rerank-1", "GPU-5e6f", "BAAI/bge-reranker-base"),
    ):
        svc = services[name]
        assert svc["image"] == services["tei-0"]["image"]
        assert svc["environment"]["MODEL_ID"] == model
        assert svc["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "device_ids": [gpu], "capabilities": ["gpu"]}
        ]
        assert svc["healthcheck"] == services["tei-0"]["healthcheck"]
    assert "REVISION" not in services["tei-sparse-0"]["environment"]
    assert services["tei-rerank-0"]["environment"]["REVISION"] == pools_env["RERANK_MODEL_REVISION"]
    # the same TEI options in every pool but the model
    options = {k: v for k, v in services["tei-0"]["environment"].items() if k != "MODEL_ID"}
    assert options.items() <= services["tei-sparse-0"]["environment"].items()
    assert services["tei-rerank-1"]["depends_on"] == {
        "tei-rerank-0": {"condition": "service_healthy"}
    }
    assert "depends_on" not in services["tei-sparse-0"]  # its pool's first: it downloads
    assert services["nginx"]["expose"] == ["80", "8081", "8082"]
    env = services["proxy"]["environment"]
    assert [(k, v) for k, v in env.items() if k.endswith("_URL") and "QDRANT" not in k] == [
        ("CACHED_TEI_URL", "http://nginx:80"),
        ("CACHED_TEI_SPARSE_URL", "http://nginx:8081"),
        ("CACHED_TEI_RERANK_URL", "http://nginx:8082"),
    ]
    conf = gen.render_nginx_conf(s)
    for upstream, port, servers, tries in (
        ("tei", 80, ["tei-0:80", "tei-1:80"], 2),
        ("tei_sparse", 8081, ["tei-sparse-0:80"], 1),
        ("tei_rerank", 8082, ["tei-rerank-0:80", "tei-rerank-1:80"], 2),
    ):
        block = conf.split(f"    upstream {upstream} {{\n", 1)[1].split("\n    upstream ", 1)[0]
        assert f"zone {upstream} 64k;" in block and "least_conn;" in block
        ups = [line.split()[1] for line in block.splitlines() if line.startswith("        server ")]
        assert ups == servers
        assert f"server {servers[0]} resolve max_fails=3 fail_timeout=10s;" in block
        assert f"listen {port};" in block and f"proxy_pass http://{upstream};" in block
        assert f"proxy_next_upstream_tries {tries};" in block
        assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in (
            block
        )
        assert "keepalive 64;" in block and "client_max_body_size 2000000;" in block
    scrape = {job["job_name"]: job for job in gen.build_prometheus_config(s)["scrape_configs"]}
    assert scrape["tei"]["static_configs"] == [{"targets": ["tei-0:80", "tei-1:80"]}]
    assert scrape["tei-sparse"]["static_configs"] == [{"targets": ["tei-sparse-0:80"]}]
    assert scrape["tei-rerank"]["static_configs"] == [
        {"targets": ["tei-rerank-0:80", "tei-rerank-1:80"]}
    ]


def test_pools_on_cpu(gen, validator, example_env):
    env = dict(
        example_env,
        TEI_VARIANT="cpu",
        GPU_IDS="",
        TEI_REPLICAS="0",
        TEI_REMOTE_UPSTREAMS="10.0.0.12:8080",
        SPARSE_MODEL_ID="naver/splade-v3",
        SPARSE_TEI_REPLICAS="2",
        RERANK_MODEL_ID="BAAI/bge-reranker-base",
    )
    s, c = _check(gen, validator, env)
    tei = [n for n in c["services"] if n.startswith("tei-")]
    assert tei == ["tei-sparse-0", "tei-sparse-1", "tei-rerank-0"]
    for name in tei:
        assert "deploy" not in c["services"][name]
        assert c["services"][name]["image"].endswith(":cpu-1.9.3")
    # the remote hosts join the dense pool only
    scrape = {job["job_name"]: job for job in gen.build_prometheus_config(s)["scrape_configs"]}
    assert scrape["tei"]["static_configs"] == [{"targets": ["10.0.0.12:8080"]}]
    assert "tei-models" in c["volumes"]
    assert c["services"]["nginx"]["depends_on"] == {
        "tei-sparse-0": {"condition": "service_healthy"},
        "tei-sparse-1": {"condition": "service_started"},
        "tei-rerank-0": {"condition": "service_healthy"},
    }


def test_one_optional_pool(gen, validator, example_env):
    env = dict(example_env, RERANK_MODEL_ID="BAAI/bge-reranker-base", RERANK_GPU_IDS="1")
    s, c = _check(gen, validator, env)
    assert [n for n in c["services"] if n.startswith("tei-")] == ["tei-0", "tei-rerank-0"]
    assert "CACHED_TEI_SPARSE_URL" not in c["services"]["proxy"]["environment"]
    conf = gen.render_nginx_conf(s)
    assert "tei_sparse" not in conf and "listen 8082;" in conf and "listen 8081;" not in conf


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"SPARSE_GPU_IDS": "1"},
            "SPARSE_GPU_IDS and KUBERNETES_SPARSE_TEI_REPLICAS need SPARSE_MODEL_ID: set it, "
            "or leave them empty for no sparse pool",
        ),
        (
            {"KUBERNETES_RERANK_TEI_REPLICAS": "2"},
            "RERANK_GPU_IDS and KUBERNETES_RERANK_TEI_REPLICAS need RERANK_MODEL_ID",
        ),
        (
            {"RERANK_MODEL_ID": "BAAI/bge-reranker-base"},
            r"RERANK_MODEL_ID needs RERANK_GPU_IDS: the GPUs of the rerank pool, one TEI each "
            r"\(or leave RERANK_MODEL_ID empty for no rerank pool\)",
        ),
        (
            {"SPARSE_MODEL_ID": "naver/splade-v3", "SPARSE_GPU_IDS": "1,0"},
            "GPU 0 is in both GPU_IDS and SPARSE_GPU_IDS: each GPU runs one TEI, of one pool; "
            "give each pool GPUs of its own",
        ),
        (
            {
                "SPARSE_MODEL_ID": "s",
                "SPARSE_GPU_IDS": "1",
                "RERANK_MODEL_ID": "r",
                "RERANK_GPU_IDS": "2,1",
            },
            "GPU 1 is in both SPARSE_GPU_IDS and RERANK_GPU_IDS",
        ),
        ({"SPARSE_MODEL_ID": "s", "SPARSE_GPU_IDS": "1,1"}, "SPARSE_GPU_IDS lists a GPU more"),
        (
            {"TEI_VARIANT": "cpu", "GPU_IDS": "", "SPARSE_MODEL_ID": "s", "SPARSE_GPU_IDS": "1"},
            r"SPARSE_GPU_IDS must be empty with TEI_VARIANT=cpu \(use SPARSE_TEI_REPLICAS\)",
        ),
        (
            {
                "TEI_VARIANT": "cpu",
                "GPU_IDS": "",
                "RERANK_MODEL_ID": "r",
                "RERANK_TEI_REPLICAS": "0",
            },
            "RERANK_MODEL_ID needs RERANK_TEI_REPLICAS >= 1 with TEI_VARIANT=cpu",
        ),
        ({"SPARSE_TEI_REPLICAS": "-1"}, "SPARSE_TEI_REPLICAS must be >= 0"),
    ],
)
def test_bad_pool_settings_are_refused(gen, example_env, change, message):
    with pytest.raises(gen.ConfigError, match=message):
        gen.Settings.from_env(dict(example_env, **change))


def test_cli_generates_the_pools(tmp_path):
    """The test .env through the command line: written, then --check clean on that folder."""
    env = tmp_path / ".env"
    env.write_text(pools_env_text(), encoding="utf-8")
    out = _generate(env, tmp_path / "out")
    assert out.returncode == 0, out.stderr
    compose = yaml.safe_load((tmp_path / "out" / "compose.yml").read_text())
    assert "tei-sparse-0" in compose["services"] and "tei-rerank-1" in compose["services"]
    tei = (tmp_path / "out" / "kubernetes" / "base" / "tei.yaml").read_text()
    assert "name: tei-sparse\n" in tei and "name: tei-rerank\n" in tei
    cmd = [sys.executable, str(STACK / "generate.py"), "--env", str(env), "--check"]
    ok = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # the committed files are the example's, where the pools are off
    stale = subprocess.run([*cmd, "--out", str(STACK)], capture_output=True, text=True)
    assert stale.returncode == 1 and "compose.yml" in stale.stderr


def test_rules_catch_pool_violations(gen, pools_env):
    s = gen.Settings.from_env(pools_env)
    c = gen.build_compose(s)
    services = c["services"]
    services["tei-sparse-0"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] = [
        "2",
        "5",
    ]
    services["tei-rerank-0"]["environment"]["MODEL_ID"] = "BAAI/bge-small-en-v1.5"
    del services["tei-rerank-1"]["depends_on"]
    services["nginx"]["expose"].remove("8081")
    services["proxy"]["environment"]["CACHED_TEI_RERANK_URL"] = "http://nginx:80"
    services["tei-sparse-7"] = services["tei-1"]
    problems = "\n".join(compose_problems(c, s))
    for expected in (
        "tei-sparse-0: pins GPUs ['2', '5'], not its one GPU 2",
        "GPU ids used more than once: ['1']",
        "tei-rerank-0: does not serve the rerank pool's model",
        "tei-rerank-1: does not wait for tei-rerank-0 to be healthy",
        "nginx: does not expose the sparse pool's port 8081",
        "proxy: CACHED_TEI_RERANK_URL is not http://nginx:8082",
        "sparse pool: TEI services ['tei-sparse-0', 'tei-sparse-7'], expected ['tei-sparse-0']",
    ):
        assert expected in problems, problems
    off = gen.Settings.from_env(dict(pools_env, SPARSE_MODEL_ID="", SPARSE_GPU_IDS=""))
    problems = "\n".join(compose_problems(gen.build_compose(s), off))
    assert "tei-sparse-0: a TEI service of no pool .env asks for" in problems
    assert "proxy: CACHED_TEI_SPARSE_URL is set but .env runs no such pool" in problems
