"""Where the CPU train step's time goes: XLA's per-op profile, grouped by kind of work.

  python benchmarks/step_profile.py --variant=ViT-B/32 --config=grace        # about 2 min, idle 2 cores
  python benchmarks/step_profile.py --variant=ViT-B/16 --config=dferclip
  python benchmarks/step_profile.py --variant=tiny --frames=4 --steps=2      # seconds, a smoke run

The step is benchmarks/train_step.py's (the trainer's `steps.train_step`, random weights, batch 2 x 16
frames). After a warm-up step, `--steps` steps run under `jax.profiler.trace`; XLA:CPU records one
event per executed HLO instruction (a thunk) on its worker threads. Each instruction of the compiled
module is put in one group by what it computes:

  matmul       dots and convolutions, alone or fused with their neighbours
  reduction    fusions with a reduce: layer norm statistics, softmax sums, norms, the loss, the
               Sinkhorn iterations' log-sum-exps
  elementwise  other fusions and single elementwise ops: GELU, residual adds, scaling, the optimizer
  layout       copies and transposes (fusions of nothing else)
  other        sort (top-k), gather/scatter, slices, control flow, everything left

and by phase, from the op's name stack: forward (`jvp(...)`), backward (`transpose(...)`), update
(neither: the optimizer, metrics), or unnamed (ops XLA made itself, e.g. some reduce-windows). Wall
time is shared among the instructions running at each moment.

XLA:CPU runs dots asynchronously in Eigen's thread pool: a matmul instruction's event covers only its
synchronous part, and the dot's work itself runs under no instruction's name. So the table's line "no
named instruction running" holds the matmuls (and any waiting), and the script sets the step's time
minus its named non-matmul instructions beside the matmul floor: the FLOPs of every dot and
convolution of the entry computation (from their shapes) at the fp32 matmul peak measured in the same
run ([2048,768] x [768,3072]). What is left between the two is what the matmuls lose; the named
non-matmul share is what keeps the step from that peak.
"""

from __future__ import annotations

import collections
import glob
import math
import os
import re
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference  # noqa: E402
import train_step  # noqa: E402 -- its step, and its --batch, --frames and --steps

_BATCH, _FRAMES, _STEPS = train_step.BATCH, train_step.FRAMES, train_step.STEPS
_VARIANT = flags.DEFINE_string("variant", "ViT-B/32", "CLIP variant (ViT-B/32, ViT-B/16, tiny).")
_CONFIG = flags.DEFINE_string("config", "grace", "configs/ablation.py variant, or dferclip.")
_DUMP = flags.DEFINE_string("dump_hlo", "", "Also write the compiled step's HLO text to this file.")
_TOP = flags.DEFINE_integer("top", 12, "Single instructions listed, by wall time.")

GROUPS = ("matmul", "reduction", "elementwise", "layout", "other")
PHASES = ("forward", "backward", "update", "unnamed")
_CONTAINERS = {"while", "conditional", "call", "tuple", "get-tuple-element", "parameter", "constant", "bitcast"}
_ELEMENTWISE = {
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "exponential", "log", "tanh", "rsqrt",
    "sqrt", "negate", "abs", "select", "compare", "convert", "power", "sign", "and", "or", "not", "xor",
    "is-finite", "erf", "logistic", "broadcast", "iota", "clamp", "exponential-minus-one", "log-plus-one",
}  # fmt: skip
_LINE = re.compile(r"^\s*(ROOT\s+)?%(\S+)\s*=\s*(.+?)\s+([a-z][a-z0-9-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%(\S+)\s.*\{\s*$")


# ------------------------------------------------------------------------------------ the HLO
def _dims(shape: str) -> list[int]:
    m = re.match(r"\(?[a-z0-9]+\[([0-9,]*)\]", shape.strip())
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def parse_hlo(text: str) -> dict:
    """{instruction name: {"opcode", "shape", "operands", "calls", "op_name", "attrs", "body", "entry"}}
    of every instruction of a compiled module's text (`compiled.as_text()`); "body" is the list of
    instructions of the computation a fusion calls, "entry" whether it is in the entry computation."""
    computations, current, insts, entry = {}, None, {}, None
    for line in text.splitlines():
        head = _COMPUTATION.match(line)
        if head and not line[:1].isspace():  # a computation's header starts at column 0
            current = computations.setdefault(head.group(2), [])
            entry = head.group(2) if head.group(1) else entry
            continue
        m = _LINE.match(line)
        if not m or current is None:
            continue
        _, name, shape, opcode, rest = m.groups()
        args = rest.split(")", 1)[0]
        operands = re.findall(r"%([\w.\-]+)", args)
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        inst = dict(opcode=opcode, shape=shape, operands=operands, attrs=rest, entry=False,
                    calls=calls.group(1) if calls else None, op_name=op_name.group(1) if op_name else "")  # fmt: skip
        insts[name] = inst
        current.append(name)
    for name in computations.get(entry, []):
        insts[name]["entry"] = True  # runs once per step (not inside a loop or a branch)
    for inst in insts.values():
        inst["body"] = computations.get(inst["calls"], []) if inst["calls"] else []
        if not inst["op_name"]:  # a wrapped single op: the name stack is its member's
            inst["op_name"] = next((insts[m]["op_name"] for m in inst["body"] if insts[m]["op_name"]), "")
    return insts


