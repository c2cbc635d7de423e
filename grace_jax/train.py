"""The training loop: `train_and_evaluate(config, workdir)`, in sections read top to bottom.

  setup     config checked, workdir locked, compilation cache, resume check, config.json
  data      the shards (SynthFER generated on first use), class names, the run's length in steps
  model     the train state on the mesh; the steps jitted once each with explicit shardings, the
            state donated; the memory check when the train step first compiles
  loaders   the train iterator (prefetched onto the devices) and the eval loader
  restore   the latest checkpoint with the data iterator: a restarted run continues bit-exactly
  loop      steps and log lines; on SIGTERM or Ctrl-C, a checkpoint of the step reached, then stop;
            a non-finite loss, gradient norm or state stops the run before anything saves it
  eval      periodic and final evaluation; the best UAR kept as checkpoints/best
  save      checkpoints every train.ckpt_every_steps and at the end
  teardown  iterators and writers closed; plots and final_metrics.json

The steps are in grace_jax/steps.py and the train state in grace_jax/state.py: this module is host-side
bookkeeping only, and only the entry point (grace_jax/main.py) imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from grace_jax import config_checks, localization, memory, metrics, sharding, steps
from grace_jax import state as state_lib
from grace_jax.data import input_pipeline, prefetch, synthfer, tfds_source
from grace_jax.infra import compilation_cache, distributed, paths
from grace_jax.run import checkpointing, metric_writers, plots, resume, stops, workdir_lock
from grace_jax.text import class_set
from grace_jax.text import tokenizer as tokenizer_lib


@dataclasses.dataclass
class _Data:
    """What the data section found: where the data is, its classes and how long the run is."""

    dir: str | tfds_source.TfdsDataset  # the shard directory, or data.tfds's dataset
    manifest: dict
    class_names: list[str]
    steps_per_epoch: int
    total_steps: int


@dataclasses.dataclass
class _Model:
    """The mesh, the shardings of state and batch, and the steps jitted for them."""

    mesh: jax.sharding.Mesh
    state_sh: Any
    batch_sh: jax.sharding.NamedSharding
    train_fn: distributed.CompiledTogether
    eval_fn: distributed.CompiledTogether


@dataclasses.dataclass
class _Run:
    """What the loop, eval, save and teardown sections share; from `step` on, the run's progress."""

    config: ml_collections.ConfigDict
    workdir: str
    is_main: bool  # process 0: the one that prints and writes the run's files
    data: _Data
    model: _Model
    train_iter: prefetch.DevicePrefetcher
    eval_loader: Any  # () -> a fresh pass over the eval split
    ckpt: checkpointing.Checkpoints
    writer: metric_writers.MetricWriter
    step: int
    state: state_lib.TrainState
    best: dict  # the highest-UAR evaluation; its checkpoint is checkpoints/best
    best_war: dict  # the highest-WAR one (DFER-CLIP's selection), rebuilt from metrics.jsonl on resume
    summary: dict = dataclasses.field(default_factory=dict)  # the latest evaluation
    stopped: str | None = None  # "SIGTERM" or "SIGINT" once a signal stopped the loop
    skipped: list = dataclasses.field(default_factory=list)  # non-finite steps skipped (max_nonfinite_steps)


