r"""Evaluates a run or an exported model on any split of any dataset: UAR, WAR, per-class recall.

  python -m grace_jax.evaluate --workdir=runs/dfew3 --data_dir=/data/shards/dfew_fold3
  python -m grace_jax.evaluate --workdir=runs/dferclip_dfew1 --data_dir=/data/shards/dfew_fold1 \
      --split=test --checkpoint=last
  python -m grace_jax.evaluate --workdir=runs/dfew3 --tfds=dfew/fold_3 --tfds_dir=/data/tensorflow_datasets
  python -m grace_jax.evaluate --model=your-name/grace-dfew3 --data_dir=/data/shards/dfew_fold3

The model: `--workdir`, a training run or a DFER-CLIP checkpoint converted by grace_jax.convert; or
`--model`, a folder written by grace_jax.export or its hub name (as grace_jax.predict takes it). The
data: `--data_dir`, shards built by data_prep; or `--tfds=NAME/CONFIG` (with `--tfds_dir`, tfds's data
folder), a dataset prepared by data_prep.tfds_builders, read as the trainer reads `data.tfds`. Give
exactly one of each pair.

The evaluation protocol is the run's own (its config.json, or the exported one: frames per clip, input
size, eval resize or crop, input normalisation; DFER-CLIP's for converted runs), with the evaluation step
and loader the trainer uses. Prints a table of per-class recall with UAR and WAR (and, on SynthFER's
test split, which carries ground truth, how much of each map lies on the expression:
grace_jax/localization.py), and writes
`<out>/<split>-<checkpoint>.json` (the numbers, the confusion matrix, what was evaluated) and the
confusion-matrix picture `<out>/<split>-<checkpoint>.png`; `--out` defaults to `<workdir>/evaluation`,
or `./evaluation` with `--model`. `--checkpoint=best` (the default) falls back to `last` where a run has
no best checkpoint, as converted runs do, and the files are named by the checkpoint used; an exported
model holds the one checkpoint it was exported from (`--checkpoint=last` on a `best` export is an
error). `python -m grace_jax.folds --split=test` summarizes these files over the folds of a k-fold
protocol.
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

from grace_jax import config_checks, localization, metrics, sharding, steps
from grace_jax import state as state_lib
from grace_jax.data import input_pipeline, tfds_source
from grace_jax.infra import cli, distributed, errors, paths
from grace_jax.interop import hf_export
from grace_jax.run import plots, runs

__all__ = ["evaluate_run", "format_table", "parse_sources", "result_path"]


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
    lines.append(f"  UAR {result['uar']:.4f}  WAR {result['war']:.4f}  ({result['num_examples']} clips)")
    return "\n".join(lines)


def parse_sources(
    *,
    workdir: str | None,
    model: str | None,
    data_dir: str | None,
    tfds: str | None,
    tfds_dir: str | None,
) -> str | tfds_source.TfdsDataset:
    """The flags' data: a shard folder or a TfdsDataset; raises errors.UsageError for a bad combination."""
    if bool(workdir) == bool(model):
        raise errors.UsageError(
            "Give exactly one of --workdir (a training or converted run) and --model (a folder written "
            "by grace_jax.export, or its hub name)."
        )
    if bool(data_dir) == bool(tfds):
        raise errors.UsageError(
            "Give exactly one of --data_dir (shards built by data_prep) and --tfds=NAME/CONFIG (a dataset "
            "prepared by data_prep.tfds_builders, with --tfds_dir)."
        )
    if tfds_dir and not tfds:
        raise errors.UsageError("--tfds_dir is tfds's data folder for --tfds; give --tfds=NAME/CONFIG too.")
    if data_dir:
        return data_dir
    if tfds.count("/") > 1 or not tfds.strip("/") or tfds.startswith("/") or tfds.endswith("/"):
        raise errors.UsageError(f"--tfds={tfds}: give a dataset name with its config, e.g. dfew/fold_3.")
    return tfds_source.TfdsDataset(tfds, paths.resolve(tfds_dir) if tfds_dir else "")


def _read_manifest(data: str | tfds_source.TfdsDataset) -> dict:
    if isinstance(data, tfds_source.TfdsDataset):
        return tfds_source.manifest(data, field="--tfds")
    return input_pipeline.read_manifest(data)


