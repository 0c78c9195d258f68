"""The batch-render report: one HTML page and one contact-sheet PNG over a set of runs.

write_report(run_dirs, out_dir) writes, in out_dir:
  index.html         one section per run: scene name, its four prompts, the three test-circle videos
                     (linked relative to out_dir), an interactive 3D view of RUN/mesh/scene.glb
                     (Google's <model-viewer>) and RUN/metrics.json as a table. An output the run
                     lacks is replaced by a note naming the missing file.
  assets/            the vendored viewer script and its licence (report_assets/README.md).
  scenes/sceneN.js   the N-th run's scene.glb, for the page (below).
  contact_sheet.png  one row per run, one column per view (object, human, interaction): frame 0 of
                     each, under the scene name and the view names as column headers.

The page opens from disk (file://) with no network. The viewer is a classic (UMD) script because
Chromium refuses module scripts from file:// URLs. Browsers also refuse fetch() of file:// URLs,
which is how the viewer loads a model, so each scene.glb is copied in base64 into a script,
scenes/sceneN.js (N: the run's place on the page), that the page adds when the viewer nears the
screen. Videos are linked, not copied: the page stays valid while the runs stay where they are
relative to out_dir.
"""
import base64
import html
import json
import os
import shutil
import urllib.parse
from typing import NamedTuple

import imageio
import numpy as np
from PIL import Image, ImageDraw

from ifcommon import atomic_write, save_png, save_text
from interfusion_jax.config import ConfigError, load_config

VIEWS = ("object", "human", "interaction")
PROMPTS = ("object", "human", "interaction", "head")
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_assets")
VIEWER_JS = "model-viewer-umd.min.js"
VIEWER_LICENSE = "model-viewer.LICENSE"
PAD = 2
LABEL_H = 14  # one line of PIL's default font (about 11 px) plus a margin
DEFAULT_CELL_HW = (96, 96)  # the cell size of a sheet without a single readable frame
MISSING_RGB = (210, 210, 210)


class Run(NamedTuple):
    """What a run directory holds, as far as the report is concerned; *_note is None when fine."""

    dir: str
    name: str
    prompts: dict  # {PROMPTS key: str}; empty when the config is unreadable
    config_note: str | None
    videos: dict  # {view: path of test/<view>.mp4 or None}
    scene: str | None  # path of mesh/scene.glb
    metrics: dict | None  # metrics.json's contents
    metrics_note: str | None


def _read_config(run_dir):
    """run_dir -> (scene name, {prompt key: str}, note or None)."""
    fallback = os.path.basename(os.path.normpath(run_dir))
    try:
        config = load_config(os.path.join(run_dir, "config.py"))
    except ConfigError as e:
        return fallback, {}, f"config.py: {e}"
    prompts = config.get("prompts", {})
    return (str(config.get("name", fallback)),
            {k: str(prompts.get(k, "")) for k in PROMPTS}, None)


def _read_metrics(run_dir):
    """run_dir -> (metrics.json's dict or None, note or None)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return None, "no metrics.json"
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"metrics.json is unreadable: {e}"
    if not isinstance(metrics, dict):
        return None, "metrics.json is not a JSON object"
    return metrics, None


def _existing(path):
    return path if os.path.isfile(path) else None


def read_run(run_dir):
    """run_dir -> Run."""
    name, prompts, config_note = _read_config(run_dir)
    metrics, metrics_note = _read_metrics(run_dir)
    videos = {v: _existing(os.path.join(run_dir, "test", f"{v}.mp4")) for v in VIEWS}
    return Run(run_dir, name, prompts, config_note, videos,
               _existing(os.path.join(run_dir, "mesh", "scene.glb")), metrics, metrics_note)


def _url(path, out_dir):
    """A file's address relative to out_dir, as an HTML attribute value."""
    return html.escape(urllib.parse.quote(os.path.relpath(path, out_dir).replace(os.sep, "/")))


def _note(text):
    return f'<p class="note">{html.escape(text)}</p>'


def _format_metric(value):
    if value is None:
        return "&mdash;"  # null: the metric was not computed for this run
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(value if isinstance(value, str) else json.dumps(value))


def _prompts_html(run):
    if run.config_note:
        return _note(run.config_note)
    rows = "".join(f"<tr><th>{k}</th><td>{html.escape(run.prompts[k])}</td></tr>" for k in PROMPTS)
    return f'<table class="prompts">{rows}</table>'


def _videos_html(run, out_dir):
    figures = []
    for view in VIEWS:
        path = run.videos[view]
        body = (f'<video controls muted loop preload="metadata" src="{_url(path, out_dir)}"></video>'
                if path else _note(f"no test/{view}.mp4"))
        figures.append(f"<figure>{body}<figcaption>{view}</figcaption></figure>")
    return f'<div class="videos">{"".join(figures)}</div>'


