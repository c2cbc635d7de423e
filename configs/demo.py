r"""Demo: a tiny GRACE trained from scratch on SynthFER, on CPU, with nothing downloaded.

  python -m grace_jax.main --config=configs/demo.py --workdir=runs/demo

SynthFER (drawn faces whose expression unfolds over the clip, plus distracting motion) is generated
into <workdir>/synthfer on the first run. The CLIP towers are the `tiny` variant with random weights
and the built-in tiny vocabulary, so every learning rate is that of a model trained from scratch.
Takes a few minutes on two CPU cores.
"""

from grace_jax.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    m = c.model
    m.clip.variant = "tiny"
    m.clip.init = base.RANDOM_INIT  # from scratch, by name: nothing to download
    m.clip.tokenizer = "builtin:tiny"
    m.num_classes = 7  # SynthFER's (0 would take it from the data as well; models built without data need it)
    m.num_frames = 8
    m.prompt.n_ctx = 4
    m.temporal.heads = 4
    m.temporal.dim_head = 8
    m.temporal.mlp_dim = 64
    m.cate.heads = 4
    m.motion.top_k = 32  # OT over the 4 most weighted of each frame's 36 patch tokens: faster steps, sharper maps.
    m.logit_scale = 10.0  # Random text features are far from CLIP's; a softer scale trains stabler.

    c.data.dir = ""  # Empty: SynthFER is generated under the workdir.
    c.data.synth_train_clips = 1400
    c.data.synth_test_clips = 350
    c.data.image_size = 48  # SynthFER's native size; the tiny ViT interpolates its positions.
    c.data.crop_scale = (0.8, 1.0)  # Faces fill the frame: tiny crops would cut the expression off.
    c.data.num_workers = 0

    o = c.optim
    o.batch_size = 32
    o.num_epochs = 15
    o.lr_decay_epochs = (10, 13)
    o.warmup_steps = 20
    # From scratch: AdamW on every module, the random text tower included.
    o.optimizer = "adamw"
    o.weight_decay = 1e-4
    o.groups = ((".*", 1e-3),)

    c.train.log_every_steps = 10
    c.train.eval_every_epochs = 5
    c.train.ckpt_every_steps = 100
    return c
