"""Where the browser client's files are: inside the installed package, or the checkout's top-level web/."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# A wheel carries the client as realtime/web (setup.py copies it there); a checkout keeps it at the top.
_CANDIDATES = (_PACKAGE_DIR / "web", _PACKAGE_DIR.parent / "web")


def default_web_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "index.html").is_file():
            return candidate
    return _CANDIDATES[0]