def scene_script_name(index):
    """The scene script of the index-th run, relative to out_dir."""
    return f"scenes/scene{index}.js"


def scene_script(index, glb_path):
    """Text of a scene script: one call of the page's showScene with the glb in base64."""
    with open(glb_path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'showScene("scene{index}", "{data}");\n'


def _scene_html(index, run, out_dir):
    if not run.scene:
        return _note("no mesh/scene.glb")
    return (f'<model-viewer id="scene{index}" data-scene="{scene_script_name(index)}" camera-controls '
            f'interaction-prompt="none" shadow-intensity="1" '
            f'alt="{html.escape(run.name)}: object, human and guide body"></model-viewer>'
            f'<p><a href="{_url(run.scene, out_dir)}">mesh/scene.glb</a></p>')


def _metrics_html(run):
    if run.metrics_note:
        return _note(run.metrics_note)
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_format_metric(v)}</td></tr>"
                   for k, v in run.metrics.items())
    return f'<table class="metrics">{rows}</table>'


def section_html(index, run, out_dir, error=None):
    """One run's <section>; error: a one-line failure of this run's rendering, shown on top."""
    head = [f'<section id="run{index}">', f"<h2>{html.escape(run.name)}</h2>",
            f'<p class="path">{html.escape(run.dir)}</p>']
    if error:
        head.append(f'<p class="error">failed: {html.escape(error)}</p>')
    return "\n".join(head + [
        "<h3>prompts</h3>", _prompts_html(run),
        "<h3>test circle</h3>", _videos_html(run, out_dir),
        "<h3>scene</h3>", _scene_html(index, run, out_dir),
        "<h3>metrics</h3>", _metrics_html(run),
        "</section>",
    ])


STYLE = """
body { font-family: sans-serif; margin: 1em 2em; }
section { border-top: 1px solid #999; padding-bottom: 1em; }
.path { color: #666; font-family: monospace; }
.error { color: #b00; font-weight: bold; }
.note { color: #a60; font-style: italic; }
th { text-align: left; padding-right: 1em; font-weight: normal; color: #444; }
.videos { display: flex; gap: 1em; flex-wrap: wrap; }
figure { margin: 0; }
figcaption { text-align: center; }
video { width: 256px; height: 256px; background: #000; }
model-viewer { width: 640px; height: 480px; background: #f4f4f4; }
"""

# Each scene comes as a classic script, scenes/sceneN.js, that calls showScene: browsers refuse
# fetch() of file:// URLs, which is how <model-viewer> loads a model, but run scripts from them.
# A scene's script is added when its viewer nears the screen, so a page of many runs reads only the
# scenes scrolled to.
SCENE_LOADER = """
function showScene(id, glbBase64) {
  document.getElementById(id).src = "data:model/gltf-binary;base64," + glbBase64;
}
function sceneNote(viewer, text) {
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = text;
  viewer.replaceWith(note);
}
const sceneObserver = new IntersectionObserver((entries) => {
  for (const entry of entries.filter((e) => e.isIntersecting)) {
    const viewer = entry.target;
    sceneObserver.unobserve(viewer);
    const script = document.createElement("script");
    script.src = viewer.dataset.scene;
    script.onerror = () => sceneNote(viewer, "cannot read " + viewer.dataset.scene);
    document.head.append(script);
  }
}, {rootMargin: "50%"});
for (const viewer of document.querySelectorAll("model-viewer[data-scene]")) {
  viewer.addEventListener("error", () => sceneNote(viewer, "mesh/scene.glb could not be shown"));
  sceneObserver.observe(viewer);
}
"""


def page_html(runs, out_dir, errors):
    """index.html's text; runs: [Run]; errors: {run dir: one-line failure}."""
    toc = "".join(f'<li><a href="#run{i}">{html.escape(r.name)}</a></li>' for i, r in enumerate(runs))
    sections = "\n".join(section_html(i, r, out_dir, errors.get(r.dir)) for i, r in enumerate(runs))
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>interfusion-jax report</title><style>{STYLE}</style>"
        f'<script src="assets/{VIEWER_JS}"></script></head>\n<body>'
        f"<h1>interfusion-jax report: {len(runs)} run{'s' if len(runs) != 1 else ''}</h1>"
        f'<p><a href="contact_sheet.png">contact sheet</a></p><ul>{toc}</ul>\n'
        f"{sections}\n<script>{SCENE_LOADER}</script>\n</body></html>\n"
    )


