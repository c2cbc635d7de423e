"""Base configuration: full GRACE on DFEW-style data with ViT-B/16 (pure data).

Numbers the GRACE paper does not state are defaults documented here, taken from DFER-CLIP (BMVC 2023)
for the CLIP video pipeline and training recipe and from PLOT (ICLR 2023) for token-level Sinkhorn.

Run:
  python -m grace_jax.main --config=configs/base.py --workdir=runs/base \\
      --config.data.dir=/data/shards/dfew_fold1
CLIP starts from OpenAI's pretrained weights of `model.clip.variant` (`model.clip.init`, a Hugging Face
hub name; `OPENAI_CLIP` below); `--config.model.clip.init=/path/folder` (or an OpenAI .pt) reads them
from disk, and `--config.model.clip.init=random` starts from random weights (said in the log).
Every field can be overridden, e.g. --config.model.ot.epsilon=0.05 --config.model.motion.enabled=False.
The ablations (configs/ablation.py:<variant>, configs/dferclip.py) derive from this file.
"""

from __future__ import annotations

import ml_collections

# OpenAI's pretrained CLIP of each variant, by its Hugging Face hub name: what `model.clip.init` starts
# from in every dataset config. `tiny` has none (the demo and tests use random weights).
OPENAI_CLIP = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
}
# The spelling of "no pretrained weights" in `model.clip.init` (an empty init is an error: a forgotten
# init must not train from random weights in silence).
RANDOM_INIT = "random"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg  # the base config has no variants
    c = ml_collections.ConfigDict()

    m = c.model = ml_collections.ConfigDict()
    m.clip = ml_collections.ConfigDict()
    # tiny | ViT-B/32 | ViT-B/16 | ViT-L/14. ViT-B/16 is the choice for full GRACE here (finer patches for
    # token-level OT); DFER-CLIP uses ViT-B/32 (configs/dferclip.py).
    m.clip.variant = "ViT-B/16"
    # The weights CLIP starts from: a hub name (OpenAI's of `variant` by default), a Hugging Face CLIP
    # folder, an OpenAI .pt file, or "random" (RANDOM_INIT). Change it with `variant`.
    m.clip.init = OPENAI_CLIP[m.clip.variant]
    m.clip.tokenizer = ""  # tokenizer dir or hub name; "" = the same as init (needed with "random")
    # compute dtype: auto | float32 | bfloat16 (params stay float32). auto: bfloat16 on GPU/TPU,
    # float32 on CPU (where XLA's bf16 matmul is not faster).
    m.clip.dtype = "auto"
    m.clip.remat = False  # rematerialise ViT blocks to save activation memory
    # CLIP sizes as data ({"vision": {...}, "text": {...}, "projection_dim": D}, see
    # models/clip.py:config_to_dict); wins over `variant`. Set by grace_jax.convert and grace_jax.export
    # for models whose sizes are not a named variant; None = `variant`.
    m.clip.architecture = None
    m.num_frames = 16  # DFER-CLIP: 16 segments, one frame each
    # 0: as many as the data has (data.dir's manifest, SynthFER's 7; grace_jax/text/class_set.py). The
    # dataset configs set 7 (DFEW, FERV39k) or 11 (MAFW).
    m.num_classes = 0
    # Overrides grace_jax.text.class_cues names ("" keeps a built-in one); empty with data of its own
    # classes (data_prep --dataset=folder): the manifest's names.
    m.class_names = ()
    m.class_cues = ()  # overrides the FACS cue sentences likewise
    m.logit_scale = 100.0  # DFER-CLIP divides cosine similarities by 0.01 (fixed, not learned)

    m.prompt = ml_collections.ConfigDict()
    m.prompt.n_ctx = 8  # DFER-CLIP: 8 learnable context tokens
    m.prompt.class_specific = True  # DFER-CLIP: class-specific contexts
    m.prompt.init_std = 0.02  # CoOp / DFER-CLIP context initialisation
    # What follows the contexts: "name" (class name + ".") or "cue" (the class's cue sentence,
    # DFER-CLIP's class_descriptor prompts). Ours: "name", because CATE already feeds the cues in
    # as the fine text; the dferclip ablation uses "cue" as DFER-CLIP's scripts do.
    m.prompt.text = "name"
    # Per class, the token ids of that text ([SOT] .. [EOT]), used instead of tokenising it: then no
    # tokenizer is needed and class_names/class_cues are for display. Set by grace_jax.convert (ids
    # recovered from a DFER-CLIP checkpoint) and grace_jax.export; None = tokenise.
    m.prompt.token_ids = None

    m.temporal = ml_collections.ConfigDict()
    m.temporal.depth = 1  # DFER-CLIP: one temporal transformer layer
    m.temporal.heads = 8
    m.temporal.dim_head = 64
    m.temporal.mlp_dim = 1024

    m.motion = ml_collections.ConfigDict()
    m.motion.enabled = True
    # learned: a head over each token's feature difference and motion contrast, trained end to end,
    # starting from the fixed weighting (grace_jax/models/motion.py); fixed: softmax of the motion
    # itself (the ablation: it follows whatever moves most).
    m.motion.weighting = "learned"
    m.motion.hidden = 64  # width of the learned head
    m.motion.mode = "pixel"  # pixel | feature: the motion measure of the fixed weighting
    # robust: motion divided by the median over frames of each frame's maximum, capped at 1, so one
    # outlier frame pair (a crop jump, a flash) cannot take the clip's scale; clip_max: the old way.
    m.motion.normalize = "robust"
    m.motion.tau = 0.1  # softmax temperature, in units of the clip's strong patch motion
    # Uniform mixing: static regions keep this share of the mass in total (0.02 localized better than
    # 0.1 on hard SynthFER, docs: model).
    m.motion.alpha = 0.02
    m.motion.pool = True  # motion-weighted patch pooling added to CLS (zero-init tanh gate)
    # Keep the k most weighted tokens for OT, k // T from every frame (0 = all T*P tokens; needs
    # motion: uniform weights have nothing to choose by).
    m.motion.top_k = 0

    m.cate = ml_collections.ConfigDict()
    m.cate.enabled = True
    m.cate.heads = 8  # cross-attention heads of the refinement
    m.cate.captions = False  # per-clip captions (MAFW descriptions / captions file) for alignment
    # Caption OT size: caption tokens kept (the text tower is causal: the kept tokens' features are
    # the full caption's) and visual tokens per clip (as motion.top_k; 0 = all). Every clip meets
    # every caption of the batch (B x B problems), so these bound its memory.
    m.cate.caption_tokens = 32
    m.cate.caption_top_k = 256
    # Per class, the cue's token ids, as prompt.token_ids (default: the prompt ids when prompt.text is
    # "cue"); None = tokenise.
    m.cate.token_ids = None

    m.ot = ml_collections.ConfigDict()
    m.ot.enabled = True
    # Entropic regularisation. relative_epsilon: in units of each problem's cost standard deviation
    # (the plan's sharpness then does not depend on the features' cosine scale; chosen by the sweep in
    # docs); False: absolute, on the 1 - cos cost (PLOT: 0.1).
    m.ot.epsilon = 0.5
    m.ot.relative_epsilon = True
    # Visual side: 1.0 = balanced, the motion weights are a hard marginal and every class's map is
    # the motion weights again (the ablation); < 1 = semi-relaxed (ott's tau_b): a visual token
    # receives prior^tau * (text affinity)^(1 - tau), so each class puts its mass on its own tokens.
    m.ot.tau_visual = 0.5
    m.ot.max_iterations = 100  # PLOT: 100 Sinkhorn iterations
    m.ot.threshold = 1e-2  # L1 marginal error to stop at (PLOT: 1e-2)
    m.ot.inner_iterations = 10  # iterations between convergence checks
    m.ot.implicit = True  # implicit differentiation; False = unroll the iterations
    m.ot.fusion_weight = 0.5  # logits = (1 - w) * global + w * OT

    m.loss = ml_collections.ConfigDict()
    m.loss.ce_weight = 1.0  # CE on the fused logits
    m.loss.ot_weight = 0.5  # lambda_ot: CE on the OT logits alone (0 switches it off)
    # CE on the motion-pooled tokens (learned weighting only): what teaches the weighting which motion
    # tells the classes apart.
    m.loss.motion_weight = 0.5
    m.loss.align_weight = 0.1  # lambda_align: clip-caption contrastive (needs cate.captions)
    m.loss.align_scale = 100.0
    m.loss.label_smoothing = 0.0

    d = c.data = ml_collections.ConfigDict()
    d.dir = ""  # ArrayRecord shards written by data_prep
    # Or a TFDS dataset prepared by data_prep.tfds_builders (e.g. "dfew/fold_3"; wins over `dir`), in
    # `tfds_dir` ("" = tfds's default data folder).
    d.tfds = ""
    d.tfds_dir = ""
    d.train_split = "train"
    d.eval_split = "test"
    d.image_size = 224
    d.num_frames = m.get_ref("num_frames")
    d.num_workers = 4
    d.eval_batch_size = 0  # 0: optim.batch_size
    d.crop_scale = (0.08, 1.0)  # random resized crop area range (DFER-CLIP's GroupRandomSizedCrop)
    d.flip_probability = 0.5
    # Model input scale. "clip": CLIP's mean/std (ours, what CLIP was pretrained on); "unit": frames / 255
    # in [0, 1] with no mean/std, what DFER-CLIP's loaders feed (dataloader/video_transform.py:
    # ToTorchFormatTensor divides by 255 and no GroupNormalize follows in video_dataloader.py).
    d.normalize = "clip"
    # "grace" (ours): torchvision-style random resized crop (aspect log-uniform in [3/4, 4/3]), flip;
    # eval centre square. "dferclip": DFER-CLIP's GroupRandomSizedCrop (aspect uniform in [3/4, 4/3],
    # width/height swapped with p=1/2, 10 tries, then shorter-side resize + random crop) and flip; eval
    # resizes the whole frame (GroupResize; dataloader/video_transform.py, video_dataloader.py).
    d.augment = "grace"
    # Brightness jitter b (factor uniform in [max(0, 1-b), 1+b], one per clip, before the crop; 0 = off).
    # DFER-CLIP: 0.5 for DFEW (ColorJitter(brightness=0.5) in video_dataloader.py's train_data_loader).
    d.brightness = 0.0
    # Rotation by an angle uniform in [-d, d] degrees, one per clip, before the crop (PIL rotate: nearest,
    # black corners; 0 = off). DFER-CLIP: 4 for FERV39k (RandomRotation(4) in train_data_loader).
    # Both apply under either `augment`.
    d.rotation_degrees = 0.0
    # True: hosts only decode frames; the crop, resize and flip run inside the jitted train step
    # (benchmarks/input_pipeline.py). False: PIL does them on the host.
    d.augment_on_device = True
    # > 0 with an empty `dir`: generate SynthFER with this many clips under <workdir>/synthfer.
    d.synth_train_clips = 0
    d.synth_test_clips = 0
    # SynthFER's irrelevant motion: "standard" (head drift, zoom, blinks, flicker) or "hard" (also
    # camera shake, face-crop jumps, talking-like mouth motion, lighting flashes).
    d.synth_variant = "standard"

    o = c.optim = ml_collections.ConfigDict()
    o.optimizer = "sgd"
    o.momentum = 0.9
    o.weight_decay = 1e-4
    o.batch_size = 48  # the global batch of one optimizer step (DFER-CLIP: 48)
    # The step's gradient is summed over this many micro-batches of batch_size / grad_accum_steps
    # clips, one after the other: the same step (grace_jax/steps.py accumulated_grads) in a fraction
    # of the activation memory. batch_size must divide into micro-batches that split evenly over the
    # devices. Before step 1 the trainer checks that the step fits the device memory and, when it
    # does not, names a setting that does (train.memory_check).
    o.grad_accum_steps = 1
    o.num_epochs = 50
    o.num_train_steps = -1  # > 0 overrides num_epochs
    o.lr_decay_epochs = (30, 40)  # epochs at which every lr is multiplied by lr_decay
    o.lr_decay = 0.1
    o.warmup_steps = 0  # DFER-CLIP uses none
    # Parameter groups: the first pattern (regex on the "/"-joined parameter path) that matches
    # decides. lr 0 freezes. Defaults from DFER-CLIP: visual 1e-5, new modules 1e-2, prompts 1e-3,
    # text encoder frozen.
    o.groups = (
        ("clip/text_model/.*|clip/text_projection/.*|clip/logit_scale", 0.0),
        ("clip/vision_model/.*|clip/visual_projection/.*", 1e-5),
        ("prompts/.*", 1e-3),
        (".*", 1e-2),
    )

    t = c.train = ml_collections.ConfigDict()
    t.log_every_steps = 50
    t.eval_every_epochs = 1
    t.eval_every_steps = 0  # > 0 overrides eval_every_epochs
    t.ckpt_every_steps = 1000
    t.max_checkpoints = 2
    # A step whose loss or gradient norm is not finite stops the run (grace_jax/run/stops.py: one line
    # naming the step and the last good checkpoint; nothing non-finite is saved). > 0: up to that many
    # such steps (counted from this command's start) are skipped instead, with no update applied.
    t.max_nonfinite_steps = 0
    # Before step 1, compare the compiled train step's memory per device (XLA's memory_analysis) with
    # the device's (its allocator's limit; none on CPU) and stop with the setting that fits if it does
    # not. device_memory_gib > 0 checks against that many GiB instead (a smaller card, or headroom).
    t.memory_check = True
    t.device_memory_gib = 0.0
    # jax's persistent compilation cache: "auto" = <workdir>/jax_cache on GPU/TPU (a restart after a
    # preemption skips recompiling the steps), off on CPU (README: XLA:CPU notes); a folder or gs://
    # path; "" = off.
    t.compilation_cache = "auto"

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # -1: all remaining devices
    c.mesh.axes = ("data", "fsdp", "model")

    c.seed = 0
    # Several processes (multi-host TPU slices, SLURM, one process per host): grace_jax/infra/distributed.py.
    # Distributed when `enabled`, or `coordinator_address`/`num_processes` (or the env vars
    # JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES) are set; jax auto-detects what is left unset on
    # Cloud TPU, SLURM, Open MPI and GKE. Unset values also come from JAX_PROCESS_ID.
    dist = c.distributed = ml_collections.ConfigDict()
    dist.enabled = False  # True: call jax.distributed.initialize() first
    dist.coordinator_address = ""  # "host:port" of process 0; "" = env or auto-detection
    dist.num_processes = 0  # 0 = env or auto-detection
    dist.process_id = -1  # -1 = env or auto-detection
    dist.coordinator_bind_address = ""  # "" = jax's default, all interfaces ([::]:port)
    dist.initialization_timeout_s = 300  # how long to wait for every process to connect
    dist.heartbeat_timeout_s = 100  # a silent peer is declared dead (and the job ends) after this
    dist.shutdown_timeout_s = 300  # at exit, how long process 0 waits for the others
    dist.cpu_collectives = "gloo"  # XLA:CPU cross-process collectives (gloo | mpi); CPU-only jobs
    return c
