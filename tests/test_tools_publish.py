"""Publishing files agree with the project: Binder's pins, the workflows."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name, _, version = line.partition("==")
        assert version, f"{path.name}: {line!r} is not pinned with =="
        pins[name.lower()] = version
    return pins


def test_binder_pins_match_requirements():
    assert _pins(ROOT / "binder" / "requirements.txt") == _pins(
        ROOT / "requirements.txt"
    )


def test_binder_takes_torch_from_the_cpu_index():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    assert f"--extra-index-url {CPU_INDEX}" in lines


def test_binder_python_meets_requires_python():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = re.fullmatch(
        r">=(\d+)\.(\d+)", project["project"]["requires-python"]
    )
    wanted = re.fullmatch(r"python-(\d+)\.(\d+)", runtime)
    assert minimum and wanted
    assert tuple(map(int, wanted.groups())) >= tuple(
        map(int, minimum.groups())
    )


def _workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def _steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def test_the_test_workflow_runs_make_test_on_pushes_and_prs():
    workflow = _workflow("test.yml")
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "push" in triggers and "pull_request" in triggers
    runs = [s.get("run", "") for s in _steps(workflow)]
    assert any(r.strip() == "make test" for r in runs)
    assert any("chromium" in r and "fonts-noto-cjk" in r for r in runs)
    env = workflow["jobs"]["test"]["env"]
    assert env["PIP_EXTRA_INDEX_URL"] == CPU_INDEX


def test_the_pages_workflow_deploys_the_built_site():
    workflow = _workflow("pages.yml")
    uses = [s.get("uses", "").split("@")[0] for s in _steps(workflow)]
    for action in ("configure-pages", "upload-pages-artifact", "deploy-pages"):
        assert f"actions/{action}" in uses
    upload = next(
        s
        for s in _steps(workflow)
        if "upload-pages-artifact" in s.get("uses", "")
    )
    assert upload["with"]["path"] == "_build/html"
    assert workflow["permissions"]["pages"] == "write"
    assert workflow["permissions"]["id-token"] == "write"