def _read_png(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _read_first_video_frame(path):
    with imageio.v2.get_reader(path, format="FFMPEG") as reader:
        return np.asarray(reader.get_data(0))[..., :3]


def first_frame(run_dir, view):
    """uint8 [H, W, 3]: test/frames/<view>/0000.png, else the first frame of test/<view>.mp4; None
    when neither is readable."""
    sources = ((os.path.join(run_dir, "test", "frames", view, "0000.png"), _read_png),
               (os.path.join(run_dir, "test", f"{view}.mp4"), _read_first_video_frame))
    for path, read in sources:
        if os.path.isfile(path):
            try:
                return read(path)
            except (OSError, RuntimeError, ValueError, IndexError):
                continue  # a corrupt file: the next source, else the cell says "missing"
    return None


def cell_origin(row, col, cell_hw):
    """(y, x) of the top-left pixel of a run's (row) view's (col) cell in the contact sheet."""
    h, w = cell_hw
    return 2 * LABEL_H + row * (LABEL_H + h + PAD), PAD + col * (w + PAD)


def sheet_shape(n_rows, cell_hw):
    """Contact sheet's (H, W, 3): a header line of view names, then per run a name line, its cells
    and a gap."""
    h, w = cell_hw
    return LABEL_H + n_rows * (LABEL_H + h + PAD), PAD + len(VIEWS) * (w + PAD), 3


def _fit(frame, cell_hw):
    """frame scaled (aspect kept) and centred on a white cell of cell_hw; unchanged if it fits exactly."""
    h, w = cell_hw
    if frame.shape[:2] == (h, w):
        return frame
    scale = min(h / frame.shape[0], w / frame.shape[1])
    fh, fw = max(1, round(frame.shape[0] * scale)), max(1, round(frame.shape[1] * scale))
    cell = np.full((h, w, 3), 255, np.uint8)
    y, x = (h - fh) // 2, (w - fw) // 2
    cell[y:y + fh, x:x + fw] = np.asarray(Image.fromarray(frame).resize((fw, fh), Image.BILINEAR))
    return cell


def contact_sheet(labels, frames):
    """labels: one str per run; frames: per run, one uint8 [H, W, 3] or None per view -> uint8 sheet
    (sheet_shape). Cells are the largest frame's size; other frames are scaled to fit."""
    present = [f for row in frames for f in row if f is not None]
    cell_hw = (max(f.shape[0] for f in present), max(f.shape[1] for f in present)) if present \
        else DEFAULT_CELL_HW
    sheet = np.full(sheet_shape(len(labels), cell_hw), 255, np.uint8)
    missing = []
    for r, row in enumerate(frames):
        for c, frame in enumerate(row):
            y, x = cell_origin(r, c, cell_hw)
            if frame is None:
                sheet[y:y + cell_hw[0], x:x + cell_hw[1]] = MISSING_RGB
                missing.append((x + 2, y + 2))
            else:
                sheet[y:y + cell_hw[0], x:x + cell_hw[1]] = _fit(frame, cell_hw)
    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    for c, view in enumerate(VIEWS):
        draw.text((cell_origin(0, c, cell_hw)[1] + 2, 1), view, fill=(0, 0, 0))
    for r, label in enumerate(labels):
        draw.text((PAD + 2, cell_origin(r, 0, cell_hw)[0] - LABEL_H + 1), label, fill=(0, 0, 0))
    for xy in missing:
        draw.text(xy, "missing", fill=(90, 90, 90))
    return np.asarray(canvas)


def _copy(src, dst):
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_report(run_dirs, out_dir, errors=None):
    """run_dirs: [str] in page order; errors: {run dir (as given): one-line failure} for runs whose
    rendering broke -> (index.html path, contact_sheet.png path), both in out_dir."""
    runs = [read_run(d) for d in run_dirs]
    _copy(os.path.join(ASSETS, VIEWER_JS), os.path.join(out_dir, "assets", VIEWER_JS))
    _copy(os.path.join(ASSETS, "LICENSE"), os.path.join(out_dir, "assets", VIEWER_LICENSE))
    for i, run in enumerate(runs):
        if run.scene:
            save_text(os.path.join(out_dir, scene_script_name(i)), scene_script(i, run.scene))
    index = os.path.join(out_dir, "index.html")
    save_text(index, page_html(runs, out_dir, errors or {}))
    labels = [r.name if r.name == os.path.basename(os.path.normpath(r.dir))
              else f"{r.name} ({os.path.basename(os.path.normpath(r.dir))})" for r in runs]
    sheet = os.path.join(out_dir, "contact_sheet.png")
    save_png(sheet, contact_sheet(labels, [[first_frame(r.dir, v) for v in VIEWS] for r in runs]))
    return index, sheet
