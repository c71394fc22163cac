"""
Open the demo in a real headless browser, upload an example page, type a query, click Run and save a screenshot.

    apt-get install -y chromium         # Debian's Chromium (the script never downloads a browser)
    python demo/screenshot.py [--example PAGE] [--query TEXT] [--out docs/demo.png] [--size 1400x1000]
    python demo/screenshot.py --model path/to/converted --port 7861 [-- more app arguments...]
    python demo/screenshot.py --url http://127.0.0.1:7860/   # a demo that is already running

Only the standard library: the browser (Chromium or Chrome, found on the PATH or given with `--browser`) is driven
over the DevTools protocol on a pipe (`--remote-debugging-pipe`: file descriptors 3 and 4, NUL-separated JSON).
Without `--url` the script starts `demo/app.py` itself (on `--port`, else a free local port; `--model` and the
arguments after `--` go to the app) and always stops it afterwards. The browser runs headless with a fresh temporary
profile, removed afterwards, and without background networking, so nothing leaves the machine. The screenshot is of
the window (the viewport), saved as a palette PNG to stay small when Pillow is importable.
Not part of the test suite (it needs a browser); it made the docs' screenshot.
"""

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
BROWSER_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--hide-scrollbars", "--remote-debugging-pipe",
]
APP_START_SECONDS = 180
PAGE_SECONDS = 60
RUN_SECONDS = 300


class ScreenshotError(Exception):
    """A one-line reason the screenshot could not be made."""