def _flops(name: str, insts: dict) -> float:
    """2 x multiply-adds of a dot or convolution instruction, from its shapes."""
    inst = insts[name]
    out = math.prod(_dims(inst["shape"]))
    lhs = insts.get(inst["operands"][0]) if inst["operands"] else None
    rhs = insts.get(inst["operands"][1]) if len(inst["operands"]) > 1 else None
    if lhs is None or rhs is None:
        return float("nan")
    if inst["opcode"] == "dot":
        contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", inst["attrs"])
        lhs_dims = _dims(lhs["shape"])
        k = math.prod(lhs_dims[int(i)] for i in contracting.group(1).split(",") if i) if contracting else 1
        return 2.0 * out * k
    labels = re.search(r"dim_labels=\w+_(\w+)->", inst["attrs"])  # convolution: the kernel's labels
    kernel = _dims(rhs["shape"])
    if not labels or len(labels.group(1)) != len(kernel):
        return float("nan")
    return 2.0 * out * math.prod(kernel) / kernel[labels.group(1).index("o")]


def classify(name: str, insts: dict) -> tuple[str, float]:
    """(group, FLOPs of its dots and convolutions) of one instruction."""
    inst = insts[name]
    members = inst["body"] or [name]
    ops = {insts[m]["opcode"] for m in members if m in insts}
    matmuls = [m for m in members if insts[m]["opcode"] in ("dot", "convolution")]
    if matmuls:
        return "matmul", sum(_flops(m, insts) for m in matmuls)
    if ops & {"reduce", "reduce-window"}:
        return "reduction", 0.0
    real = ops - _CONTAINERS
    if (
        real
        and real <= {"copy", "transpose", "broadcast", "reshape", "slice", "concatenate", "pad"}
        and (real & {"copy", "transpose"})
    ):
        return "layout", 0.0
    if inst["opcode"] == "fusion" and real <= _ELEMENTWISE | {"reshape", "slice", "concatenate", "pad"}:
        return "elementwise", 0.0
    if inst["opcode"] in _ELEMENTWISE:
        return "elementwise", 0.0
    return "other", 0.0


def phase(op_name: str) -> str:
    if not op_name:  # XLA's own rewrites (some reduce-windows) carry no name stack
        return "unnamed"
    if "transpose(" in op_name:
        return "backward"
    return "forward" if "jvp(" in op_name else "update"


# ------------------------------------------------------------------------------------ the trace
def thunk_events(trace_dir: str, insts: dict) -> list[tuple[int, int, str]]:
    """(start ns, end ns, instruction) of every executed instruction in the trace, on XLA's threads."""
    from jax.profiler import ProfileData

    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    events = []
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for ev in line.events:
                inst = insts.get(ev.name)
                if inst is not None and inst["opcode"] not in _CONTAINERS:
                    start = int(ev.start_ns)
                    events.append((start, start + int(ev.duration_ns), ev.name))
    return events


def split_wall_time(events: list[tuple[int, int, str]]) -> dict:
    """{instruction: ns of wall time}: at each moment the wall time is shared equally by the
    instructions running then."""
    points = sorted({t for s, e, _ in events for t in (s, e)})
    starts = collections.defaultdict(list)
    ends = collections.defaultdict(list)
    for i, (s, e, _) in enumerate(events):
        starts[s].append(i)
        ends[e].append(i)
    running, share = set(), collections.Counter()
    for a, b in zip(points, points[1:]):
        running.difference_update(ends[a])
        running.update(starts[a])
        if running:
            for i in running:
                share[events[i][2]] += (b - a) / len(running)
    return dict(share)


