"""The container image, checked without a container engine (none runs on this kind of machine):
the Dockerfile's user, entrypoint, health check and build context, and the command it installs —
the wheel built from exactly what the Dockerfile copies, installed into a fresh virtual
environment, starts `ledgergate serve` and answers the image's own HEALTHCHECK command."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.procs import ROOT, Proc, free_port

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_INPUTS = {"pyproject.toml", "README.md", "src"}
SECRETISH = re.compile(r"(\.key|\.pem|\.hmac|\.p12|\.env|secret|token|password|credential)", re.IGNORECASE)


@dataclass
class Instruction:
    op: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Stages of instructions; continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            logical.append(current)
        current = ""
    stages: list[list[Instruction]] = [[]]
    for line in logical:
        op, _, args = line.partition(" ")
        ins = Instruction(op.upper(), args.strip())
        if ins.op == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return [s for s in stages if s]


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final(stages: list[list[Instruction]], op: str) -> list[Instruction]:
    return [i for i in stages[-1] if i.op == op]


def test_multi_stage(stages: list[list[Instruction]]) -> None:
    froms = [s[0] for s in stages if s[0].op == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    build_name = froms[0].args.split()[-1]
    copies = final(stages, "COPY")
    assert any(c.args.startswith(f"--from={build_name} ") for c in copies), "the runtime takes the build's output"
    assert not any(i.op == "RUN" and "gcc" in i.args for i in stages[-1]), "no compiler in the runtime stage"


def test_runs_as_numeric_non_root_user(stages: list[list[Instruction]]) -> None:
    users = final(stages, "USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].args.partition(":")
    # Kubernetes' runAsNonRoot can only check a numeric user
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0)
    last_user = max(i for i, ins in enumerate(stages[-1]) if ins.op == "USER")
    assert not any(ins.op == "RUN" for ins in stages[-1][last_user:]), "nothing runs as root after USER"


def test_entrypoint_is_ledgergate_serve(stages: list[list[Instruction]]) -> None:
    entry = json.loads(final(stages, "ENTRYPOINT")[-1].args)
    cmd = json.loads(final(stages, "CMD")[-1].args)
    assert entry + cmd == ["ledgergate", "serve", "--config", "/etc/ledgergate/ledgergate.yaml"]


def test_healthcheck_probes_healthz(stages: list[list[Instruction]]) -> None:
    checks = final(stages, "HEALTHCHECK")
    assert checks, "the image has a HEALTHCHECK"
    assert "/healthz" in checks[-1].args and "CMD" in checks[-1].args


def test_data_on_a_volume_and_readonly_root_ready(stages: list[list[Instruction]]) -> None:
    volumes = [v for i in final(stages, "VOLUME") for v in json.loads(i.args)]
    assert "/var/lib/ledgergate" in volumes
    env = " ".join(i.args for i in final(stages, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing tries to write .pyc files onto a read-only root
    assert any("compileall" in i.args for i in final(stages, "RUN")), "byte-compiled at build time instead"


def test_no_secret_enters_the_image(stages: list[list[Instruction]]) -> None:
    for stage in stages:
        for ins in stage:
            assert ins.op != "ADD", "ADD can fetch URLs and unpack archives; COPY only"
            if ins.op == "COPY" and not ins.args.startswith("--from="):
                *sources, _dest = shlex.split(ins.args)
                for src in sources:
                    assert src.rstrip("/") in BUILD_INPUTS, f"COPY {src}: only the wheel's inputs are copied"
            if ins.op in ("ENV", "ARG"):
                assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)\w*=", ins.args, re.IGNORECASE), ins


def test_dockerignore_is_an_allow_list() -> None:
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "**", "everything is excluded first"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == BUILD_INPUTS
    last_allow = max(i for i, r in enumerate(rules) if r.startswith("!"))
    excluded_after = rules[last_allow + 1:]
    for pattern in ("**/*.key", "**/*.pem", "**/.env"):
        assert pattern in excluded_after, f"{pattern} is excluded even inside the allowed paths"
    # and nothing secret-looking is tracked inside what is allowed
    tracked = subprocess.run(["git", "ls-files", *sorted(BUILD_INPUTS)], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked and not [f for f in tracked if SECRETISH.search(Path(f).name)]


@pytest.mark.timeout(180)
def test_the_installed_command_starts(tmp_path: Path, stages: list[list[Instruction]]) -> None:
    # the wheel, from exactly what the Dockerfile's build stage copies
    context = tmp_path / "context"
    context.mkdir()
    for name in BUILD_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, context / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(context)],
                   check=True, capture_output=True, timeout=150)
    (wheel,) = wheels.glob("ledgergate-*.whl")

    # a fresh environment; its dependencies come from this one (no registry needed), ledgergate from the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    vpy = venv / "bin" / "python"
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(vpy), "-c", "import ledgergate, ledgergate.app; print(ledgergate.__file__)"],
                           capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout
    assert where.startswith(str(site)), f"ledgergate must come from the wheel, not the checkout: {where}"
    assert (site / "ledgergate" / "py.typed").exists(), "package data is in the wheel"

    cli = venv / "bin" / "ledgergate"
    help_text = subprocess.run([str(cli), "--help"], capture_output=True, text=True, check=True, env=env,
                               timeout=60).stdout
    for verb in ("serve", "config", "audit", "demo"):
        assert verb in help_text

    # `ledgergate serve` from the installed command, probed with the image's own HEALTHCHECK command
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "ledgergate.yaml"
    config.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "data_dir": str(data), "storage": f"sqlite:///{data / 'ledgergate.db'}",
        "audit": {"signing_key": str(data / "ledger.key")},
    }))
    check = json.loads(final(stages, "HEALTHCHECK")[-1].args.split("CMD", 1)[1].strip())
    assert check[0] == "python" and ":8080/healthz" in check[-1]
    probe = [str(vpy), *check[1:-1], check[-1].replace(":8080/", f":{port}/")]
    assert subprocess.run(probe, capture_output=True, timeout=30, env=env).returncode != 0, "fails with nothing up"
    proc = Proc([str(cli), "serve", "--config", str(config)], env=env, port=port, log=tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 30
        while (code := subprocess.run(probe, capture_output=True, timeout=30, env=env).returncode) != 0:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert code == 0
    finally:
        proc.stop()