# ----------------------------------------------------------------------------------------------------------- the demo

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(app_arguments: list[str], port: int | None, log_file) -> tuple[subprocess.Popen, str]:
    """`python demo/app.py` on `port` (default: a free local port); returns the process and its URL once it answers."""
    port = port or _free_port()
    command = [sys.executable, str(DEMO_DIR / "app.py"), "--host", "127.0.0.1", "--port", str(port), *app_arguments]
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + APP_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ScreenshotError(f"the demo exited with code {process.returncode}: {_last_line(log_file)}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    raise ScreenshotError(f"the demo did not answer at {url} within {APP_START_SECONDS} s")


def _last_line(log_file) -> str:
    """The last non-empty line the demo wrote (its error message, when it failed)."""
    log_file.flush()
    log_file.seek(0)
    lines = [line.strip() for line in log_file.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def stop(process: subprocess.Popen | None) -> None:
    """Stop a process this script started: terminate, then kill if it does not exit within 30 s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -------------------------------------------------------------------------------------------------------- the browser

def find_browser(given: str | None) -> str:
    """The browser to run: `given`, else the first of chromium, chromium-browser, google-chrome on the PATH."""
    if given:
        path = shutil.which(given)
        if path is None:
            raise ScreenshotError(f"no browser at '{given}'")
        return path
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise ScreenshotError(f"no browser found ({', '.join(BROWSER_NAMES)}); apt-get install -y chromium, "
                          "or give one with --browser PATH")


def _high_fd(fd: int) -> int:
    """A copy of `fd` numbered 10 or above (so that moving pipes onto 3 and 4 cannot overwrite one another)."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return copy


class Browser:
    """A headless browser driven over `--remote-debugging-pipe`: commands go to its fd 3, replies come from its fd 4."""

    def __init__(self, executable: str, size: tuple[int, int], profile: str):
        to_browser_read, self._write = map(_high_fd, os.pipe())
        self._read, from_browser_write = map(_high_fd, os.pipe())

        def move_pipes():  # in the child, before exec: the protocol's pipes become fds 3 and 4
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        command = [executable, *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                   "about:blank"]
        try:
            self.process = subprocess.Popen(command, preexec_fn=move_pipes, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(to_browser_read)
            os.close(from_browser_write)
        self._buffer = b""
        self._last_id = 0
        self._session = None

    def close(self) -> None:
        """Ask the browser to quit, then stop it and close the pipes."""
        try:
            self._post("Browser.close", session=False)
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop(self.process)
        os.close(self._write)
        os.close(self._read)

    def _post(self, method: str, params: dict | None = None, session: bool = True) -> int:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._last_id

    def _receive(self, deadline: float) -> dict:
        """The next message from the browser (replies and events alike)."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise ScreenshotError("the browser did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise ScreenshotError(f"the browser exited (code {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 60) -> dict:
        """Run one protocol command and return its result (events received meanwhile are dropped)."""
        wanted = self._post(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise ScreenshotError(f"{method}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})

    def open_tab(self, size: tuple[int, int]) -> None:
        """A page of exactly `size` CSS pixels at scale 1, which later commands act on."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                  session=False)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.enable")

    def evaluate(self, expression: str, by_value: bool = True):
        """The value of a JavaScript expression in the page (or its remote object when `by_value` is false)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": by_value,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            reason = details.get("exception", {}).get("description", details.get("text"))
            raise ScreenshotError(f"script error in the page: {reason}")
        return result["result"].get("value") if by_value else result["result"]

    def wait_for(self, expression: str, timeout: float, what: str):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise ScreenshotError(f"timed out after {timeout:.0f} s waiting for {what}")


# ------------------------------------------------------------------------------------------------------------ the page

QUERY_BOX = "document.querySelector('#query textarea, #query input')"
STATUS_TEXT = "((document.querySelector('#status') || {}).innerText || '').trim()"
ERROR_TEXT = ("[...document.querySelectorAll('.toast-body')]"
              ".map(e => e.innerText.replace(/\\s+/g, ' ').trim()).join(' | ')")


def upload_page(browser: Browser, example: Path) -> None:
    """Put the page image into the image input, as choosing it in the file dialog would."""
    browser.wait_for("!!document.querySelector('#page-image input[type=file]')", PAGE_SECONDS, "the image input")
    node = browser.evaluate("document.querySelector('#page-image input[type=file]')", by_value=False)
    browser.send("DOM.setFileInputFiles", {"files": [str(example.resolve())], "objectId": node["objectId"]})
    browser.wait_for("!!document.querySelector('#page-image img')", PAGE_SECONDS, "the uploaded page to show")


def type_query(browser: Browser, query: str) -> None:
    """Replace the query box's text by `query`, typed in as a person would."""
    browser.evaluate(f"(() => {{ const box = {QUERY_BOX}; box.focus(); box.select(); }})()")
    browser.send("Input.insertText", {"text": query})
    browser.wait_for(f"{QUERY_BOX}.value === {json.dumps(query)}", 10, "the query to be typed in")


def run_and_wait(browser: Browser) -> str:
    """Click Run and wait until the status line changes and the gallery has pictures; returns the status line."""
    before = browser.evaluate(STATUS_TEXT)
    browser.evaluate("document.querySelector('#run-button').click()")
    done = (f"({ERROR_TEXT}) ? 'error' : ({STATUS_TEXT} && {STATUS_TEXT} !== {json.dumps(before)} "
            "&& document.querySelectorAll('#heatmaps img').length > 0) ? 'done' : ''")
    if browser.wait_for(done, RUN_SECONDS, "the results") == "error":
        raise ScreenshotError(f"the demo showed an error: {browser.evaluate(ERROR_TEXT)}")
    browser.wait_for("[...document.querySelectorAll('img')].every(img => img.complete)", PAGE_SECONDS,
                     "the pictures to load")
    time.sleep(1.5)  # let the pictures finish drawing
    return browser.evaluate(STATUS_TEXT)


def capture(url: str, executable: str, example: Path, query: str, out: Path, size: tuple[int, int]) -> str:
    """Drive the page as a person would and save a screenshot of the window; returns the demo's status line."""
    with tempfile.TemporaryDirectory(prefix="tokenocr-browser-") as profile:
        browser = Browser(executable, size, profile)
        try:
            browser.open_tab(size)
            browser.send("Page.navigate", {"url": url})
            browser.wait_for("!!document.querySelector('#run-button')", PAGE_SECONDS, "the demo's page")
            upload_page(browser, example)
            type_query(browser, query)
            status = run_and_wait(browser)
            browser.evaluate("window.scrollTo(0, 0)")
            data = browser.send("Page.captureScreenshot", {"format": "png"})["data"]
            out.write_bytes(base64.b64decode(data))
        finally:
            browser.close()
    return status


def check_out(out: Path) -> None:
    """`--out` may be new, or a PNG picture (an earlier screenshot): anything else is somebody's file, never replaced."""
    if not (out.exists() or out.is_symlink()):
        return
    try:
        with open(out, "rb") as file:
            is_png = out.is_file() and not out.is_symlink() and file.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        is_png = False
    if not is_png:
        raise ScreenshotError(f"--out '{out}' exists and is not a PNG picture; choose another file")


def shrink(path: Path) -> None:
    """Re-save as a palette PNG (Pillow is the package's own dependency; without it the browser's PNG stays)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, format="PNG", optimize=True)


# ------------------------------------------------------------------------------------------------------- command line

def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(value) for value in text.lower().split("x"))
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1400x1000, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo/screenshot.py", description=__doc__.splitlines()[1],
                                     epilog="Arguments after `--` go to demo/app.py.")
    parser.add_argument("--url", help="a running demo (default: start one)")
    parser.add_argument("--out", default="docs/demo.png", help="the screenshot to write (default: docs/demo.png)")
    parser.add_argument("--example", default=str(DEMO_DIR / "examples" / "document_page.png"),
                        help="page image to upload (default: demo/examples/document_page.png)")
    parser.add_argument("--query", default="February", help="text to type (default: February)")
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="passed on to the demo it starts; repeat for several (default: the demo's own)")
    parser.add_argument("--port", type=int, default=None, help="port for the demo it starts (default: a free one)")
    parser.add_argument("--browser", "--chromium", dest="browser", metavar="PATH",
                        help=f"Chromium or Chrome (default: the first of {', '.join(BROWSER_NAMES)} on the PATH)")
    parser.add_argument("--size", type=_size, default=(1400, 1000),
                        help="window size, WIDTHxHEIGHT (default: 1400x1000)")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_arguments = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    app_arguments = [*(part for model in args.model or [] for part in ("--model", model)), *app_arguments]
    out, example = Path(args.out), Path(args.example)
    process = None
    try:
        if not example.is_file():
            raise ScreenshotError(f"no page image at '{example}'")
        check_out(out)
        browser = find_browser(args.browser)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")  # written whole, then renamed over --out
        with tempfile.TemporaryFile() as log:
            try:
                url = args.url
                if url is None:
                    process, url = start_app(app_arguments, args.port, log)
                status = capture(url, browser, example, args.query, partial, args.size)
                shrink(partial)
                os.replace(partial, out)
            finally:
                stop(process)
                partial.unlink(missing_ok=True)
    except ScreenshotError as error:
        print(f"screenshot: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"screenshot: {status}")
    print(f"screenshot: wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