# ------------------------------------------------------------------------------------ setup
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains with periodic evaluation; returns the final evaluation summary.

    On SIGTERM (a preemption notice) it finishes the current step, saves a checkpoint of it (every
    process at the same step; grace_jax.infra.distributed) and returns {"preempted": True, "step": step}
    without the final evaluation; called again with the same workdir, it resumes from there. Ctrl-C
    does the same and raises stops.Interrupted; either signal during start-up stops it at once. Every
    stop and failure waits for the save in flight and releases the lock (grace_jax/run/stops.py).

    Before any work: the config is checked (grace_jax.config_checks), the workdir's lock taken
    (grace_jax.run.workdir_lock: one trainer per workdir; released however this returns or raises) and,
    when the workdir holds a checkpoint, the config compared with the one it was made with
    (grace_jax.run.resume). Their problems raise errors.UserError with the field or file named, and leave
    the workdir as it was.
    """
    # First: jax.distributed must start before anything starts jax's backend.
    distributed.initialize(config.get("distributed"))
    workdir = paths.resolve(workdir)
    manifest = config_checks.check_train_config(config, workdir)
    config = class_set.resolve(config, manifest)  # model.num_classes=0 and custom names: the data's
    with distributed.PreemptionWatcher() as watcher:  # SIGTERM and SIGINT: flags until start-up
        lock = distributed.on_process_0("workdir lock", lambda: workdir_lock.acquire(workdir))
        try:
            result = _train_and_evaluate(config, workdir, watcher)
        except distributed.Stopped as e:  # in start-up: nothing of this run to save
            result = {"stopped": e.signame, "step": None, "start_up": True}
        finally:
            watcher.raising = False
            if lock is not None:
                lock.release()
    return stops.say(result, workdir)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, watcher: distributed.PreemptionWatcher
) -> dict:
    """The run once the workdir is locked: the module docstring's sections, in order."""
    is_main = jax.process_index() == 0
    _start(config, workdir, is_main)
    watcher.raising = True  # a signal from here to the loop stops start-up at once
    data = _data(config, workdir, is_main)

    # ---- model: the train state on the mesh; the steps, compiled at their first call
    mesh = sharding.make_mesh(dict(zip(config.mesh.axes, config.mesh.shape)))
    tokenizer = state_lib.load_tokenizer(config.model)
    model, state = _model_and_steps(config, mesh, tokenizer, data.steps_per_epoch)
    train_iter, eval_loader = _loaders(config, data, model, tokenizer)

    # ---- restore
    ckpt = checkpointing.Checkpoints(paths.join(workdir, "checkpoints"), max_to_keep=config.train.max_checkpoints)
    step, state, best, best_war = _restore(config, workdir, ckpt, model, state, train_iter, is_main)
    run = _Run(
        config=config,
        workdir=workdir,
        is_main=is_main,
        data=data,
        model=model,
        train_iter=train_iter,
        eval_loader=eval_loader,
        ckpt=ckpt,
        writer=metric_writers.MetricWriter(workdir, enabled=is_main, resume_step=step),
        step=step,
        state=state,
        best=best,
        best_war=best_war,
    )
    del state  # `run.state` from here on: no second reference keeps a replaced state alive

    # ---- loop, with eval and save
    try:
        _loop(run, watcher)
    except BaseException as e:
        error = stops.after_failure(run, e)  # `e`, or a DivergedError naming the step saved by now
        if error is e:
            raise
        raise error from None

    # ---- teardown
    return _teardown(run)


def _start(config: ml_collections.ConfigDict, workdir: str, is_main: bool) -> None:
    """The compilation cache, the comparison with a resumed run's config, and config.json."""
    cache = compilation_cache.configure(config.train.compilation_cache, workdir)
    if cache and is_main:
        logging.info("jax compilation cache: %s", cache)
    taken = resume.check(config, workdir, jax.process_count())
    if is_main:
        if taken:
            print(
                "Resuming with these fields from this command (config.json had others): " + "; ".join(taken), flush=True
            )
        paths.write_text(paths.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True))


