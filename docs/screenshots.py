"""Screenshots of the built site with headless Chromium, to look at what a reader sees.

    python docs/screenshots.py [docs/_build/html]

Writes ``index.png`` (front page), ``api.png`` (``xpnn.Sequential``) and ``gallery.png`` (the
MNIST example) into ``<html>/../screenshots/``. Exits 0 with a message when no Chromium is
installed (``apt-get install chromium``) or when the browser cannot run; exits 1 when a page is
missing or its screenshot is blank.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PAGES = {
    "index.png": "index.html",
    "api.png": "api/generated/xpnn.Sequential.html",
    "gallery.png": "gallery/plot_03_mnist.html",
}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(browser: str, page: Path, png: Path, size: str = "1280,1600") -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not png.is_file() or png.stat().st_size < 10_000:  # a blank page compresses to less
        raise RuntimeError(f"no usable screenshot of {page} (see {png})")


def main(argv: list[str]) -> int:
    html = Path(argv[0] if argv else Path(__file__).parent / "_build" / "html")
    browser = find_chromium()
    if browser is None:
        print("screenshots: no Chromium installed, skipped")
        return 0
    out = html.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    for name, rel in PAGES.items():
        page = html / rel
        if not page.is_file():
            print(f"screenshots: {page} is missing", file=sys.stderr)
            return 1
        try:
            screenshot(browser, page, out / name)
        except (subprocess.SubprocessError, OSError) as exc:  # the browser, not the site
            print(f"screenshots: {browser} failed ({exc}); no screenshots taken")
            return 0
        print(f"screenshots: {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
