r"""Evaluates a run on any split of any dataset built by data_prep: UAR, WAR, per-class recall.

  python -m grace_jax.evaluate --workdir=runs/dfew3 --data_dir=/data/shards/dfew_fold3
  python -m grace_jax.evaluate --workdir=runs/dferclip_dfew1 --data_dir=/data/shards/dfew_fold1 \
      --split=test --checkpoint=last

The evaluation protocol is the run's own (its config.json: frames per clip, input size, eval resize or
crop, input normalisation; DFER-CLIP's for converted runs), with the evaluation step and loader the
trainer uses. Prints a table of per-class recall with UAR and WAR (and, on SynthFER's test split,
which carries ground truth, how much of each map lies on the expression: grace_jax/localization.py),
and writes
`<out>/<split>-<checkpoint>.json` (the numbers, the confusion matrix, what was evaluated) and the
confusion-matrix picture `<out>/<split>-<checkpoint>.png`; `--out` defaults to `<workdir>/evaluation`.
`--checkpoint=best` (the default) falls back to `last` where a run has no best checkpoint, as converted
runs do, and the files are named by the checkpoint used. `python -m grace_jax.folds --split=test`
summarizes these files over the folds of a k-fold protocol.
"""

from __future__ import annotations

import datetime
import functools
import json
import shlex
import sys
import time

import jax
import numpy as np

from grace_jax import (
    cli,
    config_checks,
    distributed,
    input_pipeline,
    localization,
    metrics,
    paths,
    plots,
    runs,
    sharding,
    train,
)

__all__ = ["evaluate_run", "format_table", "result_path"]


def result_path(out_dir: str, split: str, checkpoint: str, ext: str = "json") -> str:
    """Where `evaluate_run` writes: `<out_dir>/<split>-<checkpoint>.<ext>`."""
    return paths.join(out_dir, f"{split}-{checkpoint}.{ext}")


def format_table(result: dict) -> str:
    """Per-class recall (and clip counts) with UAR and WAR, as printed."""
    confusion = np.asarray(result["confusion"])
    names = list(result["per_class_recall"])
    width = max(8, *(len(n) for n in names))
    lines = [f"  {'class':<{width}}  recall  clips"]
    for name, support in zip(names, confusion.sum(axis=1)):
        recall = result["per_class_recall"][name]
        shown = "     -" if recall is None else f"{recall:6.4f}"
        lines.append(f"  {name:<{width}}  {shown}  {int(support):5d}")
    lines.append(
        f"  UAR {result['uar']:.4f}  WAR {result['war']:.4f}  ({result['num_examples']} clips)"
    )
    return "\n".join(lines)