# ------------------------------------------------------------------------------------ data
def _data(config: ml_collections.ConfigDict, workdir: str, is_main: bool) -> _Data:
    """The data, its class names (written to classes.json) and the run's length in steps."""
    data_dir = _prepare_data(config, workdir)
    manifest = input_pipeline.read_manifest(data_dir)
    class_names = config_checks.check_classes(config, manifest, data_dir)
    if is_main:  # What grace_jax.predict labels its outputs with.
        paths.write_text(paths.join(workdir, "classes.json"), json.dumps(class_names))
    batch_size = config.optim.batch_size
    train_clips = int(manifest["splits"][config.data.train_split]["num_clips"])
    steps_per_epoch = max(train_clips // batch_size, 1)
    total_steps = config.optim.num_epochs * steps_per_epoch
    if config.optim.num_train_steps > 0:
        total_steps = config.optim.num_train_steps
    return _Data(data_dir, manifest, class_names, steps_per_epoch, total_steps)


def _prepare_data(config: ml_collections.ConfigDict, workdir: str) -> str | tfds_source.TfdsDataset:
    """The shard directory (or data.tfds's dataset); for SynthFER configs it is generated once under
    the workdir."""
    if config.data.tfds:  # a TFDS dataset instead of shards (grace_jax.data.tfds_source)
        return tfds_source.TfdsDataset.from_config(config.data)
    if config.data.dir:
        return paths.resolve(config.data.dir)
    out = paths.join(workdir, "synthfer")  # config_checks: data.dir empty means SynthFER
    synthfer.ensure(config, out)
    return out


# ------------------------------------------------------------------------------------ model
def _model_and_steps(
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    tokenizer: tokenizer_lib.Tokenizer | None,
    steps_per_epoch: int,
) -> tuple[_Model, state_lib.TrainState]:
    """(the jitted steps and their shardings, the fresh train state placed by them).

    Each step is jitted once, with explicit input/output shardings; the train step donates the state."""
    graphdef, state, tx = state_lib.create_state(config, tokenizer, steps_per_epoch)
    state_sh = sharding.state_shardings(mesh, state)
    state = jax.device_put(state, state_sh)
    batch_sh = sharding.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    loss_cfg = dict(config.model.loss)
    normalize = config.data.normalize
    accum_steps = config.optim.grad_accum_steps

    def train_jit(accum: int):
        return jax.jit(
            functools.partial(
                steps.train_step,
                graphdef=graphdef,
                tx=tx,
                loss_cfg=loss_cfg,
                image_size=config.data.image_size,
                normalize=normalize,
                accum_steps=accum,
                skip_non_finite=config.train.max_nonfinite_steps > 0,
            ),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, replicated),
            donate_argnums=0,
        )

    # CompiledTogether: with several processes, the first step runs once every process compiled it;
    # the memory check sees the compiled step before it runs.
    train_fn = distributed.CompiledTogether(
        train_jit(accum_steps), "train_step", check=memory.train_step_check(config, train_jit)
    )
    eval_fn = distributed.CompiledTogether(
        jax.jit(
            functools.partial(
                steps.eval_step,
                graphdef=graphdef,
                loss_cfg=loss_cfg,
                num_classes=config.model.num_classes,
                normalize=normalize,
            ),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(replicated, replicated, replicated),
        ),
        "eval_step",
    )
    return _Model(mesh, state_sh, batch_sh, train_fn, eval_fn), state


# ------------------------------------------------------------------------------------ loaders
def _loaders(
    config: ml_collections.ConfigDict, data: _Data, model: _Model, tokenizer: tokenizer_lib.Tokenizer | None
) -> tuple[prefetch.DevicePrefetcher, Any]:
    """(the train iterator, prefetching onto the devices; a function returning a fresh eval loader)."""
    data_dir, manifest, mesh, batch_sh = data.dir, data.manifest, model.mesh, model.batch_sh
    batch_size = config.optim.batch_size
    accum_steps = config.optim.grad_accum_steps
    caption_tok = tokenizer if config.model.cate.captions else None
    # Host batches go onto the devices one step ahead, in a thread (grace_jax/data/prefetch.py); its
    # get_state() is the state after the batches the loop consumed, which is what checkpoints hold.
    host_iter = iter(
        input_pipeline.make_train_loader(
            data_dir,
            config.data,
            global_batch_size=batch_size,
            seed=config.seed,
            tokenizer=caption_tok,
            normalize_on_host=False,
            **steps.process_rows(batch_sh, batch_size),
        )
    )
    train_iter = prefetch.DevicePrefetcher(host_iter, lambda b: sharding.global_batch(b, mesh))

    # SynthFER's test split carries where the expression is: the eval then measures localization.
    ground_truth = localization.has_ground_truth(manifest, config.data.eval_split)
    # Evaluation holds no gradients, but by default takes the training micro-batch: a size whose
    # activations the memory check has seen fit.
    eval_batch = config.data.eval_batch_size or batch_size // accum_steps

    def eval_loader():
        return input_pipeline.make_eval_loader(
            data_dir,
            config.data,
            ground_truth=ground_truth,
            global_batch_size=eval_batch,
            tokenizer=caption_tok,
            normalize_on_host=False,
            **steps.process_rows(batch_sh, eval_batch),
        )

    return train_iter, eval_loader


