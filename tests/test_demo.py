"""``flowup demo``: the upscale function, the Gradio app through ``gradio_client`` and through a
real headless Chromium (selenium), and the subcommand (tiny random model; seconds per test).

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and ``selenium``; it is skipped only when they are absent. With
``FLOWUP_DEMO_SCREENSHOT=docs/demo.png`` it runs the shipped model on the bundled photo instead of
the tiny model and saves the screenshot there (how docs/demo.png is made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from flowup.cli import main

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_png(path: Path, width: int = 20, height: int = 14, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    PIL.Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8), mode).save(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_pipe(tiny_pipeline_dir):
    from flowup import FlowUpPipeline

    pipe = FlowUpPipeline.from_pretrained(tiny_pipeline_dir, runtime="torch")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def outbound(monkeypatch):
    """Records every connection and name lookup this process makes to anything but this machine."""
    seen: list = []
    local = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def recording_connect(sock, address, *args, **kwargs):
        if isinstance(address, tuple) and address[0] not in local:
            seen.append(address)
        return connect(sock, address, *args, **kwargs)

    def recording_lookup(host, *args, **kwargs):
        if host not in local and host is not None:
            seen.append(host)
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    monkeypatch.setattr(socket, "getaddrinfo", recording_lookup)
    return seen


@pytest.fixture
def served(request, tmp_path, monkeypatch):
    """Start ``build_demo(pipe)`` in this process on a free port; yields its local URL."""
    pytest.importorskip("gradio")
    from flowup.demo import build_demo, launch

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_cache"))
    demos = []

    def start(pipe) -> str:
        demo = build_demo(pipe, out_dir=tmp_path / "results")
        _, url, share = launch(demo, host="127.0.0.1", port=_free_port(), block=False, quiet=True)
        demos.append(demo)
        assert share is None and url.startswith("http://127.0.0.1:")
        return url

    yield start
    for demo in demos:
        demo.close()


# --------------------------------------------------------------------------------- the function


def test_upscale_image_writes_a_png_twice_the_size(tiny_pipe, tmp_path):
    from flowup.demo import upscale_image

    source = _write_png(tmp_path / "photo.png", 21, 13)
    seen = []
    result = upscale_image(tiny_pipe, source, scale=2, steps=1, detail=0.5, seed=3, out_dir=tmp_path / "out",
                           progress=seen.append)  # fmt: skip
    assert result.path.name == "photo_x2.png" and result.path.read_bytes()[:8] == PNG_SIGNATURE
    with PIL.Image.open(result.path) as image:
        assert image.size == (42, 26) and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), np.asarray(result.image))
    assert result.before.size == result.image.size == (42, 26)
    assert result.input_size == (21, 13) and result.nfe == 1 and result.steps == 1
    assert result.megapixels == pytest.approx(42 * 26 / 1e6)
    assert result.seconds > 0 and result.seconds_per_megapixel == pytest.approx(result.seconds / result.megapixels)
    assert seen and seen[-1] == pytest.approx(1.0)
    text = result.summary()
    assert "21x13 -> 42x26" in text and " s/MP" in text and "seed 3" in text and "detail 0.5" in text

    # the same settings give the same pixels as the pipeline called directly (and as flowup upscale)
    again = upscale_image(tiny_pipe, PIL.Image.open(source), scale=2, steps=1, detail=0.5, seed=3,
                          out_dir=tmp_path / "out")  # fmt: skip
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))
    assert again.path != result.path and again.path.name == "image_x2.png"


def test_upscale_image_matches_flowup_upscale(tiny_pipe, tiny_pipeline_dir, tmp_path, capsys):
    from flowup.demo import upscale_image

    source = _write_png(tmp_path / "photo.png", 17, 11, seed=4)
    code = main(["upscale", str(source), "-o", str(tmp_path / "cli.png"), "--model", str(tiny_pipeline_dir), "-q",
                 "--runtime", "torch", "--seed", "5", "--steps", "1", "--detail", "0.7"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = upscale_image(tiny_pipe, source, steps=1, detail=0.7, seed=5, out_dir=tmp_path)
    with PIL.Image.open(tmp_path / "cli.png") as cli, PIL.Image.open(result.path) as demo:
        assert np.array_equal(np.asarray(cli), np.asarray(demo))


def test_upscale_image_x4_alpha_and_defaults(tiny_pipe, tmp_path):
    from flowup.demo import upscale_image

    result = upscale_image(tiny_pipe, _write_png(tmp_path / "a.png", 9, 7, mode="RGBA"), scale=4,
                           out_dir=tmp_path)  # fmt: skip
    assert result.image.size == (36, 28) and result.image.mode == "RGBA" and result.before.mode == "RGBA"
    assert result.steps == tiny_pipe.config.default_num_inference_steps and result.nfe == 2 * result.steps
    assert result.detail == tiny_pipe.config.get("default_cascade_detail", 1.0)  # x4: the model's cascade default


def test_detail_slider_default_follows_the_scale():
    from flowup.demo import default_detail

    from conftest import make_tiny_pipeline

    pipe = make_tiny_pipeline(default_cascade_detail=0.5)
    assert default_detail(pipe, 2) == 1.0 and default_detail(pipe, 4) == 0.5


@pytest.mark.parametrize(
    "settings, message",
    [({"scale": 3}, "scale must be one of [2, 4]"), ({"detail": 2.5}, "detail must be"),
     ({"steps": -1}, "steps must be"), ({"seed": -1}, "seed must be"), ({"steps": 1.5}, "steps must be")],
)  # fmt: skip
def test_upscale_image_refuses_bad_settings(tiny_pipe, tmp_path, settings, message):
    from flowup.demo import upscale_image

    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        upscale_image(tiny_pipe, _write_png(tmp_path / "a.png"), out_dir=tmp_path, **settings)


def test_upscale_image_refuses_unreadable_and_huge_inputs(tiny_pipe, tmp_path):
    from flowup.demo import upscale_image
    from flowup.image_io import ImageReadError

    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match="text.png"):
        upscale_image(tiny_pipe, tmp_path / "text.png", out_dir=tmp_path)
    with pytest.raises(ValueError, match="too large"):
        upscale_image(tiny_pipe, _write_png(tmp_path / "a.png", 40, 30), out_dir=tmp_path, max_output_pixels=1000)


# ------------------------------------------------------------------------- the app, no browser


def test_app_through_gradio_client(tiny_pipe, tmp_path, served, outbound):
    from gradio_client import Client, handle_file

    url = served(tiny_pipe)
    source = _write_png(tmp_path / "upload.png", 20, 14)
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    assert "/upscale" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    compare, timing, download = client.predict(handle_file(str(source)), 2, 1, 1.0, 0, 0.0, api_name="/upscale")

    path = Path(download["value"] if isinstance(download, dict) else download)
    assert path.name == "upload_x2.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.size == (40, 28)
        got = np.asarray(image.convert("RGB"))
    from flowup.demo import upscale_image  # the app's PNG is the function's, bit for bit

    direct = upscale_image(tiny_pipe, source, scale=2, steps=1, detail=1.0, seed=0, out_dir=tmp_path / "direct", denoise=0.0)
    assert np.array_equal(got, np.asarray(direct.image))
    before, after = (Path(p) for p in compare)
    assert PIL.Image.open(before).size == PIL.Image.open(after).size == (40, 28)
    assert "20x14 -> 40x28" in timing and "s/MP" in timing

    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="greater than maximum"):  # gradio checks the slider's range
        client.predict(handle_file(str(source)), 2, 1, 2.5, 0, 0.0, api_name="/upscale")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(AppError):  # not an image: refused, one message, and the app goes on
        client.predict(handle_file(str(tmp_path / "text.png")), 2, 1, 1.0, 0, 0.0, api_name="/upscale")
    assert client.predict(handle_file(str(source)), 4, 1, 1.0, 0, 0.0, api_name="/upscale")[1].count("80x56") == 1
    time.sleep(0.5)  # let any background thread (telemetry, version check) have its go
    assert outbound == []  # offline: nothing but 127.0.0.1


# ------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
def test_app_in_headless_chromium(tiny_pipe, tmp_path, served):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    screenshot = os.environ.get("FLOWUP_DEMO_SCREENSHOT")
    if screenshot:  # the docs' screenshot: the shipped model on the bundled photo
        from flowup import FlowUpPipeline
        from flowup.demo import warm_up
        from flowup.pipeline import default_model_path

        pipe = FlowUpPipeline.from_pretrained(default_model_path())
        pipe.set_progress_bar_config(disable=True)
        warm_up(pipe)  # time a warm model, as flowup demo does
        source, size = REPO / "flowup" / "assets" / "grace_hopper_256.jpg", (512, 600)
    else:
        pipe, source, size = tiny_pipe, _write_png(tmp_path / "upload.png", 20, 14), (40, 28)
    url = served(pipe)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1150", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium: no usage statistics
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#flowup-input input[type=file]")))
        upload.send_keys(str(source))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#flowup-input img")))
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#flowup-run"))).click()
        WebDriverWait(driver, 180).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#flowup-timing"), "s/MP"))  # fmt: skip
        timing = driver.find_element(By.CSS_SELECTOR, "#flowup-timing").text
        assert f"-> {size[0]}x{size[1]}" in timing
        images = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#flowup-compare img") or False)
        assert len(images) == 2
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(1.0)  # let the slider's images finish painting for the screenshot
        driver.save_screenshot(str(tmp_path / "demo.png"))
        if screenshot:
            shutil.copyfile(tmp_path / "demo.png", screenshot)

        # the download button hands the PNG to the browser: it lands in the download folder
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        button = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#flowup-download")))
        assert "Download PNG" in button.text
        button.click()
        wait.until(lambda d: [p for p in downloads.iterdir() if p.suffix == ".png"] or False)
        (saved,) = [p for p in downloads.iterdir() if p.suffix == ".png"]
        assert saved.name == f"{source.stem}_x2.png" and saved.read_bytes()[:8] == PNG_SIGNATURE
        with PIL.Image.open(saved) as image:
            assert image.format == "PNG" and image.size == size

        # offline: every request the page made went to the local server (or was inline data)
        import json

        requested = set()
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                requested.add(message["params"]["request"]["url"])
        external = sorted(u for u in requested if not u.startswith((url.rstrip("/"), "data:", "blob:")))
        assert requested and not external, external
    finally:
        driver.quit()


# ------------------------------------------------------------------------- the subcommand


def test_demo_command_launches_the_app(tiny_pipeline_dir, monkeypatch, capsys):
    pytest.importorskip("gradio")
    calls = {}

    def fake_launch(demo, host, port, block, quiet):
        calls.update(demo=demo, host=host, port=port, block=block)
        monkeypatch.setattr(demo, "block_thread", lambda: calls.update(blocked=True))
        return None, f"http://{host}:{port}/", None

    monkeypatch.setattr("flowup.demo.launch", fake_launch)
    assert main(["demo", "--model", str(tiny_pipeline_dir), "--device", "cpu", "--port", "7999"]) == 0
    assert calls["host"] == "127.0.0.1" and calls["port"] == 7999 and calls["blocked"]
    import gradio as gr

    assert isinstance(calls["demo"], gr.Blocks)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    out, err = capsys.readouterr()
    assert "warmed up" in err and "http://127.0.0.1:7999/" in out


def test_demo_command_port_taken(tiny_pipeline_dir, capsys):
    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["demo", "--model", str(tiny_pipeline_dir), "--device", "cpu", "--port", str(port)])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"port {port} is taken" in errors[0]


def test_demo_command_without_gradio(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    started = time.perf_counter()
    assert main(["demo", "--model", str(tmp_path / "no-such-model")]) == 2  # fails before loading the model
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['flowup: error: the demo needs gradio: pip install "flowup[demo]"']
    assert time.perf_counter() - started < 5


def test_demo_bad_port_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--port", "70000"])
    assert info.value.code == 2
    assert "between 1 and 65535" in capsys.readouterr().err


def test_demo_help_is_fast_and_imports_nothing_heavy():
    probe = ("import sys, time\nstarted = time.perf_counter()\nfrom flowup.cli import main\n"
             "try:\n    main(['demo', '--help'])\nexcept SystemExit:\n    pass\n"
             "print('SECONDS', time.perf_counter() - started)\n"
             "print('LOADED', sorted(m for m in ('torch', 'diffusers', 'numpy', 'gradio') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "--model" in result.stdout and "--port" in result.stdout and "--host" in result.stdout
    assert lines[-1] == "LOADED []"
    assert float(lines[-2].split()[1]) < 1.0
