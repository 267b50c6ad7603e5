"""The built wheel, installed in a fresh venv outside the checkout, serves the browser client."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env, cli_server

pytestmark = pytest.mark.slow

BUILD_TIMEOUT_S = 300
# What a source distribution carries: the package, the client and the build files.
SOURCE_ENTRIES = ["realtime", "web", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]
MODULE_IMPORT = re.compile(r"""(?:from\s+|import\s*\(\s*|new URL\(\s*)["'](?:\./)?([\w-]+\.js)["']""")
PAGE_ASSET = re.compile(r"""(?:src|href)="([\w-]+\.(?:js|css))\"""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for entry in SOURCE_ENTRIES:
        copy = shutil.copytree if (REPO / entry).is_dir() else shutil.copy2
        copy(REPO / entry, source / entry)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    (built,) = out.glob("mlx_realtime-*.whl")
    return built


@pytest.fixture(scope="module")
def installed_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this venv through a .pth file."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the venv's own site-packages, so the installed `realtime` wins over the editable one.
    (Path(site_packages) / "shared_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_the_wheel_carries_the_browser_client(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"realtime/web/{path.name}" for path in (REPO / "web").iterdir() if path.is_file()}
    assert shipped and shipped <= names


def test_the_installed_server_serves_the_page_and_its_scripts(installed_python: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(installed_python), "-c", "import realtime, sys; print(realtime.__file__); print(sys.path)"],
        cwd=outside,
        env=cli_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module_path, search_path = where.splitlines()
    assert module_path.startswith(str(installed_python.parent.parent))
    # The dependencies' site-packages may live in a venv inside the checkout (as in CI); the checkout's
    # own sources must not be on the path.
    source_dirs = {str(REPO), str(REPO / "realtime")}
    assert not source_dirs & set(ast.literal_eval(search_path))

    with cli_server([], tmp_path / "server.log", python=str(installed_python), cwd=outside) as url:
        page = _fetch(url, "/")
        assets = PAGE_ASSET.findall(page)
        assert "app.js" in assets and "style.css" in assets
        fetched = _fetch_module_graph(url, assets)
    assert fetched == {path.name for path in (REPO / "web").glob("*.js")} | {"style.css"}
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def _fetch(url: str, path: str) -> str:
    with urllib.request.urlopen(url + path, timeout=30) as reply:
        assert reply.status == 200
        return reply.read().decode()


def _fetch_module_graph(url: str, roots: list[str]) -> set[str]:
    """Fetches every script the page loads: its own tags, then each module's imports and worklets."""
    pending, fetched = list(roots), set()
    while pending:
        name = pending.pop()
        if name in fetched:
            continue
        body = _fetch(url, "/" + name)
        fetched.add(name)
        if name.endswith(".js"):
            pending += MODULE_IMPORT.findall(body)
    return fetched
