r"""Checks the commands of README.md and docs/*.md: the CPU ones run as printed, the rest statically.

Usage (from the repository; CI runs it after the test suite, see .ci/run):

  python tools/check_readme.py                # clones HEAD (committed files only) into a temp folder
  python tools/check_readme.py --keep         # ... and leaves the clone there to look at
  python tools/check_readme.py --list         # prints every command found and whether it runs; nothing runs
  python tools/check_readme.py --static_only  # the static checks on this checkout, without cloning or running

Run as printed (RUN: the README's "Quick start", "Install", "Check a new machine"; docs/inference.md's
"Prediction"): every shell line of those sections' code blocks runs in order in one bash (`set -euo
pipefail`) at the clone's root, so what one line makes (the venv, runs/demo) is there for the next.
Adapted, and logged: the demo's training command gets DEMO_OVERRIDES (110 steps, so that the step-100
checkpoint is written and read back, where a relative --workdir once crashed); `tensorboard ...` runs
in the background until its HTTP API lists the demo's run; the test-suite lines are skipped (CI runs
the suite just before this). After each predict line, its predictions.json must predict every input.

The README's "From Python" block runs too (with the clone's python, after the demo); every other
```python block of the documents must parse.

Checked statically (every other shell line: TPU, SLURM, real datasets, downloads): each `python -m
MODULE` of this project and each `python path.py` exists, every `--flag` it passes is one the command
defines (its `--helpfull` (absl) or `--help` (argparse) output), every `--config=FILE[:ARG]` exists and
loads, and every `--config.a.b=...` names a field of that config; the README's links into docs/ name an
existing page and heading. About a minute; the whole check about 10 minutes on 2 cores, most of it the
install, the demo and grace_jax.doctor --quick. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

DEMO = "python -m grace_jax.main --config=configs/demo.py"
DEMO_OVERRIDES = "--config.optim.num_train_steps=110 --config.train.eval_every_steps=110"
TESTS = "python -m pytest"
TENSORBOARD = "tensorboard "
PREDICT = "python -m grace_jax.predict"
WANTED = {
    "demo": DEMO,
    "predict": PREDICT,
    "tensorboard": TENSORBOARD,
    "doctor": "python -m grace_jax.doctor --quick",
    "python": "from grace_jax.inference import Predictor",
}

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


# The sections that run as printed, by document; every other shell line is checked statically.
RUN = {
    "README.md": ("Quick start", "Install", "Check a new machine", "From Python"),
    "docs/inference.md": ("Prediction",),
}
SHELL_FENCES = ("sh", "bash", "shell")
# Top-level names of this checkout whose commands are checked; others (pip, pytest, venv) are not.
PROJECT = ("grace_jax", "data_prep", "launch", "benchmarks", "tools", "configs")
SEPARATORS = {"&&", "||", ";", "&", "|", "do", "done", "then", "fi", "wait"}


@dataclasses.dataclass(frozen=True)
class Command:
    path: str  # the document, relative to the repository
    section: str  # its "## " heading
    text: str  # the shell line, continuations joined; or a whole Python block
    run: bool  # run as printed (else checked statically)
    python: bool = False  # a ```python block: run with the clone's python (else compiled)

    @property
    def where(self) -> str:
        return f"{self.path}: {self.section}"


def commands(docs: dict[str, str]) -> list[Command]:
    """Every shell line of the documents' fenced blocks (untagged or sh/bash/shell), continuations
    joined, and every ```python block whole."""
    found = []
    for path, text in docs.items():
        section, fence, pending, block = "", None, "", []
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                if fence == "python":
                    run = any(section.startswith(s) for s in RUN.get(path, ()))
                    found.append(Command(path, section, "\n".join(block), run, python=True))
                    block = []
                fence = (stripped[3:].strip() or "sh") if fence is None else None
                continue
            if fence == "python":
                block.append(line)
                continue
            if fence is None:
                if line.startswith("## "):
                    section = line[3:].strip()
                continue
            if fence not in SHELL_FENCES:
                continue
            joined = pending + stripped
            if joined.endswith("\\"):
                pending = joined[:-1] + " "
                continue
            pending = ""
            if joined and not joined.startswith("#"):
                run = any(section.startswith(s) for s in RUN.get(path, ()))
                found.append(Command(path, section, joined, run))
    return found


def _check_predicted(cmd: str) -> str:
    """A line that checks predict's JSON under its --out (default <workdir>/predictions) for each input."""
    words = shlex.split(cmd)[3:]
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
    inputs = " ".join(w for w in cmd.split()[3:] if not w.startswith("--"))  # globs expanded by bash
    out = flags.get("out", os.path.join(flags.get("workdir", ""), "predictions"))
    return f"check_predicted {shlex.quote(out)} {inputs}"


# ---------------------------------------------------------------------------------------------------
# Static checks: modules, scripts, flags, config files and fields, README links into docs/.


@dataclasses.dataclass(frozen=True)
class Invocation:
    kind: str  # "module" (python -m X) or "script" (python path.py)
    target: str
    args: tuple[str, ...]


def invocations(text: str) -> list[Invocation]:
    """Each `python -m X ...` / `python x.py ...` of a shell line, with the words up to the next separator."""
    words = shlex.split(text, comments=True)
    found, i = [], 0
    while i < len(words):
        if not re.fullmatch(r"python(3(\.\d+)?)?", words[i]) or i + 1 >= len(words):
            i += 1
            continue
        if words[i + 1] == "-m" and i + 2 < len(words):
            kind, target, j = "module", words[i + 2], i + 3
        elif words[i + 1].endswith(".py"):
            kind, target, j = "script", words[i + 1], i + 2
        else:
            i += 1
            continue
        args = []
        while j < len(words) and words[j] not in SEPARATORS:
            if words[j].endswith(";"):
                args.append(words[j][:-1])
                break
            args.append(words[j])
            j += 1
        found.append(Invocation(kind, target, tuple(args)))
        for a in args:  # a command inside a flag's value: --launch="python -m launch.slurm ..."
            if "=" in a and a.split("=", 1)[1].startswith("python"):
                found += invocations(a.split("=", 1)[1])
        i = j
    return found


def _flag_words(args: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(name, value) of every --flag before a bare `--` (what follows belongs to another command)."""
    out = []
    for a in args:
        if a == "--":
            break
        a = a.strip("[]")  # optional flags written as [--split=test]
        if a.startswith("--") and len(a) > 2:
            name, _, value = a[2:].partition("=")
            out.append((name, value if "=" in a else None))
    return out


def _source(root: str, inv: Invocation) -> str | None:
    """The file a module or script invocation runs, or None when it is not in the checkout."""
    if inv.kind == "script":
        return os.path.join(root, inv.target)
    base = os.path.join(root, *inv.target.split("."))
    for candidate in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _defined_flags(root: str, inv: Invocation, python: str) -> set[str]:
    """The flags the command accepts, read from its --helpfull (absl) or --help (argparse) output."""
    with open(_source(root, inv), encoding="utf-8") as f:
        src = f.read()
    helpflag = "--help" if "argparse" in src else "--helpfull"
    argv = [python, "-m", inv.target] if inv.kind == "module" else [python, inv.target]
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    res = subprocess.run(argv + [helpflag], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    names = set(re.findall(r"(?<![\w-])--(?:\[no\])?([A-Za-z][\w.-]*)", res.stdout + res.stderr))
    if not names - {"help", "helpfull", "helpshort", "helpxml"}:
        raise RuntimeError(f"{' '.join(argv)} {helpflag} listed no flags: {(res.stdout + res.stderr)[-500:]}")
    return names


# Loads each config (path[:arg], as ml_collections' config_flags does) and reports the dotted fields
# it lacks; stdin: {spec: [fields]}, stdout: {spec: error string or [missing fields]}.
_CONFIG_PROBE = r"""
import importlib.util, json, sys
import ml_collections
def has(node, dotted):
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return True  # below a plain value (a dict, a tuple): not checkable here
        if part not in node:
            return False
        node = node[part]
    return True
out = {}
for spec, fields in json.load(sys.stdin).items():
    path, *arg = spec.split(":", 1)
    try:
        loader = importlib.util.spec_from_file_location("checked_config", path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        config = module.get_config(*arg)
    except Exception as e:
        out[spec] = f"{type(e).__name__}: {e}"
        continue
    out[spec] = [f for f in fields if not has(config, f)]
print(json.dumps(out))
"""


def _config_problems(root: str, fields: dict[str, set[str]], where: dict[str, str], python: str) -> list[str]:
    """Problems with each --config=FILE[:ARG] and the --config.a.b overrides given with it."""
    problems, specs = [], {}
    for spec, names in fields.items():
        if not os.path.isfile(os.path.join(root, spec.split(":", 1)[0])):
            problems.append(f"[{where[spec]}] --config={spec}: no such file in the checkout")
        else:
            specs[spec] = sorted(names)
    if not specs:
        return problems
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    res = subprocess.run(
        [python, "-c", _CONFIG_PROBE],
        input=json.dumps(specs),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode:
        return problems + [f"loading the configs failed: {res.stderr[-800:]}"]
    for spec, result in json.loads(res.stdout).items():
        if isinstance(result, str):
            problems.append(f"[{where[spec]}] --config={spec} does not load: {result}")
        else:
            for f in result:
                problems.append(f"[{where[spec]}] --config={spec} has no field {f} (--config.{f}=...)")
    return problems


def command_problems(root: str, lines: list[Command], python: str) -> list[str]:
    """Static problems of `lines`: missing modules or scripts, unknown flags, config files and fields."""
    problems, uses = [], []
    for line in lines:
        try:
            found = invocations(line.text)
        except ValueError as e:
            problems.append(f"[{line.where}] cannot split {line.text!r}: {e}")
            continue
        for inv in found:
            top = inv.target.split("/" if inv.kind == "script" else ".")[0]
            if inv.kind == "module" and top not in PROJECT:
                continue
            src = _source(root, inv)
            if src is None or not os.path.isfile(src):
                problems.append(f"[{line.where}] {inv.target}: no such {inv.kind} in the checkout")
                continue
            uses.append((line, inv))
    targets = sorted({(inv.kind, inv.target): inv for _, inv in uses}.items())
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        flag_sets = pool.map(lambda kv: _defined_flags(root, kv[1], python), targets)
        defined = dict(zip([k for k, _ in targets], flag_sets))
    config_fields: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for line, inv in uses:
        flags, words = defined[(inv.kind, inv.target)], _flag_words(inv.args)
        spec = next((v for n, v in words if n == "config" and v), None)
        if spec is not None:
            config_fields.setdefault(spec, set())
            where.setdefault(spec, line.where)
        for name, _ in words:
            if name in flags or (name.startswith("no") and name[2:] in flags):
                continue
            head, _, field = name.partition(".")
            if field and head in flags:
                if spec is not None:
                    config_fields[spec].add(field)
                continue
            problems.append(f"[{line.where}] {inv.target} defines no flag --{name}: {line.text}")
    return problems + _config_problems(root, config_fields, where, python)


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc (and GitHub, for these headings) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(text: str) -> set[str]:
    anchors, fence = set(), False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def link_problems(root: str, docs: dict[str, str]) -> list[str]:
    """README links into docs/ that name a missing page or heading."""
    problems = []
    for target, anchor in re.findall(r"\]\((docs/[^)#\s]*)(?:#([^)\s]*))?\)", docs["README.md"]):
        path = os.path.join(root, target)
        if not os.path.exists(path):
            problems.append(f"README.md links to {target}, which does not exist")
        elif anchor and (target not in docs or anchor not in _anchors(docs[target])):
            problems.append(f"README.md links to {target}#{anchor}, a heading {target} does not have")
    return problems


def script(lines: list[Command]) -> tuple[str, list[str]]:
    """The bash script that runs `lines` as printed (three kinds adapted) and notes on what was adapted."""
    body, notes = [PRELUDE], []
    for line in lines:
        cmd = line.text
        body.append(f"echo {shlex.quote(f'+ [{line.where}] {cmd}')}")
        if line.python:
            body.append(f"python - <<'PYTHON_BLOCK'\n{cmd}\nPYTHON_BLOCK")
        elif cmd.startswith(DEMO):
            body.append(f"{cmd} {DEMO_OVERRIDES}")
            notes.append(f"ran with {DEMO_OVERRIDES}: {cmd}")
        elif cmd.startswith(TENSORBOARD):
            body.append(f"serve_tensorboard {cmd}")
            notes.append(f"ran in the background until it served the run: {cmd}")
        elif TESTS in cmd:
            head = cmd.split("&&")[0].strip() if "&&" in cmd and not cmd.startswith(TESTS) else ""
            if head:
                body.append(head)
            ran = f"; ran {head}" if head else ""
            notes.append(f"skipped the suite (CI runs it before this check){ran}: {cmd}")
        else:
            body.append(cmd)
            if cmd.startswith(PREDICT):
                body.append(_check_predicted(cmd))
    return "\n".join(body) + "\n", notes


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


def _documents(root: str) -> dict[str, str]:
    """README.md and docs/*.md of `root`, by path relative to it."""
    pages = glob.glob(os.path.join(root, "docs", "*.md"))
    paths = ["README.md"] + sorted(os.path.relpath(p, root) for p in pages)
    docs = {}
    for rel in paths:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            docs[rel] = f.read()
    return docs


def _static_problems(root: str, docs: dict[str, str], static: list[Command]) -> list[str]:
    problems = link_problems(root, docs)
    problems += command_problems(root, [c for c in static if not c.python], python=sys.executable)
    for block in (c for c in static if c.python):  # not run: at least it parses
        try:
            compile(block.text, block.where, "exec")
        except SyntaxError as e:
            problems.append(f"{block.where}: a Python block does not parse: {e}")
    return problems


def _run_in_clone(repo: str, to_run: list[Command], keep: bool) -> tuple[list[str], str]:
    """Clones `repo`, runs `to_run` there; returns the problems and the clone's folder."""
    parent = tempfile.mkdtemp(prefix="check_readme-")
    clone = os.path.join(parent, "grace_jax")
    subprocess.run(["git", "clone", "-q", repo, clone], check=True)
    text, notes = script(to_run)
    with open(os.path.join(parent, "readme_commands.sh"), "w") as f:
        f.write(text)
    print(f"check_readme: running {len(to_run)} commands in {clone}")
    for note in notes:
        print(f"check_readme: {note}")
    run = subprocess.run(["bash", os.path.join(parent, "readme_commands.sh")], cwd=clone, env=_clean_env())
    problems = []
    if run.returncode:
        problems.append(f"a command failed (exit {run.returncode}); see the last '+' line above")
    return problems, parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    parser.add_argument("--list", action="store_true", help="list the commands found and what each gets")
    parser.add_argument("--static_only", action="store_true", help="only the static checks, on --repo")
    args = parser.parse_args()
    docs = _documents(args.repo)
    found = commands(docs)
    to_run = [c for c in found if c.run]
    static = [c for c in found if not c.run]
    if args.list:
        for c in found:
            print(f"{'run   ' if c.run else 'static'} [{c.where}] {c.text}")
        print(f"check_readme: {len(to_run)} commands run, {len(static)} checked statically")
        return 0
    absent = [k for k, v in WANTED.items() if not any(c.text.startswith(v) or c.python and v in c.text for c in to_run)]
    if absent:
        print(f"check_readme: the sections {RUN} no longer contain the {absent} command(s)", file=sys.stderr)
        return 1
    problems = _static_problems(args.repo, docs, static)
    print(f"check_readme: {len(static)} commands checked statically, {len(problems)} problem(s)")
    if not args.static_only:
        ran, parent = _run_in_clone(args.repo, to_run, args.keep)
        problems += ran
        print(f"check_readme: {'kept ' + parent if args.keep else 'removing ' + parent}")
        if not args.keep:
            subprocess.run(["rm", "-rf", parent])
    for p in problems:
        print(f"check_readme: FAILED: {p}", file=sys.stderr)
    if not problems:
        scope = " (static checks only)" if args.static_only else ""
        print(f"check_readme: every command worked as printed{scope}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
