"""The deployment files are checked, not run (no Docker engine here): compose validates and
the Dockerfiles copy only what exists and start the real entry points."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def example_env() -> dict[str, str]:
    """The variables of .env.example, as compose would read them from .env."""
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {name: value for name, value in pairs}


def compose_config(env: dict[str, str], *profiles: str) -> subprocess.CompletedProcess:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed (make test installs it)")
    clean = {k: v for k, v in os.environ.items() if k not in example_env()}
    chosen = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), *chosen, "config"], capture_output=True,
                          text=True, cwd=ROOT, env={**clean, **env})


def test_compose_file_validates():
    result = compose_config(example_env())
    assert result.returncode == 0, result.stderr
    for service in ("api:", "worker:", "postgres:", "redis:", "minio:", "flower:"):
        assert f"  {service}" in result.stdout
    assert "DARKMATTER_AUTH: 'true'" in result.stdout or 'DARKMATTER_AUTH: "true"' in result.stdout


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfiles_copy_existing_paths(name):
    text = (ROOT / "docker" / name).read_text()
    copies = re.findall(r"^COPY (\S+) ", text, flags=re.M)
    assert copies
    for source in copies:
        assert (ROOT / source).exists(), f"{name} copies missing {source}"
    assert "torch==2.14.1" in text


def test_each_gpu_worker_owns_its_own_device():
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    per_gpu = {name: s for name, s in services.items() if name.startswith("worker") and name != "worker-multigpu"}
    assert len(per_gpu) >= 2
    owned = []
    for name, service in per_gpu.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device, f"{name} must not take every GPU"
        owned += device["device_ids"]
        assert service["command"][-2:] == ["--gpus", "0"]  # its one device, renumbered 0 in the container
    assert len(owned) == len(set(owned)), owned
    assert "multigpu" in services["worker-multigpu"]["command"]


@pytest.mark.parametrize("secret", ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
                                    "FLOWER_USER", "FLOWER_PASSWORD"])
def test_compose_refuses_to_start_without_its_secrets(secret):
    env = {k: v for k, v in example_env().items() if k != secret}
    result = compose_config(env)
    assert result.returncode != 0 and f"set {secret} in .env" in result.stderr


def test_only_the_tls_proxy_is_published_and_flower_needs_a_password():
    import yaml

    text = (ROOT / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    assert "darkmatter-secret" not in text and ":-darkmatter}" not in text  # no default credentials
    for name, service in services.items():
        for port in service.get("ports", []):
            assert name == "proxy" or str(port).startswith("127.0.0.1:"), (name, port)
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    api_env = services["api"]["environment"]
    assert "DARKMATTER_METRICS_TOKEN" in api_env and "DARKMATTER_DATASET_SOURCES" in api_env


def test_only_the_tls_proxy_is_published_and_redis_needs_its_password():
    import yaml

    result = compose_config({**example_env(), "REDIS_PASSWORD": "r3dis-pw"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "ports" not in services["api"]  # no plain HTTP outside the compose network
    assert [str(p["published"]) for p in services["proxy"]["ports"]] == ["443"]
    assert "reverse_proxy api:8000" in (ROOT / "docker" / "Caddyfile").read_text()
    assert services["api"]["environment"]["DARKMATTER_FORWARDED_ALLOW_IPS"] == "*"
    assert "--requirepass" in services["redis"]["command"] and "r3dis-pw" in services["redis"]["command"]
    urls = [value for service in services.values() for name, value in (service.get("environment") or {}).items()
            if name in ("DARKMATTER_BROKER_URL", "DARKMATTER_RESULT_BACKEND")]
    urls += [arg for arg in services["flower"]["command"] if arg.startswith("--broker=")]
    assert urls and all(":r3dis-pw@" in url for url in urls), urls


def test_the_api_refuses_placeholder_secrets(monkeypatch, tmp_path, capsys):
    from api.__main__ import main

    monkeypatch.setenv("DARKMATTER_HOME", str(tmp_path))
    monkeypatch.setenv("DARKMATTER_DATABASE_URL", "postgresql+psycopg://darkmatter:change-me@127.0.0.1:1/darkmatter")
    monkeypatch.setattr("jobs.logs.configure", lambda *args: None)  # leave the test run's logging alone
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--auth"])
    assert stopped.value.code == 2
    assert "DARKMATTER_DATABASE_URL" in capsys.readouterr().err


def test_ray_profile_runs_a_head_gpu_workers_and_the_driving_worker():
    import yaml

    result = compose_config(example_env(), "ray")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    head, node, driver = services["ray-head"], services["ray-worker"], services["ray-driver"]
    assert "--head" in head["command"] and "--include-dashboard=false" in head["command"]
    port = next(a for a in head["command"] if a.startswith("--port=")).split("=")[1]
    assert f"--address=127.0.0.1:{port}" in node["command"]  # RAY_HEAD_HOST defaults to the machine itself
    (gpus,) = node["deploy"]["resources"]["reservations"]["devices"]
    assert gpus["capabilities"] == ["gpu"] and node["network_mode"] == "host" and node["ipc"] == "host"
    assert driver["environment"]["DARKMATTER_RAY_ADDRESS"] == f"127.0.0.1:{port}"
    assert "multinode" in driver["command"] and "multinode" in driver["environment"]["DARKMATTER_QUEUES"].split(",")
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert all(raw[name]["profiles"] == ["ray"] for name in ("ray-head", "ray-worker", "ray-driver"))
