"""Pose stage end to end on CPU: import_poses -> gen_codebook -> gen_pose with the built-in body, the
tiny random CLIP and VPoser fixtures; gen_image's own logic with a fake sampler; bad inputs."""
import json
import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from guidance import sampling
from pose import codebook as cb
from pose import gen_codebook, gen_image, gen_pose, import_codebook, import_poses, retrieval
from pose.clip_model import load_clip

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
CLIP = os.path.join(FIX, "clip")
VPOSER = os.path.join(FIX, "vposer", "tiny.npz")
SMPLX = os.path.join(FIX, "smplx", "SMPLX_NEUTRAL.npz")
SIZE = 64


def _cli_error(main, argv):
    """Run a step's main; return the one-line user error it exits with (status 2)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
        main(argv)
    msg = err.getvalue()
    assert e.value.code == 2 and msg.startswith("error: ") and msg.count("\n") == 1, msg
    return msg.strip()


@pytest.fixture(scope="module")
def pose_set(tmp_path_factory):
    """Presets with random perturbations: 6 single-pose .npy files and one .npz of 300 poses, plus a
    file of the wrong shape that import_poses must skip."""
    from body.presets import PRESETS

    d = tmp_path_factory.mktemp("poses")
    rng = np.random.default_rng(0)
    base = np.stack([np.asarray(p, np.float32) for p in PRESETS.values()])
    for name, p in PRESETS.items():
        np.save(d / f"{name}.npy", np.asarray(p, np.float32))
    many = base[rng.integers(0, len(base), 300)] + rng.normal(0, 0.08, (300, 63)).astype(np.float32)
    np.savez(d / "many.npz", poses=many)
    np.save(d / "bad.npy", np.zeros(5, np.float32))
    out = d / "poses.npz"
    import_poses.main(["--in", str(d), "--out", str(out)])
    return out, base, many


def test_import_poses_reads_all_and_skips_bad(pose_set, tmp_path, capsys):
    from body.presets import PRESETS

    out, base, many = pose_set
    with np.load(out) as f:
        poses, names = f["poses"], f["names"].astype(str)
    assert poses.shape == (len(base) + 300, 63) and len(names) == len(poses)
    for name, p in PRESETS.items():
        np.testing.assert_allclose(poses[list(names).index(name)], p, atol=1e-6)
    np.testing.assert_allclose(poses[np.char.startswith(names, "many:")], many, atol=1e-6)
    import_poses.main(["--in", os.path.dirname(out), "--out", str(tmp_path / "again.npz")])
    report = capsys.readouterr().out
    assert "bad.npy" in report and "(5,)" in report and "skipped 1" in report


@pytest.fixture(scope="module")
def built(pose_set, tmp_path_factory):
    d = tmp_path_factory.mktemp("cb")
    out = d / "codebook.npz"
    gen_codebook.main(["--poses", str(pose_set[0]), "--out", str(out), "--cluster_size", "16", "--clip", CLIP,
                       "--size", str(SIZE), "--chunk", "8"])
    return out


def test_codebook_file(built, capsys):
    poses, features, meta = cb.load_codebook(str(built))
    assert poses.shape == (16, 63) and features.shape == (16, 16)
    assert meta["clustering"] == "rot6d" and meta["settings"]["vposer"] is None
    assert meta["settings"]["views"]["azimuths"] == [0.0, 90.0, 180.0, 270.0]
    assert not os.path.exists(str(built) + ".work.npz")
    gen_codebook.main(["--poses", meta["settings"]["poses_file"], "--out", str(built), "--cluster_size", "16",
                       "--clip", CLIP, "--size", str(SIZE), "--chunk", "8"])
    assert "nothing to do" in capsys.readouterr().out


def test_features_resume_and_chunking_agree(built):
    """A job resumed after 5 poses (so its chunks start elsewhere) gives the same features."""
    from body import load_body

    poses, features, _ = cb.load_codebook(str(built))
    again = cb.pose_features(load_body(None), load_clip(CLIP), poses, cb.Views(size=SIZE), chunk=8,
                             done=features[:5])
    np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-6)


def test_gen_codebook_resumes_after_interruption(pose_set, built, tmp_path, monkeypatch, capsys):
    from pose.clip_model import Clip

    real, calls = Clip.image_features, []

    def failing(self, images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images)

    out = tmp_path / "codebook.npz"
    argv = ["--poses", str(pose_set[0]), "--out", str(out), "--cluster_size", "16", "--clip", CLIP,
            "--size", str(SIZE), "--chunk", "8"]
    monkeypatch.setattr(Clip, "image_features", failing)
    with pytest.raises(SystemExit) as interrupted:  # Ctrl-C: one line, exit status 130
        gen_codebook.main(argv)
    assert interrupted.value.code == 130
    assert not out.exists() and os.path.exists(str(out) + ".work.npz")
    monkeypatch.setattr(Clip, "image_features", real)
    gen_codebook.main(argv)
    printed = capsys.readouterr().out
    assert "resuming" in printed and "8/16" in printed
    want, got = cb.load_codebook(str(built)), cb.load_codebook(str(out))
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


def test_renders_cover_projected_joints(built):
    """Every body joint projects (pinhole formula of body.body_render, re-derived here) onto the
    rendered silhouette, in all four views."""
    from body import load_body

    poses = cb.load_codebook(str(built))[0][:8]
    images, masks, joints, cams = cb.render_views(load_body(None), poses, cb.Views(size=SIZE), np.arange(8))
    images, masks, joints = np.asarray(images), np.asarray(masks), np.asarray(joints)[:, :22]
    assert (images.reshape(-1, 3).min(axis=-1) < 0.9).any()
    eye, rot, focal = np.asarray(cams.eye), np.asarray(cams.rotation), np.asarray(cams.focal)
    m = masks.reshape(-1, SIZE, SIZE)
    grown = m.copy()  # one pixel of slack: thin limbs at 64 px
    grown[:, 1:] |= m[:, :-1]
    grown[:, :-1] |= m[:, 1:]
    grown[:, :, 1:] |= m[:, :, :-1]
    grown[:, :, :-1] |= m[:, :, 1:]
    for v in range(len(m)):
        c = (joints[v // 4] - eye[v]) @ rot[v].T
        u = SIZE / 2 + focal[v] * c[:, 0] / -c[:, 2]
        r = SIZE / 2 - focal[v] * c[:, 1] / -c[:, 2]
        assert grown[v, r.astype(int), u.astype(int)].all(), f"view {v}"
        assert m[v].mean() < 0.5  # the whole body is in frame, not filling it


def _texture_folder(folder, faces, num_vertices, rgb):
    """A folder laid out as the release's smplx_uv: an .obj whose faces are `faces` with random
    texture coordinates, and a flat albedo PNG of colour rgb (uint8)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    lines = ["v 0 0 0"] * num_vertices
    lines += [f"vt {u:.5f} {v:.5f}" for u, v in rng.uniform(0.05, 0.95, (num_vertices, 2))]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in face) for face in faces]
    (folder / "smplx_uv.obj").write_text("\n".join(lines) + "\n")
    Image.fromarray(np.full((16, 16, 3), rgb, np.uint8)).save(folder / "f_02_alb.002.png")
    return folder


