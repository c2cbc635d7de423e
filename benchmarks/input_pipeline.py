r"""Input throughput: ArrayRecord shards + grain vs. per-frame PIL reading from frame folders, and vs. TFDS.

Usage:

  python benchmarks/input_pipeline.py                       # 64 clips x 32 frames, batches of 16x224x224
  python benchmarks/input_pipeline.py --workers=0,1,2,4 --repeats=5 --num_clips=128
  python benchmarks/input_pipeline.py --texture=12           # frames with photo-like detail
  python benchmarks/input_pipeline.py --notfds               # without the TFDS rows (no tensorflow-datasets)

It builds SynthFER clips at 224 px with data_prep (the shards), writes the very same JPEG bytes out as
frame folders (00001.jpg, ...), and times training batches of 16 clips x 16 frames x 224 x 224 x 3
read five ways, each with 0, 1, 2, ... grain worker processes:

  shards-dev what the trainer uses (config.data.augment_on_device): the host reads and decodes the
             sampled frames and draws crop boxes and flips; uint8 batches; the crop/resize/flip and
             normalization run in the jitted train step (timed separately below the table);
  shards     this pipeline with every step on the host: float32 CLIP-normalized batches;
  shards-u8  the same with normalize_on_host=False: uint8 batches, normalized on the accelerator;
  pil-dfer   frame folders the way PyTorch DFER code reads them (DFER-CLIP's VideoDataset): glob the
             folder, PIL-open each sampled frame, crop/resize/flip it, ToTensor (/255) per frame, then
             Normalize the clip;
  pil-ours   frame folders read per frame with PIL but this pipeline's transforms, to show how much of
             the difference is storage and how much is transform code.

With --tfds (the default), the frame folders also become a DFEW-layout list (fold 1, train only) built
twice from the very same folders: by `data_prep.build_dataset --dataset=dfew` (grace_jax's shards) and by the
TFDS builder `dfew` (data_prep.tfds_builders, ArrayRecord written by tensorflow-datasets). Both re-encode
the frames identically, so the two hold the same JPEG bytes; a second table gives their size on disk,
and the readers `dfew-shards`/`dfew-tfds` (host, float32) and `dfew-shards-dev`/`dfew-tfds-dev` (as
shards-dev) time the trainer's pipeline over each.

CPU use is measured, not assumed: the CPU seconds of this process and all its children (grain workers)
over the timed window, read from /proc. "clips/s per core" divides throughput by those cores, and
"cores for 500 clips/s" is 500 / (clips/s per core). Every figure is the median of --repeats runs.

Below the table: the work shards-dev leaves to the accelerator, as XLA's FLOP count per clip and as
the time the same jitted function takes on this machine's CPU (an upper bound for an accelerator).
"""

from __future__ import annotations

import glob
import os
import shutil
import statistics
import tempfile
import time

import grain
import jax
import numpy as np
from absl import app, flags
from PIL import Image

from data_prep import job
from grace_jax.data import clip_transforms, crops, device_transforms, input_pipeline, schema
from grace_jax.data.segments import segment_indices

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_clips", 64, "Clips in the benchmark dataset.")
flags.DEFINE_integer("frames_per_clip", 32, "Frames per clip.")
flags.DEFINE_integer("batch_size", 16, "Clips per batch.")
flags.DEFINE_integer("num_frames", 16, "Frames sampled per clip (segments).")
flags.DEFINE_integer("image_size", 224, "Frame side.")
flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts to time.")
flags.DEFINE_integer("batches", 12, "Timed batches per run (after 2 warm-up batches).")
flags.DEFINE_integer("repeats", 3, "Runs per configuration; medians are reported.")
flags.DEFINE_float("texture", 0.0, "Grey-level std of photo-like detail added to SynthFER (0: plain SynthFER).")
flags.DEFINE_list("readers", [], "Readers to time (names as in the table); empty: all.")
flags.DEFINE_bool("tfds", True, "Also time the same clips as a TFDS dataset (needs the [tfds] extra).")
flags.DEFINE_string("workdir", None, "Where to build the data (default: a temporary folder, removed after).")

