"""The batch-render report (interfusion_jax.report, scripts/batch_render.py) on synthetic runs: two
finished runs (videos, frames of one, scene.glb, metrics) and a broken one (config only); the page
is also opened from disk in headless Debian Chromium."""
import html
import importlib.util
import json
import os
import pathlib
import re
import sys
import types
import urllib.parse
from html.parser import HTMLParser

import imageio
import numpy as np
import pytest
import trimesh
from PIL import Image

from interfusion_jax.config import ConfigError, load_config, save_config
from interfusion_jax.report import LABEL_H, MISSING_RGB, PAD, VIEWS, cell_origin, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # No GPU: WebGL runs on SwiftShader, a fallback Chromium is taking off by default.
                 "--enable-unsafe-swiftshader"]
RUNS = {  # run folder -> (scene name, object prompt, has PNG frames); broken_c has only config.py
    "chair_a": ("chair_a", "a wooden chair & <cushion>", True),
    "bike_b": ("riding", "a red bike", False),
    "broken_c": ("broken_c", "a lost object", None),
}


def frame(run, view, t):
    """uint8 [SIZE, SIZE, 3]: gradients, with blue telling run, view and time apart."""
    y, x = np.mgrid[:SIZE, :SIZE]
    blue = np.full_like(x, 40 * list(RUNS).index(run) + 60 * view + 2 * t)
    return np.stack([x * 4, y * 4, blue], axis=-1).astype(np.uint8)


def scene_glb():
    """A red box and a blue sphere as two nodes of a glb, vertex-coloured like the run's meshes."""
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    box.visual.vertex_colors = (220, 30, 30, 255)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    sphere.apply_translation((1.5, 0.0, 0.0))
    sphere.visual.vertex_colors = (30, 60, 230, 255)
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="object")
    scene.add_geometry(sphere, node_name="human")
    return scene.export(file_type="glb")


