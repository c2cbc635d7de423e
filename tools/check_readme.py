r"""Runs the README's "Quick start", "Install", "Check a new machine" and "Prediction" commands as printed, in a fresh clone, as a newcomer would.

Usage (from the repository; CI runs it after the test suite, see .ci/run):

  python tools/check_readme.py            # clones HEAD (committed files only) into a temp folder
  python tools/check_readme.py --keep     # ... and leaves the clone there to look at

Every shell line of those sections' code blocks runs in order in one bash (`set -euo pipefail`) at the
clone's root, so what one line makes (the venv, runs/demo) is there for the next. Three lines are
adapted, and the log says how:

- the demo's training command gets DEMO_OVERRIDES appended (fewer steps; 110 so that the step-100
  checkpoint is written and read back, where a relative --workdir once crashed);
- `tensorboard ...` runs in the background until its HTTP API lists the demo's run, then is stopped;
- the test-suite line is skipped: CI runs the suite just before this.

After each predict line, its predictions.json is checked for a prediction of every input.
Takes about 10 minutes on 2 cores, most of it the install, the demo and the self-check
(grace_jax.doctor --quick). Exit status 0 when every line worked; otherwise the failing line and its
output's tail.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

SECTIONS = ("Quick start", "Install", "Check a new machine", "Prediction")
DEMO = "python -m grace_jax.main --config=configs/demo.py"
DEMO_OVERRIDES = "--config.optim.num_train_steps=110 --config.train.eval_every_steps=110"
TESTS = "python -m pytest"
TENSORBOARD = "tensorboard "
PREDICT = "python -m grace_jax.predict"

# Shell functions the generated script calls in place of the adapted lines.
PRELUDE = r"""
set -euo pipefail
serve_tensorboard() {  # runs the printed command in the background until /data/runs lists runs/demo
  "$@" > tensorboard.log 2>&1 &
  local pid=$!
  for _ in $(seq 120); do
    if runs=$(python -c 'import urllib.request as u; print(u.urlopen("http://localhost:6006/data/runs", timeout=2).read().decode())' 2>/dev/null) && [[ "$runs" == *demo* ]]; then
      echo "tensorboard serves the demo's run: $runs"
      kill "$pid"; wait "$pid" 2>/dev/null || true; return 0
    fi
    sleep 1
  done
  kill "$pid" 2>/dev/null || true; cat tensorboard.log; echo "tensorboard did not list runs/demo in 120 s"; return 1
}
check_predicted() {  # every input clip has a prediction in <out>/predictions.json
  python - "$@" <<'PY'
import json, os, sys
out, inputs = sys.argv[1], sys.argv[2:]
with open(os.path.join(out, "predictions.json")) as f:
    done = {r["input"] for r in json.load(f)["results"] if r["prediction"] is not None}
missing = [i for i in inputs if i not in done]
assert not missing, f"{out}/predictions.json has no prediction for {missing}"
print(f"{out}/predictions.json: a prediction for each of the {len(inputs)} inputs")
PY
}
"""


def commands(readme: str) -> list[tuple[str, str]]:
    """(section, command) for each shell line of the SECTIONS' fenced blocks, continuations joined."""
    found = []
    section = None
    fence = None  # the open block's language tag, None outside blocks
    pending = ""
    for line in readme.splitlines():
        if line.startswith("```"):
            fence = (line[3:].strip() or "sh") if fence is None else None
            continue
        if fence is None:
            if line.startswith("## "):
                section = next((s for s in SECTIONS if line[3:].startswith(s)), None)
            continue
        if section and fence in ("sh", "bash", "shell"):
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text and not text.startswith("#"):
                found.append((section, text))
    return found


def script(lines: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The bash script for `lines` and notes on what was adapted."""
    body, notes = [PRELUDE], []
    for section, cmd in lines:
        body.append(f"echo {shlex.quote(f'+ [{section}] {cmd}')}")
        if cmd.startswith(DEMO):
            body.append(f"{cmd} {DEMO_OVERRIDES}")
            notes.append(f"ran with {DEMO_OVERRIDES}: {cmd}")
        elif cmd.startswith(TENSORBOARD):
            body.append(f"serve_tensorboard {cmd}")
            notes.append(f"ran in the background until it served the run: {cmd}")
        elif TESTS in cmd:
            head = cmd.split("&&")[0].strip() if "&&" in cmd else ""
            if head:
                body.append(head)
            notes.append(f"skipped the suite (CI runs it before this check){'; ran ' + head if head else ''}: {cmd}")
        else:
            body.append(cmd)
            if cmd.startswith(PREDICT):
                body.append(_check_predicted(cmd))
    return "\n".join(body) + "\n", notes


def _check_predicted(cmd: str) -> str:
    """A line that checks predict's JSON under its --out (default <workdir>/predictions) for each input."""
    words = shlex.split(cmd)[3:]
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
    inputs = " ".join(w for w in cmd.split()[3:] if not w.startswith("--"))  # globs expanded by bash
    out = flags.get("out", os.path.join(flags.get("workdir", ""), "predictions"))
    return f"check_predicted {shlex.quote(out)} {inputs}"


def _clean_env() -> dict[str, str]:
    """This process's environment without its venv, so the clone's own venv is what runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv))
    for k in list(env):
        if k.startswith(("JAX_", "XLA_")):
            del env[k]
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args()
    with open(os.path.join(args.repo, "README.md"), encoding="utf-8") as f:
        lines = commands(f.read())
    wanted = {"demo": DEMO, "predict": "python -m grace_jax.predict", "tensorboard": TENSORBOARD,
              "doctor": "python -m grace_jax.doctor --quick"}
    absent = [k for k, v in wanted.items() if not any(c.startswith(v) for _, c in lines)]
    if absent:
        print(f"check_readme: the README's sections {SECTIONS} no longer contain the {absent} command(s)", file=sys.stderr)
        return 1
    parent = tempfile.mkdtemp(prefix="check_readme-")
    clone = os.path.join(parent, "grace_jax")
    subprocess.run(["git", "clone", "-q", args.repo, clone], check=True)
    text, notes = script(lines)
    with open(os.path.join(parent, "readme_commands.sh"), "w") as f:
        f.write(text)
    print(f"check_readme: {len(lines)} commands in {clone}")
    for note in notes:
        print(f"check_readme: {note}")
    run = subprocess.run(["bash", os.path.join(parent, "readme_commands.sh")], cwd=clone, env=_clean_env())
    problems = [] if run.returncode == 0 else [f"a README command failed (exit {run.returncode}); see the last '+' line above"]
    print(f"check_readme: {'kept ' + clone if args.keep else 'removing ' + parent}")
    if not args.keep:
        subprocess.run(["rm", "-rf", parent])
    for p in problems:
        print(f"check_readme: FAILED: {p}", file=sys.stderr)
    if not problems:
        print("check_readme: every command worked as printed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