# ------------------------------------------------------------------------------------ restore
def _restore(
    config: ml_collections.ConfigDict,
    workdir: str,
    ckpt: checkpointing.Checkpoints,
    model: _Model,
    state: state_lib.TrainState,
    train_iter: prefetch.DevicePrefetcher,
    is_main: bool,
) -> tuple[int, state_lib.TrainState, dict, dict]:
    """(step, state, best by UAR, best by WAR): from the latest checkpoint when there is one (the data
    iterator restored with it), else step 0 and `state`."""
    step = 0
    if ckpt.latest_step() is not None:
        abstract = state_lib.abstract_state(state, model.state_sh)
        step, state = ckpt.restore(abstract, data_iterator=train_iter)
        if is_main:
            print(f"Resumed from {workdir}/checkpoints at step {step}.", flush=True)
        else:  # process 0 said it on the console; the others' logs say it once too
            logging.info("Resumed from step %d", step)
    best = ckpt.best_metrics() or {"uar": -1.0}
    if step == 0 and is_main:
        print(config_checks.describe_clip_init(config.model.clip), flush=True)
    best_war = metric_writers.best_by_war(workdir) if step else {"war": -1.0}
    return step, state, best, best_war


# ------------------------------------------------------------------------------------ loop
def _loop(run: _Run, watcher: distributed.PreemptionWatcher) -> None:
    """Trains up to the data section's total steps; evaluates and saves on the way (`run.summary`:
    the latest evaluation). On SIGTERM (a preemption notice) or Ctrl-C it saves the step reached and
    stops, with `run.stopped` set. Steps are checked finite before anything evaluates or saves them."""
    config, total = run.config, run.data.total_steps
    eval_every = _eval_every(config, run.data)
    progress = metric_writers.Progress(total, config.optim.batch_size, enabled=run.is_main)
    progress.start(run.step)
    reported_wait = run.train_iter.wait_s
    pending = []  # the metrics since the last log line
    unchecked = []  # (step, metrics) not yet checked finite
    while run.step < total:
        run.state, step_metrics = run.model.train_fn(run.state, next(run.train_iter))
        # Start-up ends once the first step is compiled and dispatched: from here a signal waits
        # for the step and saves it.
        watcher.start_up_over()
        run.step += 1
        pending.append(step_metrics)
        unchecked.append((run.step, step_metrics))
        if run.step % config.train.log_every_steps == 0 or run.step == total:
            stops.check_finite(unchecked, run)
            reported_wait = _log_train(run, progress, pending, reported_wait)
            pending = []
        # SIGTERM (preemption): every process asks at every step and all agree on this step.
        if run.step < total and watcher.reached(run.step):
            run.stopped = watcher.stop_signal
            # A Ctrl-C reaches one process only: with several, a save it alone joins would hang.
            if run.stopped == "SIGTERM" or jax.process_count() == 1:
                stops.save_checked(run, unchecked)
            return
        last = run.step == total
        if run.step % eval_every == 0 or last:
            stops.check_finite(unchecked, run)
            _evaluate(run)
        # ---- save
        if run.step % config.train.ckpt_every_steps == 0 or last:
            stops.save_checked(run, unchecked)