def evaluate_run(
    workdir: str | None,
    data_dir: str | tfds_source.TfdsDataset,
    *,
    split: str = "test",
    which: str = "best",
    out_dir: str | None = None,
    batch_size: int = 0,
    num_workers: int | None = None,
    command: str | None = None,
    model: str | None = None,
) -> dict:
    """Evaluates the run `workdir`'s `which` checkpoint, or the exported `model` (a folder written by
    grace_jax.export or its hub name; give workdir None), on `split` of `data_dir` (a shard folder, or a
    `tfds_source.TfdsDataset`); writes and returns the result.

    Args:
      which: "best" (falling back to "last" where there is no best checkpoint) or "last". An exported
        model holds one checkpoint: "last" on a "best" export is an error.
      out_dir: default `<workdir>/evaluation`, or `./evaluation` for `model`.
      batch_size: global batch size; 0 takes the run's data.eval_batch_size or optim.batch_size.
      num_workers: grain worker processes; None takes the run's data.num_workers.
    """
    if bool(workdir) == bool(model):
        raise ValueError("give exactly one of workdir and model")
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    tfds = isinstance(data_dir, tfds_source.TfdsDataset)
    data = data_dir if tfds else paths.resolve(data_dir)
    workdir, model_dir, out_dir, config = _source(workdir, model, which, out_dir)
    # As training does, before anything starts jax's backend: multi-process runs evaluate together.
    distributed.initialize(config.get("distributed"))
    # The batch against this job's devices before the data is read or the model loaded (as the trainer).
    field = (
        "--batch_size"
        if batch_size
        else ("data.eval_batch_size" if config.data.eval_batch_size else "optim.batch_size")
    )
    config_checks.check_batch(batch_size or config.data.eval_batch_size or config.optim.batch_size, field, config)
    manifest = _read_manifest(data)
    if split not in manifest.get("splits", {}):
        raise errors.ConfigError(
            f"--split={split}: {data} has no split {split!r}; it holds {sorted(manifest.get('splits', {}))}."
        )
    config_checks.check_classes(config, manifest, data)
    mesh = sharding.make_mesh(dict(zip(config.mesh.axes, config.mesh.shape)))
    run = runs.load(workdir or model_dir, which, mesh=mesh, kind="run" if workdir else "export")
    config = run.config
    # Captions enter only the loss (the caption contrastive term), never the predictions. An exported
    # model carries no tokenizer, so unless its config names one, it is evaluated without them.
    captions = bool(config.model.cate.captions) and bool(config_checks.tokenizer_source(config.model.clip))
    start = time.perf_counter()
    confusion, loss, extras = _run_eval(run, data, manifest, split, mesh, batch_size, num_workers, captions)
    seconds = time.perf_counter() - start

    names, checkpoint, step = run.class_names, run.checkpoint, run.step
    result = metrics.summarize(confusion=confusion, class_names=names)
    result.update(
        **extras,
        loss=loss,
        confusion=confusion.tolist(),
        class_names=names,
        workdir=workdir,
        model=model,
        model_dir=model_dir,
        data_dir=None if tfds else data,
        tfds=data.name if tfds else None,
        tfds_dir=(data.data_dir or None) if tfds else None,
        dataset=manifest.get("dataset"),
        split=split,
        checkpoint=checkpoint,
        step=step,
        protocol={
            "num_frames": config.data.num_frames,
            "image_size": config.data.image_size,
            "augment": config.data.augment,
            "normalize": config.data.normalize,
        },
        seconds=round(seconds, 2),
        command=command or shlex.join(["python", "-m", "grace_jax.evaluate", *sys.argv[1:]]),
        evaluated_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    if config.model.cate.captions:
        result["loss_with_captions"] = captions
    if jax.process_index() == 0:
        _write(result, out_dir, split, checkpoint, confusion, names)
    return result


def _source(workdir: str | None, model: str | None, which: str, out_dir: str | None):
    """(workdir, model_dir, out_dir, stored config) of a run or an exported model, every check on the
    folder or hub name done before jax starts: a bad one is one line, at once."""
    if workdir:
        workdir = paths.resolve(workdir)
        return workdir, None, paths.resolve(out_dir or paths.join(workdir, "evaluation")), runs.read_config(workdir)
    model_dir = hf_export.resolve_model(model)
    hf_export.check_folder(model_dir)
    exported = hf_export.weights_metadata(model_dir).get("checkpoint")
    if which == "last" and exported == "best":
        raise errors.ConfigError(
            f"--checkpoint=last: {model} holds the run's best checkpoint only; export its last one "
            "(python -m grace_jax.export --checkpoint=last) to evaluate that."
        )
    return None, model_dir, paths.resolve(out_dir or "evaluation"), runs.read_config(model_dir)


def _run_eval(run: runs.Run, data, manifest: dict, split: str, mesh, batch_size: int, num_workers, captions: bool):
    """The eval step jitted on the mesh and run over `split`: (confusion [C,C], mean loss, extras)."""
    config = run.config
    num_classes = config.model.num_classes
    state_sh = jax.tree.map(lambda x: x.sharding, run.state)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    eval_fn = jax.jit(
        functools.partial(
            steps.eval_step,
            graphdef=run.graphdef,
            loss_cfg=dict(config.model.loss),
            num_classes=num_classes,
            normalize=config.data.normalize,
        ),
        in_shardings=(state_sh, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated, replicated),
    )
    caption_tok = state_lib.load_tokenizer(config.model) if captions else None
    global_batch = batch_size or config.data.eval_batch_size or config.optim.batch_size
    loader = input_pipeline.make_eval_loader(
        data,
        config.data,
        split=split,
        global_batch_size=global_batch,
        # This process's rows of every global batch, as the trainer's eval loader takes them.
        **steps.process_rows(sharding.batch_sharding(mesh), global_batch),
        worker_count=num_workers,
        tokenizer=caption_tok,
        normalize_on_host=False,
        # SynthFER's test split: also how much of each map lies where the expression is.
        ground_truth=localization.has_ground_truth(manifest, split),
    )
    return steps.evaluate(eval_fn, run.state, loader, mesh, num_classes, run.class_names)


def _write(result: dict, out_dir: str, split: str, checkpoint: str, confusion, names: list[str]) -> None:
    """The result's JSON and its confusion matrix picture, in out_dir."""
    paths.makedirs(out_dir)
    plots.save_confusion_matrix(
        result_path(out_dir, split, checkpoint, "png"),
        confusion,
        names,
        f"{split} ({checkpoint}, step {result['step']}): UAR {result['uar']:.3f} WAR {result['war']:.3f}",
    )
    paths.write_text(result_path(out_dir, split, checkpoint), json.dumps(result, indent=2) + "\n")


def main(argv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    data = parse_sources(
        workdir=_WORKDIR.value, model=_MODEL.value, data_dir=_DATA_DIR.value, tfds=_TFDS.value,
        tfds_dir=_TFDS_DIR.value,
    )  # fmt: skip
    out = _OUT.value or (paths.join(_WORKDIR.value, "evaluation") if _WORKDIR.value else "evaluation")
    result = evaluate_run(
        _WORKDIR.value,
        data,
        split=_SPLIT.value,
        which=_CHECKPOINT.value,
        out_dir=out,
        batch_size=_BATCH_SIZE.value,
        num_workers=_NUM_WORKERS.value,
        model=_MODEL.value,
    )
    data_text = result["data_dir"] or f"tfds {result['tfds']}"
    print(
        f"{result['workdir'] or result['model']} on {data_text} ({result['split']}), checkpoint "
        f"{result['checkpoint']} (step {result['step']}):"
    )
    print(format_table(result))
    if result.get("localization"):
        print(localization.format_table(result["localization"]))
    print(f"Wrote {result_path(paths.resolve(out), result['split'], result['checkpoint'])} and .png")


if __name__ == "__main__":
    # Flags live here, not at import, so that other commands (and tests) can import this module.
    from absl import flags

    from grace_jax.infra import cli, errors

    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints).")
    _MODEL = flags.DEFINE_string(
        "model", None, "Instead of --workdir: a folder written by grace_jax.export, or its hub name "
        "(owner/name; fetched once into the Hugging Face cache, HF_HUB_OFFLINE=1 reads only the cache).",
    )  # fmt: skip
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards written by data_prep.build_dataset.")
    _TFDS = flags.DEFINE_string(
        "tfds", None, "Instead of --data_dir: NAME/CONFIG of a dataset prepared by "
        "data_prep.tfds_builders (e.g. dfew/fold_3).",
    )  # fmt: skip
    _TFDS_DIR = flags.DEFINE_string(
        "tfds_dir", None, "tfds's data folder holding --tfds; default $TFDS_DATA_DIR or ~/tensorflow_datasets."
    )
    _SPLIT = flags.DEFINE_string("split", "test", "Split of the data to evaluate on.")
    _CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
    _OUT = flags.DEFINE_string("out", None, "Output folder; default <workdir>/evaluation (./evaluation with --model).")
    _BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch; 0: the run's eval batch.")
    _NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Loader processes; default the run's.")
    cli.run(main)