TARGET_CLIPS_PER_S = 500


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and all its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid and c not in mine]
        mine.update(children)
        frontier += children
    return sum(times.get(p, 0.0) for p in mine)


class FrameFolderSource(grain.sources.RandomAccessDataSource):
    """Clips as frame folders: {"key", "folder", "label"}."""

    def __init__(self, folders: list[str], labels: list[int]):
        self._folders, self._labels = folders, labels

    def __len__(self) -> int:
        return len(self._folders)

    def __getitem__(self, key: int) -> dict:
        return {"key": int(key), "folder": self._folders[key], "label": self._labels[key]}


class DferPilTransform(grain.transforms.RandomMap):
    """Per-frame reading as DFER-CLIP's VideoDataset does it, with numpy standing in for torch."""

    def __init__(self, num_frames: int, image_size: int):
        self.num_frames, self.image_size = num_frames, image_size
        self.mean = np.asarray(clip_transforms.CLIP_MEAN, np.float32)
        self.std = np.asarray(clip_transforms.CLIP_STD, np.float32)

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        paths = sorted(glob.glob(os.path.join(element["folder"], "*")))
        indices = segment_indices(len(paths), self.num_frames, train=True, rng=rng)
        box, flip, frames = None, rng.uniform() < 0.5, []
        for i in indices:
            image = Image.open(paths[i]).convert("RGB")
            if box is None:
                box = crops.random_resized_box(*image.size, rng, (0.08, 1.0), (3 / 4, 4 / 3))
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR, box=box)
            if flip:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            frames.append(np.asarray(image, np.float32) / 255.0)  # ToTensor
        video = (np.stack(frames) - self.mean) / self.std  # Normalize
        return {
            "video": video.astype(np.float32),
            "label": np.int32(element["label"]),
            "mask": np.bool_(True),
            "clip_index": np.int32(element["key"]),
        }


class OursPilTransform(grain.transforms.RandomMap):
    """Per-frame files, but this pipeline's decoding, crop and normalization code."""

    def __init__(self, num_frames: int, image_size: int):
        self.num_frames, self.image_size = num_frames, image_size

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        paths = sorted(glob.glob(os.path.join(element["folder"], "*")))
        indices = segment_indices(len(paths), self.num_frames, train=True, rng=rng)
        frames_bytes = []
        for i in dict.fromkeys(int(i) for i in indices):
            with open(paths[i], "rb") as f:
                frames_bytes.append(f.read())
        view = schema.parse(schema.serialize(schema.ClipRecord(element["label"], "", tuple(frames_bytes), 0)))
        positions = {i: n for n, i in enumerate(dict.fromkeys(int(i) for i in indices))}
        local = np.array([positions[int(i)] for i in indices])
        seed = int(rng.integers(2**31))

        def box_fn(width, height):
            return crops.random_resized_box(width, height, np.random.default_rng(seed), (0.08, 1.0), (3 / 4, 4 / 3))

        frames = clip_transforms.decode_resized(view, local, box_fn, self.image_size)
        if rng.uniform() < 0.5:
            frames = frames[:, :, ::-1]
        return {
            "video": clip_transforms.normalize(frames),
            "label": np.int32(element["label"]),
            "mask": np.bool_(True),
            "clip_index": np.int32(element["key"]),
        }


def _folder_loader(source, transform, workers: int) -> grain.DataLoader:
    sampler = grain.samplers.IndexSampler(len(source), shuffle=True, num_epochs=None, seed=0)
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        worker_count=workers,
        worker_buffer_size=2,
        operations=[transform, grain.transforms.Batch(FLAGS.batch_size, drop_remainder=True)],
    )


def _time(loader) -> tuple[float, float]:
    """(clips/s, cores used) over FLAGS.batches batches after two warm-up batches."""
    iterator = iter(loader)
    for _ in range(2):
        batch = next(iterator)
    assert batch["video"].shape == (FLAGS.batch_size, FLAGS.num_frames, FLAGS.image_size, FLAGS.image_size, 3)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    for _ in range(FLAGS.batches):
        next(iterator)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    del iterator
    return FLAGS.batches * FLAGS.batch_size / wall, cpu / wall