def _eval_every(config: ml_collections.ConfigDict, data: _Data) -> int:
    """Steps between evaluations: train.eval_every_steps when set, else train.eval_every_epochs."""
    eval_every = config.train.eval_every_epochs * data.steps_per_epoch
    if config.train.eval_every_steps > 0:
        eval_every = config.train.eval_every_steps
    if eval_every <= 0:  # eval_every_epochs=0: evaluate once, at the end.
        eval_every = data.total_steps
    return eval_every


def _log_train(run: _Run, progress: metric_writers.Progress, pending: list[dict], reported_wait: float) -> float:
    """Writes the mean of the steps' metrics since the last log line; returns the prefetcher's total
    wait to measure the next line's from."""
    averaged = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
    wait_s = run.train_iter.wait_s
    waited = wait_s - reported_wait
    averaged["clips_per_s"] = progress.report(run.step, averaged, data_wait_s=waited)
    averaged["data_wait_s"] = waited
    averaged["epoch"] = run.step / run.data.steps_per_epoch
    run.writer.write(run.step, "train", averaged)
    return wait_s


# ------------------------------------------------------------------------------------ eval
def _evaluate(run: _Run) -> None:
    """One pass over the eval split: written to metrics.jsonl, printed, kept as `run.summary`; a new
    best UAR saves checkpoints/best."""
    start = time.perf_counter()
    class_names = run.data.class_names
    confusion, eval_loss, extras = steps.evaluate(
        run.model.eval_fn,
        run.state,
        run.eval_loader(),
        run.model.mesh,
        run.config.model.num_classes,
        class_names,
    )
    summary = metrics.summarize(confusion=confusion, class_names=class_names)
    summary.update(step=run.step, loss=eval_loss, confusion=confusion.tolist(), **extras)
    run.writer.write(
        run.step,
        "eval",
        {
            "uar": summary["uar"],
            "war": summary["war"],
            "loss": eval_loss,
            **{f"recall/{k}": v for k, v in summary["per_class_recall"].items()},
            **extras["ot"],
            **localization.flat_metrics(extras.get("localization")),
        },
    )
    if run.is_main:
        print(
            f"eval step {run.step}: UAR {summary['uar']:.4f} WAR {summary['war']:.4f} "
            f"({summary['num_examples']} clips, {time.perf_counter() - start:.1f} s)"
            + localization.one_line(extras.get("localization")),
            flush=True,
        )
    if summary["uar"] > run.best["uar"]:
        run.best = dict(summary)
        stops.save_checked(run, [], metrics=run.best, best=True)
    if summary["war"] > run.best_war["war"]:
        run.best_war = dict(summary)
    run.summary = summary


# ------------------------------------------------------------------------------------ teardown
def _teardown(run: _Run) -> dict:
    """Closes the iterator, checkpoints and writer (waiting for the last save); then the plots and
    final_metrics.json. Returns what `train_and_evaluate` returns, or, after a stop by a signal,
    {"stopped": signal name, "step": the step saved, "start_up": False} (`stops.say` says it)."""
    run.train_iter.close()
    run.ckpt.wait()
    run.ckpt.close()
    run.writer.close()
    if run.stopped:
        saved = run.step if run.stopped == "SIGTERM" or jax.process_count() == 1 else None
        return {"stopped": run.stopped, "step": saved, "start_up": False}
    if run.is_main and run.summary:
        _write_results(run)
    return run.summary


def _write_results(run: _Run) -> None:
    """The confusion matrix and learning curves as pictures, and final_metrics.json."""
    summary, workdir = run.summary, run.workdir
    plots.save_confusion_matrix(
        paths.join(workdir, "confusion_matrix.png"),
        np.asarray(summary["confusion"]),
        run.data.class_names,
        f"step {summary['step']}: UAR {summary['uar']:.3f}",
    )
    plots.save_learning_curves(paths.join(workdir, "learning_curves.png"), metric_writers.read_metrics(workdir))
    metric_writers.write_final_metrics(workdir, last=summary, best=run.best, best_war=run.best_war)