def evaluate_run(
    workdir: str,
    data_dir: str,
    *,
    split: str = "test",
    which: str = "best",
    out_dir: str | None = None,
    batch_size: int = 0,
    num_workers: int | None = None,
    command: str | None = None,
) -> dict:
    """Evaluates the run's `which` checkpoint on `split` of `data_dir`; writes and returns the result.

    Args:
      batch_size: global batch size; 0 takes the run's data.eval_batch_size or optim.batch_size.
      num_workers: grain worker processes; None takes the run's data.num_workers.
    """
    workdir, data_dir = paths.resolve(workdir), paths.resolve(data_dir)
    out_dir = paths.resolve(out_dir) if out_dir else paths.join(workdir, "evaluation")
    config = runs.read_config(workdir)
    # As training does, before anything starts jax's backend: multi-process runs evaluate together.
    distributed.initialize(config.get("distributed"))
    manifest = input_pipeline.read_manifest(data_dir)
    if split not in manifest.get("splits", {}):
        raise cli.ConfigError(
            f"--split={split}: {data_dir} has no split {split!r}; it holds {sorted(manifest.get('splits', {}))}."
        )
    config_checks.check_classes(config, manifest, data_dir)
    mesh = sharding.make_mesh(dict(zip(config.mesh.axes, config.mesh.shape)))
    run = runs.load_run(workdir, which, mesh=mesh)
    config = run.config
    num_classes = config.model.num_classes
    state_sh = jax.tree.map(lambda x: x.sharding, run.state)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    eval_fn = jax.jit(
        functools.partial(
            train.eval_step,
            graphdef=run.graphdef,
            loss_cfg=dict(config.model.loss),
            num_classes=num_classes,
            normalize=config.data.get("normalize", "clip"),
        ),
        in_shardings=(state_sh, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated, replicated),
    )
    caption_tok = train.load_tokenizer(config.model) if config.model.cate.captions else None
    global_batch = batch_size or config.data.get("eval_batch_size") or config.optim.batch_size
    loader = input_pipeline.make_eval_loader(
        data_dir,
        split,
        global_batch_size=global_batch,
        # This process's rows of every global batch, as the trainer's eval loader takes them.
        **train._process_rows(sharding.batch_sharding(mesh), global_batch),  # noqa: SLF001
        num_frames=config.data.num_frames,
        image_size=config.data.image_size,
        worker_count=config.data.num_workers if num_workers is None else num_workers,
        tokenizer=caption_tok,
        normalize_on_host=False,
        augment=config.data.get("augment", "grace"),
        # SynthFER's test split: also how much of each map lies where the expression is.
        ground_truth=localization.has_ground_truth(manifest, split),
    )
    start = time.perf_counter()
    confusion, loss, extras = train.evaluate(
        eval_fn, run.state, loader, mesh, num_classes, run.class_names
    )
    seconds = time.perf_counter() - start

    result = metrics.summarize(confusion=confusion, class_names=run.class_names)
    result.update(
        **extras,
        loss=loss,
        confusion=confusion.tolist(),
        class_names=run.class_names,
        workdir=workdir,
        data_dir=data_dir,
        dataset=manifest.get("dataset"),
        split=split,
        checkpoint=run.checkpoint,
        step=run.step,
        protocol={
            "num_frames": config.data.num_frames,
            "image_size": config.data.image_size,
            "augment": config.data.get("augment", "grace"),
            "normalize": config.data.get("normalize", "clip"),
        },
        seconds=round(seconds, 2),
        command=command or shlex.join(["python", "-m", "grace_jax.evaluate", *sys.argv[1:]]),
        evaluated_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if jax.process_index() == 0:
        paths.makedirs(out_dir)
        plots.save_confusion_matrix(
            result_path(out_dir, split, run.checkpoint, "png"),
            confusion,
            run.class_names,
            f"{split} ({run.checkpoint}, step {run.step}): UAR {result['uar']:.3f} "
            f"WAR {result['war']:.3f}",
        )
        paths.write_text(
            result_path(out_dir, split, run.checkpoint), json.dumps(result, indent=2) + "\n"
        )
    return result


def main(argv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    out = _OUT.value or paths.join(_WORKDIR.value, "evaluation")
    result = evaluate_run(
        _WORKDIR.value,
        _DATA_DIR.value,
        split=_SPLIT.value,
        which=_CHECKPOINT.value,
        out_dir=out,
        batch_size=_BATCH_SIZE.value,
        num_workers=_NUM_WORKERS.value,
    )
    print(
        f"{result['workdir']} on {result['data_dir']} ({result['split']}), checkpoint "
        f"{result['checkpoint']} (step {result['step']}):"
    )
    print(format_table(result))
    if result.get("localization"):
        print(localization.format_table(result["localization"]))
    print(f"Wrote {result_path(out, result['split'], result['checkpoint'])} and .png")


if __name__ == "__main__":
    # Flags live here, not at import, so that other commands (and tests) can import this module.
    from absl import flags

    from grace_jax import cli

    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints).")
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards written by data_prep.build_dataset.")
    _SPLIT = flags.DEFINE_string("split", "test", "Split of the shards to evaluate on.")
    _CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
    _OUT = flags.DEFINE_string("out", None, "Output folder; default <workdir>/evaluation.")
    _BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch; 0: the run's eval batch.")
    _NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Loader processes; default the run's.")
    flags.mark_flags_as_required(["workdir", "data_dir"])
    cli.run(main)
