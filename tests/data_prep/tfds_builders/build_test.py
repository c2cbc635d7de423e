"""The command line `python -m data_prep.tfds_builders.build`: a DFEW fold prepared in one line of
output, and bad input refused in one line naming the flag, exit 1 or 2."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _run(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(
        [sys.executable, "-m", "data_prep.tfds_builders.build", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prepares_a_fold_and_refuses_bad_input_in_one_line(dfew_tree, tmp_path):
    data_dir = str(tmp_path / "tfds")
    out = _run(
        "--dataset=dfew",
        "--fold=2",
        f"--manual_dir={dfew_tree}",
        f"--data_dir={data_dir}",
        "--frame_size=32",
        "--workers=1",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith(f"prepared dfew/fold_2_32px in {data_dir}/dfew/fold_2_32px/1.0.0 (")
    assert "1 clips" in line and "bad_clips.tsv" in line
    bad = _run("--dataset=dfew", "--fold=7", f"--manual_dir={dfew_tree}", f"--data_dir={data_dir}")
    message = [x for x in bad.stderr.strip().splitlines() if x]
    assert bad.returncode in (1, 2) and "needs --fold=1..5, got 7" in message[-1] and "Traceback" not in bad.stderr
    again = _run("--dataset=dfew", "--fold=2", f"--manual_dir={dfew_tree}", f"--data_dir={data_dir}", "--frame_size=32")
    assert again.returncode == 1 and "already holds dfew/fold_2_32px" in again.stderr
    assert "Traceback" not in again.stderr
