"""Damaged checkpoints and logs, at the library level: a step that cannot be read is set aside into
`checkpoints/damaged/` (never deleted) and the newest readable one restored; with none readable,
nothing moves and one error says how to start fresh; readers of a model (on_damage="raise") name the
step instead; a cut last line of metrics.jsonl is moved to metrics.jsonl.damaged-<n>. The same faults
through the public commands, on a real run, are in tests/run/damaged_run_test.py."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grace_jax.infra import aftermath, errors
from grace_jax.run import checkpointing, metric_writers

ABSTRACT = {"w": jax.ShapeDtypeStruct((64, 256), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}


def _saved(directory, steps=(2, 4), best=None) -> checkpointing.Checkpoints:
    ckpt = checkpointing.Checkpoints(str(directory), max_to_keep=3)
    for step in steps:
        ckpt.save(step, {"w": jnp.full((64, 256), float(step)), "step": jnp.int32(step)})
    if best is not None:
        ckpt.save(best, {"w": jnp.full((64, 256), -1.0), "step": jnp.int32(best)}, metrics={"uar": 0.5}, best=True)
    ckpt.wait()
    return ckpt


def _truncate_largest_array_file(step_dir) -> str:
    files = [os.path.join(d, n) for d, _, names in os.walk(step_dir / "state") for n in names]
    largest = max(files, key=os.path.getsize)
    os.truncate(largest, os.path.getsize(largest) // 2)
    return os.path.relpath(largest, step_dir)


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def test_a_truncated_newest_step_is_set_aside_and_the_older_one_restored(tmp_path, capsys):
    ckpt = _saved(tmp_path)
    before = _files(tmp_path / "last" / "4")
    cut = _truncate_largest_array_file(tmp_path / "last" / "4")
    step, state = ckpt.restore(ABSTRACT)
    assert step == 2 and float(state["w"][0, 0]) == 2.0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert f"{tmp_path}/last/4 cannot be read (" in warnings[0] and "Resuming from step 2" in warnings[0]
    assert f"moved to {tmp_path}/damaged/last-4 (nothing deleted)" in warnings[0]
    # Moved whole, the cut file included; orbax lists only the readable step now.
    assert _files(tmp_path / "damaged" / "last-4") == before and (tmp_path / "damaged" / "last-4" / cut).is_file()
    assert ckpt.last.all_steps() == [2] and sorted(os.listdir(tmp_path / "last")) == ["2"]
    ckpt.save(4, {"w": jnp.zeros((64, 256)), "step": jnp.int32(4)})  # the step is saved again later
    ckpt.wait()
    assert ckpt.latest_step() == 4 and (tmp_path / "damaged" / "last-4").is_dir()
    ckpt.close()


def test_an_emptied_step_and_an_unfinished_save_are_set_aside(tmp_path, capsys):
    ckpt = _saved(tmp_path)
    for entry in (tmp_path / "last" / "4").iterdir():  # a copy cut off before the step's files
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (tmp_path / "last" / "6.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    ckpt.last.reload()
    step, _ = ckpt.restore(ABSTRACT)
    assert step == 2
    err = capsys.readouterr().err
    assert "last/6.orbax-checkpoint-tmp: a save that never finished" in err
    assert "FileNotFoundError" in err and "Resuming from step 2" in err
    assert sorted(os.listdir(tmp_path / "damaged")) == ["last-4", "last-6.orbax-checkpoint-tmp"]
    assert sorted(os.listdir(tmp_path / "last")) == ["2"]
    ckpt.close()


def test_with_no_readable_step_nothing_moves_and_the_error_says_how_to_start_fresh(tmp_path):
    ckpt = _saved(tmp_path)
    for step in (2, 4):
        _truncate_largest_array_file(tmp_path / "last" / str(step))
    with pytest.raises(errors.UserError) as e:
        ckpt.restore(ABSTRACT)
    message = str(e.value)
    assert message.startswith(f"{tmp_path}/last: no checkpoint can be read, each is damaged (step 4: ")
    assert "step 2: " in message and "Nothing was moved" in message and "another --workdir" in message
    assert "\n" not in message
    assert sorted(os.listdir(tmp_path / "last")) == ["2", "4"] and not (tmp_path / "damaged").exists()
    ckpt.close()


def test_a_reader_of_the_model_gets_one_error_naming_the_step_and_nothing_moves(tmp_path):
    ckpt = _saved(tmp_path, best=4)
    _truncate_largest_array_file(tmp_path / "best" / "4")
    with pytest.raises(errors.UserError, match=rf"^{tmp_path}/best/4: this checkpoint is damaged .* --checkpoint=last"):
        ckpt.restore(ABSTRACT, best=True, on_damage="raise")
    assert os.listdir(tmp_path / "best") == ["4"] and not (tmp_path / "damaged").exists()
    ckpt.close()


def test_a_damaged_best_is_set_aside_when_the_trainer_reads_its_metrics(tmp_path, capsys):
    ckpt = _saved(tmp_path, best=4)
    os.remove(tmp_path / "best" / "4" / "metrics" / "metrics")
    assert ckpt.best_metrics() is None
    err = capsys.readouterr().err
    assert f"{tmp_path}/best/4 cannot be read" in err and "next evaluation saves a new best" in err
    assert os.listdir(tmp_path / "damaged") == ["best-4"] and ckpt.best.latest_step() is None
    ckpt.close()


def test_other_failures_are_not_taken_for_damage():
    assert checkpointing.damage_reason(RuntimeError("boom")) is None
    transient = ValueError('UNAVAILABLE: Error reading "w" from gs://b/run/checkpoints/last/4/state')
    assert checkpointing.damage_reason(Exception("Encountered error")) is None
    wrapped = Exception("Encountered error while reading array index")
    wrapped.__cause__ = transient
    assert checkpointing.damage_reason(wrapped) is None
    wrapped.__cause__ = ValueError("OUT_OF_RANGE: Requested byte range [0, 9) is not valid for value of size 4")
    assert checkpointing.damage_reason(wrapped).startswith("ValueError: OUT_OF_RANGE: Requested byte range")


# ------------------------------------------------------------------------------ metrics.jsonl
def _records(n: int) -> list[dict]:
    return [{"step": s, "split": "train", "loss": 1.0 / s} for s in range(1, n + 1)]


@pytest.mark.parametrize("tail", ['{"step": 4, "split": "tr', "\0" * 37], ids=["cut line", "NUL bytes"])
def test_a_damaged_last_metrics_line_is_set_aside_and_appending_goes_on(tmp_path, capsys, tail):
    path = tmp_path / metric_writers.METRICS_NAME
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(3)) + tail)
    assert metric_writers.read_metrics(str(tmp_path)) == _records(3)  # readers skip it
    writer = metric_writers.MetricWriter(str(tmp_path), resume_step=3)
    writer.write(4, "train", {"loss": 0.25})
    writer.close()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and f"{path}: 1 damaged line" in warnings[0]
    assert f"moved to {path}.damaged-1; the readable lines are kept." in warnings[0]
    assert (tmp_path / "metrics.jsonl.damaged-1").read_text() == tail + "\n"
    assert metric_writers.read_metrics(str(tmp_path)) == _records(4)
    assert path.read_text().count("\n") == 4  # every line whole again


def test_a_record_appended_onto_a_cut_line_is_set_aside_too(tmp_path, capsys):
    # What an earlier version left: the next run's first record glued onto the cut line.
    path = tmp_path / metric_writers.METRICS_NAME
    glued = '{"step": 3, "spl{"step": 3, "split": "train", "loss": 0.5}'
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(2)) + glued + "\n")
    (tmp_path / "metrics.jsonl.damaged-1").write_text("an earlier one\n")
    metric_writers.MetricWriter(str(tmp_path), resume_step=6).close()
    assert "moved to " + str(path) + ".damaged-2" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl.damaged-1").read_text() == "an earlier one\n"
    assert metric_writers.read_metrics(str(tmp_path)) == _records(2)
    np.testing.assert_equal((tmp_path / "metrics.jsonl.damaged-2").read_text(), glued + "\n")


def test_unretrieved_echoes_of_a_read_error_are_not_logged(tmp_path, caplog):
    # orbax reads arrays in concurrent asyncio tasks; the errors of those not awaited would be logged
    # with a traceback when collected, after restore has said it all in one line.
    checkpointing.Checkpoints(str(tmp_path)).close()  # installs the filter

    async def read(message):
        raise Exception(message)

    def leak(message):
        loop = asyncio.new_event_loop()
        task = loop.create_task(read(message))
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        del task
        gc.collect()

    with caplog.at_level("ERROR", logger="asyncio"):
        leak("Encountered error while reading array index: (slice(0, 64, 1),). See full TensorStore details")
        leak('OUT_OF_RANGE: Error reading "w/0.0" in OCDBT database at local file "x/state/"')  # TensorStore's
        assert not [r for r in caplog.records if r.name == "asyncio"]
        leak("another error")  # anything else is still logged
        assert [r for r in caplog.records if r.name == "asyncio" and "never retrieved" in r.getMessage()]


def test_a_damaged_config_json_is_named(tmp_path):
    from grace_jax.run import resume, runs

    (tmp_path / "config.json").write_text('{"model": {"num_cla')
    with pytest.raises(errors.UserError, match=rf"^{tmp_path}/config.json: damaged, not readable as JSON \("):
        runs.read_config(str(tmp_path))
    (tmp_path / "checkpoints" / "last" / "6").mkdir(parents=True)
    said = resume.check(runs.ml_collections.ConfigDict({"seed": 0}), str(tmp_path))
    assert said == [
        f"{tmp_path}/config.json is damaged (Unterminated string starting at: line 1 column 12 (char 11)): the "
        "config could not be compared with the checkpoint's run."
    ]


def test_a_pending_read_closed_after_the_error_is_not_printed(tmp_path, monkeypatch):
    # What orbax's abandoned array reads do when collected: the GeneratorExit that closes them turned
    # into its read error, which Python can only print ("Exception ignored in: <coroutine ...>").
    checkpointing.Checkpoints(str(tmp_path)).close()  # installs the hook
    printed = []  # what reaches the hook that was there before (Python's printer; pytest's here)
    monkeypatch.setattr(aftermath, "_previous_unraisable_hook", lambda u: printed.append(str(u.exc_value)))

    class Pending:  # an awaitable that suspends once and is never resumed
        def __await__(self):
            yield

    async def read(message):
        try:
            await Pending()
        except BaseException as e:
            raise Exception(message) from e

    for message in ("Encountered error while reading array index: (slice(0, 64, 1),)", "another error"):
        coroutine = read(message)
        coroutine.send(None)  # suspended inside the read, as an abandoned one is
        del coroutine
        gc.collect()
    assert printed == ["another error"]


def test_closed_event_loop_echoes_are_dropped_only_during_a_read_or_after_a_damaged_one(tmp_path, monkeypatch):
    # TensorStore's reads still in flight after a damaged one complete into orbax's closed loop.
    import sys

    checkpointing.Checkpoints(str(tmp_path)).close()  # installs the hook
    printed = []
    monkeypatch.setattr(aftermath, "_previous_excepthook", lambda t, e, tb: printed.append(str(e)))
    monkeypatch.setattr(aftermath, "_expect_closed_loop", False)
    closed = RuntimeError("Event loop is closed")
    sys.excepthook(RuntimeError, closed, None)  # no read running, none failed: printed
    with aftermath.asynchronous_read():  # a read's aborted parts, before its error reaches the caller
        sys.excepthook(RuntimeError, closed, None)
    assert checkpointing.damage_reason(FileNotFoundError("no _METADATA")) is not None
    sys.excepthook(RuntimeError, closed, None)
    sys.excepthook(ValueError, ValueError("another error"), None)
    assert printed == ["Event loop is closed", "another error"]