# ------------------------------------------------------------------------------------ main
def main(argv):
    del argv
    import jax
    import numpy as np

    from grace_jax.text.tokenizer import Tokenizer

    command = "python benchmarks/" + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    load = os.getloadavg()
    print(f"{command}\njax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs), "
          f"load average at start {load[0]:.1f}", flush=True)  # fmt: skip
    fn, state, _ = train_step.build_step(
        _CONFIG.value, _VARIANT.value, _FRAMES.value, Tokenizer.from_pretrained("builtin:tiny")
    )
    size = 32 if _VARIANT.value == "tiny" else 224
    rng = np.random.default_rng(0)
    batch = jax.device_put({
        "video": rng.integers(0, 256, (_BATCH.value, _FRAMES.value, size, size, 3), np.uint8),
        "label": rng.integers(0, 7, _BATCH.value).astype(np.int32),
        "mask": np.ones(_BATCH.value, bool),
    })  # fmt: skip
    compiled = fn.lower(state, batch).compile()
    hlo = compiled.as_text()
    insts = parse_hlo(hlo)
    if _DUMP.value:
        with open(_DUMP.value, "w") as f:
            f.write(hlo)
    total_flops = train_step.step_flops(compiled)
    state, out = compiled(state, batch)  # warm-up
    jax.block_until_ready(out)
    peak = torch_reference.xla_matmul_gflops(*train_step.MATMUL)

    trace_dir = tempfile.mkdtemp(prefix="step_profile_")
    walls = []
    with jax.profiler.trace(trace_dir):
        for _ in range(_STEPS.value):
            t0 = time.perf_counter()
            state, out = compiled(state, batch)
            jax.block_until_ready(out)
            walls.append(time.perf_counter() - t0)
    events = thunk_events(trace_dir, insts)
    share = split_wall_time(events)
    wall = sum(walls) * 1e9

    by_group = collections.Counter()
    by_phase = collections.Counter()
    for name, ns in share.items():
        group, _ = classify(name, insts)
        by_group[group] += ns
        by_phase[(group, phase(insts[name]["op_name"]))] += ns
    # The dots of the entry computation, once per step; the few small ones inside the OT loops are left out.
    matmul_flops = sum(classify(n, insts)[1] for n, i in insts.items() if i["entry"] and i["opcode"] not in _CONTAINERS)
    in_loops = sum(ns for name, ns in share.items() if "/while" in insts[name]["op_name"])
    runs = collections.Counter(name for _, _, name in events)
    per_step = 1e6 * _STEPS.value  # ns over the profiled steps -> ms per step

    step_s = min(walls)
    floor_s = matmul_flops / 1e9 / peak
    named = sum(by_group[g] for g in GROUPS if g != "matmul")
    rest = max(wall - named, 0.0)
    print(f"\n{command}\n{_VARIANT.value} {_CONFIG.value}, batch {_BATCH.value} x {_FRAMES.value} frames, "
          f"{_STEPS.value} profiled steps: median {statistics.median(walls) * 1e3:.0f} ms, min {step_s * 1e3:.0f} ms; "
          f"{total_flops / 1e9:.0f} GFLOP per step (XLA's cost analysis), {step_s and total_flops / 1e9 / step_s:.0f} "
          f"GFLOP/s at the minimum = {100 * total_flops / 1e9 / step_s / peak:.0f}% of the fp32 matmul peak "
          f"{train_step.MATMUL} measured in this run, {peak:.0f} GFLOP/s\n")  # fmt: skip
    print("| where the wall time goes | ms per step | share | forward | backward | update | unnamed |")
    print("|---|---|---|---|---|---|---|")
    for group in GROUPS:
        cells = [f"{100 * by_phase[(group, p)] / wall:.1f}%" for p in PHASES]
        label = "matmul (their synchronous part)" if group == "matmul" else group
        print(f"| {label} | {by_group[group] / per_step:.0f} | **{100 * by_group[group] / wall:.1f}%** | "
              f"{' | '.join(cells)} |")  # fmt: skip
    print(
        f"| no named instruction running: Eigen's asynchronous matmuls, waits | "
        f"{(wall - sum(share.values())) / per_step:.0f} | {100 * (wall - sum(share.values())) / wall:.1f}% |  |  |  |  |"
    )
    print(
        f"| (inside while loops: the OT solves) | {in_loops / per_step:.0f} | {100 * in_loops / wall:.1f}% |  |  |  |  |"
    )
    print(f"\nnon-matmul instructions {named / per_step:.0f} ms per step ({100 * named / wall:.0f}%); the rest "
          f"{rest / per_step:.0f} ms against a matmul floor of {floor_s * 1e3:.0f} ms ({matmul_flops / 1e9:.0f} GFLOP of "
          f"dots and convolutions, from their shapes, at the measured peak)")  # fmt: skip
    print(f"\nthe {_TOP.value} single instructions with the most wall time:\n")
    print("| instruction | group | phase | ms per step | runs per step |")
    print("|---|---|---|---|---|")
    for name, ns in sorted(share.items(), key=lambda kv: -kv[1])[: _TOP.value]:
        group, _ = classify(name, insts)
        print(f"| {name} | {group} | {phase(insts[name]['op_name'])} | {ns / per_step:.1f} | "
              f"{runs[name] / _STEPS.value:g} |")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