def make_run(run_dir, run, name, object_prompt, frames):
    overrides = [f"name={name}", f"prompts.object={object_prompt}"]
    os.makedirs(run_dir)
    save_config(load_config(os.path.join(ROOT, "configs", "demo.py"), overrides),
                os.path.join(run_dir, "config.py"))
    if frames is None:
        return
    for v, view in enumerate(VIEWS):
        clip = [frame(run, v, t) for t in range(16)]
        os.makedirs(os.path.join(run_dir, "test", "frames", view))
        imageio.v2.mimwrite(os.path.join(run_dir, "test", f"{view}.mp4"), clip, fps=12,
                            macro_block_size=1)
        if frames:
            for t, image in enumerate(clip):
                Image.fromarray(image).save(os.path.join(run_dir, "test", "frames", view, f"{t:04d}.png"))
    os.makedirs(os.path.join(run_dir, "mesh"))
    with open(os.path.join(run_dir, "mesh", "scene.glb"), "wb") as f:
        f.write(scene_glb())
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump({"clip_score": 0.3125, "reference_iou": None, "faces": 1234}, f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{run folder: path} under <tmp>/outputs."""
    root = tmp_path_factory.mktemp("report") / "outputs"
    paths = {}
    for run, (name, prompt, frames) in RUNS.items():
        paths[run] = str(root / run)
        make_run(paths[run], run, name, prompt, frames)
    return paths


class Attributes(HTMLParser):
    """Tags and their attributes, in document order."""

    def __init__(self, text):
        super().__init__()
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_page_and_contact_sheet(runs, tmp_path):
    out = str(tmp_path / "report")
    index, sheet_path = write_report(list(runs.values()), out)
    text = open(index).read()
    prompts = load_config(os.path.join(runs["chair_a"], "config.py")).prompts
    for name, object_prompt, _ in RUNS.values():
        assert f"<h2>{name}</h2>" in text
        for prompt in (object_prompt, prompts.human, prompts.interaction, prompts.head):
            assert html.escape(prompt) in text
    tags = Attributes(text).tags
    links = [a[k] for _, a in tags for k in ("src", "href", "data-scene") if k in a]
    for link in links:
        if not link.startswith("#"):
            assert os.path.isfile(os.path.join(out, urllib.parse.unquote(link))), link
    assert sum(tag == "video" for tag, _ in tags) == 6
    assert [a["data-scene"] for tag, a in tags if tag == "model-viewer"] == ["scenes/scene0.js", "scenes/scene1.js"]
    broken = text[text.index("<h2>broken_c</h2>"):]
    for missing in ("no test/object.mp4", "no mesh/scene.glb", "no metrics.json"):
        assert missing in broken
    assert "<td>0.3125</td>" in text and "<td>1234</td>" in text and "&mdash;" in text

    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    assert sheet.shape == (LABEL_H + 3 * (LABEL_H + SIZE + PAD), PAD + 3 * (SIZE + PAD), 3)
    for r, run in enumerate(RUNS):
        for v in range(len(VIEWS)):
            y, x = cell_origin(r, v, (SIZE, SIZE))
            cell = sheet[y:y + SIZE, x:x + SIZE].astype(int)
            if run == "chair_a":  # PNG frames: exact
                np.testing.assert_array_equal(cell, frame(run, v, 0))
            elif run == "bike_b":  # no frames: the mp4's first frame, lossy
                assert np.abs(cell - frame(run, v, 0)).mean() < 4.0
            else:  # missing: grey, save the word "missing"
                assert (cell == MISSING_RGB).all(axis=-1).mean() > 0.9


def load_batch_render():
    spec = importlib.util.spec_from_file_location("batch_render", os.path.join(ROOT, "scripts", "batch_render.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_train(calls):
    """A stand-in for interfusion_jax.train whose test_run fails on runs named broken*."""

    def test_run(run_dir):
        calls.append(("test_run", run_dir))
        if os.path.basename(run_dir).startswith("broken"):
            raise ConfigError(f"{run_dir}/ckpt: no checkpoint")
        return []

    def export_run(run_dir):
        calls.append(("export_run", run_dir))
        return []

    return types.SimpleNamespace(test_run=test_run, export_run=export_run)


def run_main(main, argv):
    """main(argv) -> its exit status."""
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_batch_render(runs, tmp_path, monkeypatch, capsys):
    batch_render = load_batch_render()
    calls = []
    monkeypatch.setitem(sys.modules, "interfusion_jax.train", fake_train(calls))
    outputs = os.path.dirname(runs["chair_a"])
    broken = runs["broken_c"]

    assert run_main(batch_render.main, [os.path.join(outputs, "*")]) == 1
    assert calls == [("test_run", broken)]  # finished runs are skipped
    out, err = capsys.readouterr()
    failures = [s for s in re.split(r"[\r\n]+", err) if s.startswith(broken)]
    assert failures == [f"{broken}: {broken}/ckpt: no checkpoint"]
    report = os.path.join(outputs, "report")  # the default --out
    assert os.path.join(report, "index.html") in out and os.path.join(report, "contact_sheet.png") in out
    assert f"failed: {broken}/ckpt: no checkpoint" in open(os.path.join(report, "index.html")).read()

    calls.clear()
    finished = [runs["bike_b"], runs["chair_a"]]
    assert run_main(batch_render.main, finished + ["--force", "--out", str(tmp_path / "r")]) == 0
    assert calls == [(f, r) for r in finished for f in ("test_run", "export_run")]

    capsys.readouterr()
    assert run_main(batch_render.main, [str(tmp_path / "nothing*")]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback


def colour_fraction(image, channel, margin=60):
    """Share of pixels whose `channel` exceeds both others by `margin`."""
    image = image.astype(int)
    others = [image[..., c] for c in range(3) if c != channel]
    return np.mean((image[..., channel] > others[0] + margin) & (image[..., channel] > others[1] + margin))


def test_report_in_chromium(runs, tmp_path):
    """The page from disk: both 3D views draw the red box and blue sphere, all six videos load their
    metadata, and nothing is fetched from the network."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install playwright")
    index, _ = write_report(list(runs.values()), str(tmp_path / "report"))
    requests, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(pathlib.Path(index).resolve().as_uri())
            views = page.locator("model-viewer")
            assert views.count() == 2
            crops = []
            for i in range(views.count()):
                view = views.nth(i)
                view.scroll_into_view_if_needed()  # the viewer loads a model once it is near view
                page.wait_for_function("el => el.loaded && el.modelIsVisible", arg=view.element_handle(),
                                       timeout=60_000)  # generous: CI runs it beside other tests
                view.screenshot(path=str(tmp_path / f"view{i}.png"))
                crops.append(np.asarray(Image.open(tmp_path / f"view{i}.png").convert("RGB")))
            page.wait_for_function(
                "[...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error)",
                timeout=30_000)
            videos = page.evaluate(
                "[...document.querySelectorAll('video')].map(v => [v.readyState, v.error && v.error.code])")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors
    assert all(urllib.parse.urlparse(u).scheme in ("file", "data") for u in requests), requests
    assert len(videos) == 6 and all(state >= 1 and error is None for state, error in videos), videos
    for crop in crops:
        assert crop.std(axis=(0, 1)).mean() > 20.0  # a blank viewer is one flat grey
        assert colour_fraction(crop, 0) > 0.02 and colour_fraction(crop, 2) > 0.02