def _device_work(loader) -> tuple[float, float]:
    """(GFLOP per clip, ms per batch on this CPU) of the jitted crop/resize/flip + normalization."""
    batch = next(iter(loader))
    args = (batch["video"], batch["crop_box"], batch["flip"])

    def augment(video, crop_box, flip):
        video = device_transforms.crop_resize_flip(video, crop_box, flip, size=FLAGS.image_size)
        return input_pipeline.normalize_on_device(video)

    compiled = jax.jit(augment).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    args = jax.device_put(args)
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return cost["flops"] / FLAGS.batch_size / 1e9, statistics.median(times) * 1e3


def _textured_shards(workdir: str, synth_shards: str) -> str:
    """The SynthFER clips with photo-like detail added, rebuilt into shards through the `folder` dataset.

    SynthFER's flat drawings compress to small JPEGs that decode fast; real face crops carry skin texture
    and sensor noise. A fixed blurred-noise texture per clip plus fresh noise per frame (std --texture and
    --texture / 4 grey levels) brings the JPEG size and decode cost closer to those of real frames.
    """
    rng = np.random.default_rng(0)
    source = grain.sources.ArrayRecordDataSource(input_pipeline.shard_paths(synth_shards, "train"))
    rows = []
    for key in range(len(source)):
        view = schema.parse(source[key])
        frames = clip_transforms.decode_frames(view, np.arange(view.num_frames)).astype(np.float32)
        noise = rng.normal(0, 1, frames.shape[1:])
        texture = sum(np.roll(noise, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        texture *= FLAGS.texture / texture.std()
        folder = os.path.join(workdir, "textured", f"{key:05d}")
        os.makedirs(folder)
        for i, frame in enumerate(frames):
            frame = frame + texture + rng.normal(0, FLAGS.texture / 4, frame.shape)
            Image.fromarray(frame.clip(0, 255).astype(np.uint8)).save(
                os.path.join(folder, f"{i + 1:05d}.jpg"), quality=95
            )
        rows.append(f"{key:05d},{view.label}")
    with open(os.path.join(workdir, "textured.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    shards = os.path.join(workdir, "textured_shards")
    job.build(
        job.BuildConfig(
            dataset="folder",
            out=shards,
            videos=os.path.join(workdir, "textured"),
            labels=(f"train={os.path.join(workdir, 'textured.csv')}",),
            frame_size=FLAGS.image_size,
            workers=os.cpu_count() or 1,
            progress=False,
            command=("benchmarks.input_pipeline",),
        )
    )
    return shards


def _prepare(workdir: str) -> tuple[str, list[str], list[int], float]:
    """Shards at 224 px, frame folders holding the same JPEG bytes, and the mean bytes per frame."""
    shards = os.path.join(workdir, "shards")
    job.build(
        job.BuildConfig(
            dataset="synth",
            out=shards,
            frame_size=FLAGS.image_size,
            synth_train=FLAGS.num_clips,
            synth_test=1,
            synth_min_frames=FLAGS.frames_per_clip,
            synth_max_frames=FLAGS.frames_per_clip,
            workers=os.cpu_count() or 1,
            progress=False,
            command=("benchmarks.input_pipeline",),
        )
    )
    if FLAGS.texture > 0:
        shards = _textured_shards(workdir, shards)
    folders, labels, sizes = [], [], []
    source = grain.sources.ArrayRecordDataSource(input_pipeline.shard_paths(shards, "train"))
    for key in range(len(source)):
        view = schema.parse(source[key])
        folder = os.path.join(workdir, "frames", f"{key:05d}")
        os.makedirs(folder)
        for i in range(view.num_frames):
            data = view.frame_bytes(i)
            with open(os.path.join(folder, f"{i + 1:05d}.jpg"), "wb") as f:
                f.write(data)
            sizes.append(len(data))
        folders.append(folder)
        labels.append(view.label)
    return shards, folders, labels, float(np.mean(sizes))


def _tree_bytes(folder: str, match) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files if match(f))


def _prepare_tfds(workdir: str, folders: list[str], labels: list[int]):
    """The frame folders as DFEW fold 1 (train only), built as grace_jax's shards and as the TFDS dataset.

    Returns (shard folder, TfdsDataset, {"shards": bytes, "tfds": bytes}) with the sizes of the record
    files only (manifests, clip tables and tfds's JSON are a few KiB either way)."""
    from data_prep.tfds_builders import prepare
    from grace_jax.data import tfds_source

    lists = os.path.join(workdir, "dfew_lists")
    os.makedirs(lists)
    with open(os.path.join(lists, "set_1_train.txt"), "w") as f:  # absolute paths, kept as written
        f.write("".join(f"{folder} {len(os.listdir(folder))} {label}\n" for folder, label in zip(folders, labels)))
    shards = os.path.join(workdir, "dfew_shards")
    common = dict(workers=os.cpu_count() or 1, max_bad_fraction=0.0)
    job.build(
        job.BuildConfig(
            dataset="dfew",
            root=lists,
            fold=1,
            out=shards,
            frame_size=FLAGS.image_size,
            progress=False,
            command=("benchmarks.input_pipeline",),
            **common,
        )
    )
    done = prepare.build(
        "dfew", lists, os.path.join(workdir, "tfds"), fold=1, frame_size=FLAGS.image_size, progress=False, **common
    )
    sizes = {
        "shards": _tree_bytes(shards, lambda n: n.endswith(".array_record")),
        "tfds": _tree_bytes(done.path, lambda n: ".array_record-" in n),
    }
    return shards, tfds_source.TfdsDataset(done.name, os.path.join(workdir, "tfds")), sizes


def _record_reads(shards: str, tfds_dataset) -> dict[str, float]:
    """Records read per second through each source (every record of the split, 5 passes, one core)."""
    rates = {}
    for name, data in (("shards", shards), ("tfds", tfds_dataset)):
        source = input_pipeline.record_source(data, "train")
        t0 = time.perf_counter()
        for _ in range(5):
            for i in range(len(source)):
                source[i]
        rates[name] = 5 * len(source) / (time.perf_counter() - t0)
    return rates


def main(argv: list[str]) -> None:
    del argv
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="grace_bench_")
    try:
        shards, folders, labels, frame_bytes = _prepare(workdir)
        folder_source = FrameFolderSource(folders, labels)

        def shard_loader(workers: int, data=shards, augment_on_device=False, **kw) -> grain.DataLoader:
            from grace_jax.configs import base

            settings = base.get_config().data  # the base recipe's crop, flip and normalization
            settings.num_frames, settings.image_size = FLAGS.num_frames, FLAGS.image_size
            settings.augment_on_device = augment_on_device
            return input_pipeline.make_train_loader(
                data,
                settings,
                split="train",
                global_batch_size=FLAGS.batch_size,
                seed=0,
                worker_count=workers,
                shard_index=0,
                shard_count=1,
                **kw,
            )

        readers = {
            "shards-dev": lambda w: shard_loader(w, normalize_on_host=False, augment_on_device=True),
            "shards": shard_loader,
            "shards-u8": lambda w: shard_loader(w, normalize_on_host=False),
            "pil-dfer": lambda w: _folder_loader(
                folder_source, DferPilTransform(FLAGS.num_frames, FLAGS.image_size), w
            ),
            "pil-ours": lambda w: _folder_loader(
                folder_source, OursPilTransform(FLAGS.num_frames, FLAGS.image_size), w
            ),
        }
        if FLAGS.tfds:
            dfew_shards, dfew_tfds, sizes = _prepare_tfds(workdir, folders, labels)
            readers |= {
                "dfew-shards-dev": lambda w: shard_loader(
                    w, dfew_shards, normalize_on_host=False, augment_on_device=True
                ),
                "dfew-tfds-dev": lambda w: shard_loader(w, dfew_tfds, normalize_on_host=False, augment_on_device=True),
                "dfew-shards": lambda w: shard_loader(w, dfew_shards),
                "dfew-tfds": lambda w: shard_loader(w, dfew_tfds),
            }
        unknown = sorted(set(FLAGS.readers) - set(readers))
        if unknown:
            raise app.UsageError(f"--readers: unknown {unknown}; choose from {sorted(readers)}")
        timed = {n: m for n, m in readers.items() if not FLAGS.readers or n in FLAGS.readers}
        rows = {}
        for workers in (int(w) for w in FLAGS.workers):
            for name, make in timed.items():
                runs = [_time(make(workers)) for _ in range(FLAGS.repeats)]
                rate = statistics.median(r[0] for r in runs)
                cores = statistics.median(r[1] for r in runs)
                per_core = statistics.median(r[0] / r[1] for r in runs)
                rows[name, workers] = (rate, cores, per_core)
        load = os.getloadavg()
        print(
            f"\nbatches of {FLAGS.batch_size}x{FLAGS.num_frames}x{FLAGS.image_size}x{FLAGS.image_size}x3; "
            f"{FLAGS.num_clips} clips of {FLAGS.frames_per_clip} frames, {frame_bytes / 1024:.1f} KiB per JPEG frame "
            f"(texture {FLAGS.texture:g}); medians of {FLAGS.repeats} runs; "
            f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        )
        header = f"{'reader':<15} {'workers':>7} {'clips/s':>9} {'cores used':>11} {'clips/s/core':>13} {'cores for 500 clips/s':>22}"
        print(header)
        print("-" * len(header))
        for (name, workers), (rate, cores, per_core) in rows.items():
            print(
                f"{name:<15} {workers:>7} {rate:>9.1f} {cores:>11.2f} {per_core:>13.1f} {TARGET_CLIPS_PER_S / per_core:>22.1f}"
            )
        print()
        for workers in (int(w) for w in FLAGS.workers):
            if not {"shards", "pil-dfer", "pil-ours", "shards-u8", "shards-dev"} <= set(timed):
                break
            shard, dfer, ours = rows["shards", workers][2], rows["pil-dfer", workers][2], rows["pil-ours", workers][2]
            u8, dev = rows["shards-u8", workers][2], rows["shards-dev", workers][2]
            print(
                f"workers={workers}: clips/s per core, shards-dev / pil-dfer = {dev / dfer:.2f}x, "
                f"shards / pil-dfer = {shard / dfer:.2f}x, shards-u8 / pil-dfer = {u8 / dfer:.2f}x, "
                f"shards / pil-ours = {shard / ours:.2f}x"
            )
        if FLAGS.tfds:
            print(
                f"\nthe same {FLAGS.num_clips} clips on disk (record files only): dfew shards "
                f"{sizes['shards'] / 2**20:.2f} MiB, dfew TFDS {sizes['tfds'] / 2**20:.2f} MiB "
                f"(TFDS / shards = {sizes['tfds'] / sizes['shards']:.3f})"
            )
            reads = _record_reads(dfew_shards, dfew_tfds)
            print(
                f"one record read (no decoding): dfew shards {reads['shards']:.0f} records/s, dfew TFDS "
                f"{reads['tfds']:.0f} records/s (tfds parses its example proto; grace_jax re-joins the frames)"
            )
            for workers in (int(w) for w in FLAGS.workers):
                if not {"dfew-tfds", "dfew-shards", "dfew-tfds-dev", "dfew-shards-dev"} <= set(timed):
                    break
                host = rows["dfew-tfds", workers][0] / rows["dfew-shards", workers][0]
                dev = rows["dfew-tfds-dev", workers][0] / rows["dfew-shards-dev", workers][0]
                print(
                    f"workers={workers}: clips/s, dfew-tfds / dfew-shards = {host:.2f}x, "
                    f"dfew-tfds-dev / dfew-shards-dev = {dev:.2f}x"
                )
        if "shards-dev" not in timed:
            return
        gflop, ms = _device_work(readers["shards-dev"](0))
        print(
            f"\nshards-dev leaves to the accelerator: crop/resize/flip + normalization, {gflop:.2f} GFLOP per clip "
            f"(XLA cost analysis); {ms:.0f} ms per batch of {FLAGS.batch_size} on this CPU (median of 5)"
        )
    finally:
        if FLAGS.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