def test_texture_flag(pose_set, tmp_path):
    """--texture: the codebook records it, and the renders take their albedo from it. (At 32 px:
    the fixture SMPL-X's faces are coarse, and larger renders send many to the slow brute-force
    path.)"""
    from body import load_body

    body = load_body(SMPLX)
    tex = _texture_folder(tmp_path / "smplx_uv", body.faces, len(body.v_template), (200, 0, 0))
    out = tmp_path / "textured.npz"
    gen_codebook.main(["--poses", str(pose_set[0]), "--out", str(out), "--cluster_size", "4",
                       "--clip", CLIP, "--size", "32", "--chunk", "4", "--body", SMPLX,
                       "--texture", str(tex)])
    poses, features, meta = cb.load_codebook(str(out))
    assert meta["settings"]["texture"] == str(tex) and np.isfinite(features).all()
    texels = gen_codebook.read_texture(str(tex), body.faces)
    images, masks = cb.render_views(body, poses, cb.Views(size=32), np.arange(4), texels=texels)[:2]
    body_px = np.asarray(images)[np.asarray(masks)]
    assert body_px[:, 0].max() > 0.5 and np.abs(body_px[:, 1:]).max() < 1e-6  # red albedo only


def test_gen_pose_outputs(built, tmp_path):
    out = tmp_path / "q"
    out.mkdir()
    np.save(out / "top_3.npy", np.zeros(63))  # left by an earlier run with a larger --topk
    gen_pose.main(["--codebook", str(built), "--text", "riding a bike", "--topk", "3", "--out", str(out),
                   "--clip", CLIP])  # default 224 px renders
    poses, features, _ = cb.load_codebook(str(built))
    report = json.loads((out / "scores.json").read_text())
    clip = load_clip(CLIP)
    q = np.asarray(clip.text_features(["a rendered 3d man is riding a bike"]))[0]
    cos = features @ q / np.linalg.norm(features, axis=1) / np.linalg.norm(q)
    want = np.argsort(-cos)[:3]
    got = [r["codebook_index"] for r in report["results"]]
    assert got == list(want)
    scores = [r["score"] for r in report["results"]]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, cos[want], rtol=1e-5)
    for i, j in enumerate(got):
        p = np.load(out / f"top_{i}.npy")
        assert p.shape == (63,)
        np.testing.assert_array_equal(p, poses[j])
        img = np.asarray(Image.open(out / f"top_{i}.png"))
        assert img.shape == (224, 224, 3) and (img < 200).any(axis=-1).mean() > 0.01
    assert not (out / "top_3.npy").exists()
    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape[1] >= 3 * 224 and strip.shape[0] >= 224


