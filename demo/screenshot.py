"""
Open the demo in a real headless browser, upload an example page, type a query, click Run and save a screenshot.

    apt-get install -y chromium         # Debian's Chromium (the script never downloads a browser)
    pip install playwright              # the Python driver only
    python demo/screenshot.py [--url http://127.0.0.1:7860/] [--out docs/demo.png] [-- app arguments...]

Without `--url` the script starts `demo/app.py` itself on a free local port (arguments after `--` go to the app,
e.g. `-- --model path/to/converted`) and stops it afterwards. Chromium runs with a fresh profile and without
background networking, so nothing leaves the machine. The screenshot is saved as a palette PNG to stay small.
Not part of the test suite (it needs Chromium); it made the README's screenshot.
"""

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--mute-audio",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(app_arguments: list[str], log_file) -> tuple[subprocess.Popen, str]:
    """`python demo/app.py` on a free local port; returns the process and its URL once it answers."""
    port = _free_port()
    command = [sys.executable, str(DEMO_DIR / "app.py"), "--host", "127.0.0.1", "--port", str(port), *app_arguments]
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"screenshot: error: the demo exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("screenshot: error: the demo did not start within 180 s")


def capture(url: str, chromium: str, example: Path, query: str, out: Path, size: tuple[int, int]) -> None:
    """Drive the page as a person would and save a screenshot of the window."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tokenocr-chromium-") as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": size[0], "height": size[1]}, device_scale_factor=1,
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(url, wait_until="load")
            page.wait_for_selector("#run-button", timeout=60_000)
            page.locator("#page-image input[type=file]").set_input_files(str(example))
            page.wait_for_selector("#page-image img", timeout=60_000)
            page.locator("#query textarea, #query input").first.fill(query)
            page.click("#run-button")
            page.wait_for_selector("#heatmaps img", timeout=300_000)
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('scoring')", timeout=60_000)
            page.wait_for_timeout(1500)  # let images finish drawing
            page.screenshot(path=str(out))
        finally:
            browser.close()


def shrink(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_arguments = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--url", help="a running demo (default: start one)")
    parser.add_argument("--out", default="docs/demo.png", help="the screenshot to write (default: docs/demo.png)")
    parser.add_argument("--example", default=str(DEMO_DIR / "examples" / "receipt.png"), help="page to upload")
    parser.add_argument("--query", default="TOTAL", help="text to type")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--size", default="1400x1000", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        raise SystemExit(f"screenshot: error: no Chromium at '{args.chromium}' (apt-get install -y chromium)")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    process = None
    with tempfile.TemporaryFile() as log:
        try:
            url = args.url
            if url is None:
                process, url = start_app(app_arguments, log)
            capture(url, args.chromium, Path(args.example), args.query, out, size)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    shrink(out)
    print(f"screenshot: wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
