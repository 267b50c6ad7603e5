"""Packaging hook: the browser client (top-level `web/`) is copied into the wheel as `realtime/web/`."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEB_SOURCE = Path(__file__).resolve().parent / "web"


class BuildPyWithWebClient(build_py):
    def run(self) -> None:
        super().run()
        # Not package data: web/ sits outside the package so the checkout keeps one plain folder of files.
        self.copy_tree(str(WEB_SOURCE), str(Path(self.build_lib) / "realtime" / "web"))


setup(cmdclass={"build_py": BuildPyWithWebClient})
