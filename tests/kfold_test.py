"""The DFEW protocol in one command: five folds of a tiny stand-in trained and aggregated into
results.json."""

import json
import os
import subprocess
import sys

import pytest

from grace_jax import kfold

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/dfew.py shrunk to the tiny random CLIP and seconds per fold (the demo's model sizes).
TINY = [
    "--config.model.clip.variant=tiny",
    "--config.model.clip.init=random",
    "--config.model.clip.tokenizer=builtin:tiny",
    "--config.model.num_frames=4",
    "--config.model.prompt.n_ctx=4",
    "--config.model.temporal.heads=4",
    "--config.model.temporal.dim_head=8",
    "--config.model.temporal.mlp_dim=64",
    "--config.model.cate.heads=4",
    "--config.model.logit_scale=10.0",
    "--config.data.image_size=32",
    "--config.data.num_workers=0",
    "--config.optim.batch_size=8",
    "--config.optim.num_train_steps=2",
    "--config.optim.optimizer=adamw",
    '--config.optim.groups=((".*", 1e-3),)',
    "--config.train.log_every_steps=1",
    "--config.train.eval_every_steps=1",
    "--config.train.ckpt_every_steps=1000",
]


@pytest.mark.slow
def test_five_folds_in_one_command_write_results_json(synthfer_dir, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(1, 6):  # each fold's shards (the same stand-in clips: what matters is the plumbing)
        os.symlink(synthfer_dir, shards / f"dfew_fold{k}")
    workdir = tmp_path / "dfew"
    cmd = [
        sys.executable,
        "-m",
        "grace_jax.kfold",
        "--config=configs/dfew.py",
        f"--workdir={workdir}",
        f"--data_dir={shards}/dfew_fold{{fold}}",
        "--",
        *TINY,
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert [f["workdir"] for f in results["folds"]] == [str(workdir / f"fold_{k}") for k in range(1, 6)]
    for k, fold in enumerate(results["folds"], 1):
        config = json.loads((workdir / f"fold_{k}" / "config.json").read_text())
        assert config["data"]["fold"] == k and config["data"]["dir"] == f"{shards}/dfew_fold{k}"
        final = json.loads((workdir / f"fold_{k}" / "final_metrics.json").read_text())
        assert fold["rules"]["best_uar"]["uar"] == final["best"]["uar"]
        assert fold["rules"]["best_war"]["war"] == max(
            final["best"]["war"], final["last"]["war"], final["best_war"]["war"]
        )
        assert fold["rules"]["last"]["step"] == 2 and fold["rules"]["last"]["num_test_clips"] == 20
        assert len(fold["rules"]["last"]["confusion"]) == 7
        prov = fold["provenance"]
        assert prov["frame_source"]["kind"] == "generated" and set(prov["clip_list_sha256"]) == {"train", "test"}
        assert all(len(v) == 64 for v in prov["clip_list_sha256"].values())
    s = results["summary"]
    assert set(s) == {"best_uar", "best_war", "last"} and s["last"]["num_test_clips"] == 100
    for rule in s.values():
        assert rule["num_folds"] == 5 and len(rule["per_class_recall_mean"]) == 7
    assert "ddof=0" in results["std"] and results["selection_split"] == "test"
    assert "best_uar UAR" in done.stdout and f"Wrote {workdir}/results.json" in done.stdout
    # Again: every fold is finished, so nothing trains and results.json is the same.
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("exists, skipped") == 5, again.stderr[-2000:]


def test_fold_commands_and_launch_recipe(capsys):
    assert kfold.fold_config("configs/dfew.py", 3) == "configs/dfew.py:fold=3"
    assert kfold.fold_config("configs/dferclip.py:mafw,fold=1", 4) == "configs/dferclip.py:mafw,fold=4"
    argv = [
        "--config=configs/mafw.py",
        "--workdir=gs://b/mafw",
        "--data_dir=gs://b/shards/mafw_fold{fold}",
        "--launch=python -m launch.slurm --nodes=1 --gpus_per_node=8 --sbatch",
        "--select_on=val",
        "--dry_run",
        "--",
        "--config.optim.grad_accum_steps=4",
    ]
    assert kfold.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "python -m launch.slurm --nodes=1 --gpus_per_node=8 --sbatch --config=configs/mafw.py:fold=1 "
        "--workdir=gs://b/mafw/fold_1 -- --config.data.dir=gs://b/shards/mafw_fold1 "
        "--config.data.eval_split=val --config.optim.grad_accum_steps=4"
    )
    assert (
        len([line for line in lines if line.startswith("python -m launch.slurm")]) == 5
        and "--aggregate_only" in lines[-1]
    )


@pytest.mark.slow
def test_ctrl_c_reaches_the_fold_once_it_saves_its_step_and_the_same_command_resumes(synthfer_dir, tmp_path):
    """Ctrl-C in the terminal (SIGINT to kfold's process group): the fold's trainer saves the step it
    finished and exits 130, and so does kfold; it is not killed mid-save."""
    import re
    import signal
    import threading
    import time

    os.symlink(synthfer_dir, tmp_path / "dfew_fold1")
    workdir = tmp_path / "dfew"
    steps = [a for a in TINY if "num_train_steps" not in a and "log_every" not in a]
    cmd = [sys.executable, "-m", "grace_jax.kfold", "--config=configs/dfew.py", f"--workdir={workdir}", "--folds=1",
           f"--data_dir={tmp_path}/dfew_fold{{fold}}", "--", *steps, "--config.optim.num_train_steps=40",
           "--config.train.log_every_steps=1", "--config.train.eval_every_steps=1000"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while not any(line.startswith("step 3/40 ") for line in lines):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == 130, "".join(lines)[-3000:]
    reader.join(timeout=10)
    out = "".join(lines)
    saved = re.search(r"Interrupted \(Ctrl-C\): saved the checkpoint of step (\d+) to ", out)
    assert saved and "Traceback" not in out, out[-3000:]
    assert out.rstrip().endswith("Interrupted (Ctrl-C): run this command again to resume from this fold."), out[-500:]
    fold = workdir / "fold_1"
    assert not (fold / "lock.json").exists()
    assert sorted(p.name for p in (fold / "checkpoints" / "last").iterdir()) == [saved[1]]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"at step {saved[1]}." in done.stdout + done.stderr and (workdir / "results.json").exists()
