"""`talk3d render` and `talk3d mpi-view` through the CLI: flags reach the library, errors are one line."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from talk3d.render.probe import count_frames, probe
from talk3d_cli.main import app
from tests.render_helpers import make_run_folder, write_speech_like

runner = CliRunner()


def test_cli_render_stereo_depth_mpi_and_view(tmp_path):
    run = make_run_folder(tmp_path)
    audio = write_speech_like(tmp_path / "a.wav", 0.5)
    out = tmp_path / "o.mp4"
    r = runner.invoke(app, ["render", str(run), str(audio), "-o", str(out), "--fps", "10", "--size", "24",
                            "--stereo", "--ipd", "63mm", "--depth", "--mpi", str(tmp_path / "mpi"),
                            "--mpi-frames", "1", "--mpi-layers", "8", "--yaw", "15", "--quiet"])
    assert r.exit_code == 0, r.output
    info = probe(out)
    assert (info.width, info.height) == (48, 24) and count_frames(out) == 5
    assert (tmp_path / "o.depth.mp4").is_file()
    mpi_dir = tmp_path / "mpi" / "frame_000001"
    img = tmp_path / "view.png"
    r = runner.invoke(app, ["mpi-view", str(mpi_dir), "-o", str(img), "--yaw", "10", "--dx", "0.1",
                            "--size", "20", "--quiet"])
    assert r.exit_code == 0, r.output
    with Image.open(img) as im:
        assert im.size == (20, 20)
        assert np.asarray(im).std() > 0.5
    r = runner.invoke(app, ["mpi-view", str(mpi_dir), "-o", str(img)])
    assert r.exit_code == 1 and "--force" in r.output
    r = runner.invoke(app, ["mpi-view", str(tmp_path), "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "mpi.json" in r.output
    # existing output: one-line error, exit 1, no traceback
    r = runner.invoke(app, ["render", str(run), str(audio), "-o", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["render", str(tmp_path / "missing"), str(audio), "-o", str(tmp_path / "p.mp4")])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = runner.invoke(app, ["render", str(run), str(audio), "-o", str(tmp_path / "q.mp4"), "--yaw", "100"])
    assert r.exit_code == 1 and "90" in r.output