def _near_duplicate_codebook(rng, query, k=12):
    """Poses [k, 63] and features [k, D] whose cosine score against `query` falls with the row and
    whose rows come in near-duplicate pairs: row 2i + 1 is row 2i moved by 0.01 per number (mean
    absolute difference 0.01, under the filter's 0.07), scoring a little lower; distinct pairs
    differ by about 1.1 per number."""
    base = rng.normal(0.0, 1.0, (k // 2, 63))
    poses = np.repeat(base, 2, axis=0)
    poses[1::2] += 0.01 * rng.choice([-1.0, 1.0], (k // 2, 63))
    q = np.asarray(query, np.float64) / np.linalg.norm(query)
    other = rng.normal(size=(k, len(q)))
    other -= np.outer(other @ q, q)  # orthogonal to the query
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cos = 0.9 - 0.05 * np.arange(k) - 0.01 * (np.arange(k) % 2)
    features = cos[:, None] * q + np.sqrt(1.0 - cos**2)[:, None] * other
    return poses.astype(np.float32), features.astype(np.float32)


def test_near_duplicate_filter():
    """The release's optional filter: greedy in rank order over the pre_topk best, a pose whose mean
    absolute difference to a kept one is at most the threshold is dropped."""
    rng = np.random.default_rng(0)
    query = rng.normal(size=16)
    poses, features = _near_duplicate_codebook(rng, query)
    idx, scores = retrieval.retrieve(features, query, 4)
    assert list(idx) == [0, 1, 2, 3]  # off: the near-duplicates 1 and 3 stay
    assert np.all(np.diff(scores) < 0)
    idx, scores = retrieval.retrieve(features, query, 4, poses=poses, dedup_threshold=retrieval.DEDUP_THRESHOLD)
    assert list(idx) == [0, 2, 4, 6]
    np.testing.assert_allclose(scores, retrieval.cosine_scores(features, query)[idx], rtol=1e-6)
    # Only the pre_topk best are looked through: 5 candidates hold 3 distinct poses.
    idx, _ = retrieval.retrieve(features, query, 4, poses=poses, dedup_threshold=0.07, pre_topk=5)
    assert list(idx) == [0, 2, 4]
    # A threshold below the duplicates' difference keeps them.
    assert list(retrieval.retrieve(features, query, 4, poses=poses, dedup_threshold=0.005)[0]) == [0, 1, 2, 3]
    # A difference equal to the threshold is a duplicate; only kept poses count (the third pose is
    # 0.125 from the dropped second one, 0.375 from the kept first one).
    assert list(retrieval.suppress_near_duplicates(np.zeros((3, 63)) + [[0.0], [0.25], [0.375]], 0.25)) == [0, 2]
    with pytest.raises(cb.PoseStageError, match="--pre_topk 3 is smaller than --topk 4"):
        retrieval.retrieve(features, query, 4, poses=poses, dedup_threshold=0.07, pre_topk=3)


def test_gen_pose_dedup_flag(tmp_path):
    """--dedup drops near-duplicates from gen_pose's output; --pre_topk and --dedup_threshold
    without --dedup are refused rather than ignored."""
    clip = load_clip(CLIP)
    query = np.asarray(clip.text_features([retrieval.QUERY_TEMPLATE.format("riding a bike")]))[0]
    poses, features = _near_duplicate_codebook(np.random.default_rng(1), query)
    book = tmp_path / "dups.npz"
    cb.save_codebook(str(book), poses, features, {"note": "near-duplicate pairs"})
    argv = ["--codebook", str(book), "--text", "riding a bike", "--topk", "3", "--clip", CLIP, "--size", "32"]

    gen_pose.main(argv + ["--out", str(tmp_path / "plain")])
    plain = json.loads((tmp_path / "plain" / "scores.json").read_text())
    assert [r["codebook_index"] for r in plain["results"]] == [0, 1, 2] and plain["dedup"] is None

    gen_pose.main(argv + ["--out", str(tmp_path / "dedup"), "--dedup"])
    report = json.loads((tmp_path / "dedup" / "scores.json").read_text())
    assert [r["codebook_index"] for r in report["results"]] == [0, 2, 4]
    assert report["dedup"] == {"pre_topk": retrieval.PRE_TOPK, "threshold": retrieval.DEDUP_THRESHOLD}
    kept = [np.load(tmp_path / "dedup" / f"top_{i}.npy") for i in range(3)]
    assert min(np.abs(a - b).mean() for i, a in enumerate(kept) for b in kept[i + 1:]) > retrieval.DEDUP_THRESHOLD

    out = tmp_path / "few"
    out.mkdir()
    np.save(out / "top_2.npy", np.zeros(63))  # an earlier run's; fewer survivors than --topk now
    gen_pose.main(argv + ["--out", str(out), "--dedup", "--pre_topk", "4"])
    assert [r["codebook_index"] for r in json.loads((out / "scores.json").read_text())["results"]] == [0, 2]
    assert not (out / "top_2.npy").exists()

    for extra in (["--pre_topk", "10"], ["--dedup_threshold", "0.1"]):
        msg = _cli_error(gen_pose.main, argv + ["--out", str(tmp_path / "x")] + extra)
        assert extra[0] in msg and "--dedup" in msg
    msg = _cli_error(gen_pose.main, argv + ["--out", str(tmp_path / "x"), "--dedup", "--pre_topk", "2"])
    assert "--pre_topk 2" in msg and "--topk 3" in msg


def test_vposer_codebook(pose_set, tmp_path):
    from sklearn.cluster import KMeans

    from pose.vposer import load_vposer

    out = tmp_path / "cbv.npz"
    gen_codebook.main(["--poses", str(pose_set[0]), "--out", str(out), "--cluster_size", "16", "--clip", CLIP,
                       "--size", str(SIZE), "--chunk", "8", "--vposer", VPOSER])
    poses, features, meta = cb.load_codebook(str(out))
    assert meta["clustering"] == "vposer" and poses.shape == (16, 63) and features.shape == (16, 16)
    vp = load_vposer(VPOSER)
    with np.load(pose_set[0]) as f:
        z = np.asarray(vp.encode_mean(f["poses"]), np.float64)
    centres = KMeans(n_clusters=16, random_state=0, n_init="auto").fit(z).cluster_centers_
    np.testing.assert_allclose(poses, np.asarray(vp.decode(centres)), atol=1e-4)


def test_gen_image_template_dedup_skip_and_names(tmp_path, monkeypatch):
    calls = []

    def fake(stage1, stage2, prompts, num_images_per_prompt, prompt_seeds, **kw):
        calls.append((prompts, num_images_per_prompt, prompt_seeds))
        for seed in prompt_seeds:
            yield np.full((num_images_per_prompt, 8, 8, 3), seed, np.uint8)

    monkeypatch.setattr(sampling, "iter_images", fake)
    prompts = tmp_path / "p.txt"
    prompts.write_text("riding a bike\n\n  playing a drum \nriding a bike\n")
    out = tmp_path / "img"
    argv = ["--prompts", str(prompts), "--out", str(out), "--num_images_per_text", "2", "--seed", "5"]
    gen_image.main(argv)
    assert calls == [(["a photo of a person riding a bike, full body",
                       "a photo of a person playing a drum, full body"], 2, [5, 6])]
    names = sorted(os.listdir(out))
    assert names == ["playing_a_drum_0.png", "playing_a_drum_1.png", "riding_a_bike_0.png", "riding_a_bike_1.png"]
    assert np.asarray(Image.open(out / "playing_a_drum_1.png")).max() == 6
    calls.clear()
    gen_image.main(argv)
    assert calls == []
    os.remove(out / "playing_a_drum_0.png")
    gen_image.main(argv)
    assert calls == [(["a photo of a person playing a drum, full body"], 2, [6])]
    assert os.path.isfile(out / "playing_a_drum_0.png")


def test_gen_image_default_prompts_are_the_release_phrases():
    phrases = gen_image.read_phrases(gen_image.DEFAULT_PROMPTS)
    assert len(phrases) == 245 and "riding a bike" in phrases


def test_bad_inputs(tmp_path, built):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert "empty.txt" in _cli_error(gen_image.main, ["--prompts", str(empty), "--out", str(tmp_path)])

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, poses=np.zeros((10, 60), np.float32))
    msg = _cli_error(gen_codebook.main, ["--poses", str(wrong), "--out", str(tmp_path / "c.npz"), "--clip", CLIP])
    assert "--poses" in msg and "wrong.npz" in msg and "(10, 60)" in msg

    small = tmp_path / "small.npz"
    np.savez(small, poses=np.zeros((10, 63), np.float32))
    msg = _cli_error(gen_codebook.main, ["--poses", str(small), "--out", str(tmp_path / "c.npz"), "--clip", CLIP,
                                         "--cluster_size", "16"])
    assert "--cluster_size 16" in msg and "10" in msg

    base = ["--poses", str(small), "--out", str(tmp_path / "c.npz"), "--clip", CLIP,
            "--cluster_size", "4"]
    msg = _cli_error(gen_codebook.main, base + ["--texture", str(tmp_path / "nouv")])
    assert "--texture" in msg and "nouv" in msg and "smplx_uv.obj" in msg
    tex = _texture_folder(tmp_path / "uv", [[0, 1, 2]], 3, (200, 0, 0))
    os.remove(tex / "f_02_alb.002.png")
    msg = _cli_error(gen_codebook.main, base + ["--texture", str(tex)])
    assert "--texture" in msg and "no f_02_alb.002.png" in msg
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tex / "f_02_alb.002.png")
    msg = _cli_error(gen_codebook.main, base + ["--texture", str(tex)])  # the built-in body
    assert "--texture" in msg and "smplx_uv.obj" in msg and "1 faces" in msg
    assert "SMPLX_NEUTRAL" in msg

    poses, features, meta = cb.load_codebook(str(built))
    other = tmp_path / "other_dim.npz"
    cb.save_codebook(str(other), poses, features[:, :8], meta)
    msg = _cli_error(gen_pose.main, ["--codebook", str(other), "--text", "x", "--clip", CLIP, "--out", str(tmp_path)])
    assert "other_dim.npz" in msg and "8-d" in msg and "16-d" in msg

    msg = _cli_error(gen_pose.main, ["--codebook", str(built), "--text", "x", "--topk", "17", "--clip", CLIP,
                                     "--out", str(tmp_path)])
    assert "--topk 17" in msg and "16 poses" in msg

    msg = _cli_error(gen_pose.main, ["--codebook", str(built), "--text", "x", "--clip", str(tmp_path / "noclip"),
                                     "--out", str(tmp_path)])
    assert "noclip" in msg and "openai/clip-vit-base-patch32" in msg


def test_import_codebook_without_torch_says_what_to_install(tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is importable here")
    except ImportError:
        pass
    msg = _cli_error(import_codebook.main, ["--in", str(tmp_path / "codebook.pth"), "--out", str(tmp_path / "c.npz")])
    assert "codebook.pth" in msg and "pip install torch" in msg


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = subprocess.run([sys.executable, "-m", "pose.gen_image", "--prompts", str(empty), "--out", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"error: --prompts {empty}: no phrases (empty file)"]
