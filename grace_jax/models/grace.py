"""GRACE: CLIP video pipeline + motion weighting + CATE + token-level OT (docs/model.md).

Forward pass for B clips of T frames, C classes (D = CLIP joint dim, P patches per frame):

  frames --CLIP ViT--> cls [B,T,D], patches [B,T,P,D]
  motion weights w [B,T,P]  (learned from feature differences, or the fixed pixel prior; uniform
                             when motion is off)
  frame features cls + tanh(g) * pool_w(patches)  --temporal transformer--> video [B,D]
  coarse prompts (learned contexts + class name or cue) --text tower--> class embeddings [C,D], tokens
  CATE: frozen cue tokens refined by the coarse tokens; importance = text marginal; pooled cue [C,D]
  global logits = scale * cos(video, class embedding)
  OT logits     = scale * sum(P * cos) between each class's text tokens and the clip's visual tokens:
                  text marginal exact, visual side semi-relaxed around the prior w (ot.tau_visual < 1),
                  so the mass each visual token receives depends on the class: the class's map
  logits        = (1 - fusion) * global + fusion * OT

With motion, CATE and OT all off this is DFER-CLIP exactly (fixed scale 100, class-specific contexts,
one temporal layer; with ``prompt.text="cue"`` its class-descriptor prompts; see
configs/dferclip.py and tests/models/dferclip_parity_test.py). The model is an NNX module
whose forward is a pure function of its state, so it runs under ``nnx.split`` / ``nnx.merge`` inside
``jax.jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grace_jax.models import alignment, cate, clip_checkpoint, motion, prompts, temporal
from grace_jax.models import clip as clip_lib
from grace_jax.text import class_cues as class_cues_lib

__all__ = ["GRACE", "build_model", "class_tokens_from_config", "compute_dtype", "needs_tokenizer"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# model.clip.dtype="auto": bf16 where the matrix units run it at several times the fp32 rate (GPU
# tensor cores, TPU MXUs); fp32 on CPU, where XLA's bf16 matmul is no faster than fp32 (README).
_AUTO_DTYPES = {"gpu": "bfloat16", "tpu": "bfloat16"}


def compute_dtype(name: str, platform: str | None = None):
    """The compute dtype `model.clip.dtype` names; "auto" resolves by `platform` (default: jax's
    default backend): bfloat16 on GPU and TPU, float32 elsewhere. Parameters stay float32."""
    if name == "auto":
        platform = platform or jax.default_backend()
        name = _AUTO_DTYPES.get(platform, "float32")
    if name not in _DTYPES:
        raise ValueError(f"model.clip.dtype={name!r}: choose auto, float32 or bfloat16")
    return _DTYPES[name]


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


class GRACE(nnx.Module):
    """The model. ``cfg`` is the ``model`` section of a config (see ``configs/base.py``)."""

    def __init__(
        self,
        cfg: Any,
        class_tokens: prompts.ClassTokens,
        *,
        rngs: nnx.Rngs,
        clip: clip_lib.CLIP | None = None,
    ):
        dtype = compute_dtype(cfg.clip.dtype)
        if clip is None:
            clip = clip_lib.CLIP(clip_lib.config_for(cfg.clip), rngs=rngs, dtype=dtype, remat=cfg.clip.remat)
        self.clip = clip
        dim = clip.config.projection_dim
        self.patch_size = clip.config.vision.patch_size
        self.num_classes = int(class_tokens.prompt_ids.shape[0])
        if self.num_classes != cfg.num_classes:
            raise ValueError(f"{self.num_classes} class texts but num_classes={cfg.num_classes}")
        self.logit_scale = float(cfg.logit_scale)
        self.use_motion = bool(cfg.motion.enabled)
        self.use_cate = bool(cfg.cate.enabled)
        self.use_ot = bool(cfg.ot.enabled)
        self.use_captions = bool(cfg.cate.captions)
        self.motion_cfg = dict(cfg.motion)
        self.ot_cfg = dict(cfg.ot)
        self.cate_cfg = dict(cfg.cate)

        self.prompts = prompts.PromptLearner(
            class_tokens.prompt_ids,
            class_tokens.prompt_eot,
            n_ctx=cfg.prompt.n_ctx,
            width=clip.config.text.width,
            class_specific=cfg.prompt.class_specific,
            init_std=cfg.prompt.init_std,
            rngs=rngs,
        )
        self.temporal = temporal.TemporalTransformer(
            dim,
            cfg.num_frames,
            depth=cfg.temporal.depth,
            heads=cfg.temporal.heads,
            dim_head=cfg.temporal.dim_head,
            mlp_dim=cfg.temporal.mlp_dim,
            dtype=dtype,
            rngs=rngs,
        )
        self.learned_motion = self.use_motion and cfg.motion.weighting == "learned"
        if self.learned_motion:
            self.motion_head = motion.MotionHead(dim, hidden=cfg.motion.hidden, dtype=dtype, rngs=rngs)
        else:
            self.motion_head = None
        if self.use_motion and cfg.motion.pool:
            # Zero-initialised so +motion starts from the DFER-CLIP function and learns the mix.
            self.motion_gate = nnx.Param(jnp.zeros(()))
        else:
            self.motion_gate = None
        if self.use_cate:
            self.cue_ids = prompts.TokenIds(
                jnp.asarray(prompts.trim(class_tokens.cue_ids, class_tokens.cue_eot), jnp.int32)
            )  # [C,Lf]
            self.cue_eot = prompts.TokenIds(jnp.asarray(class_tokens.cue_eot, jnp.int32))  # [C]
            self.cate = cate.CATE(dim, heads=cfg.cate.heads, dtype=dtype, rngs=rngs)
        else:
            self.cue_ids = self.cue_eot = self.cate = None

    # ----------------------------------------------------------------------------------------------
    def _motion(self, images: jax.Array, patches: jax.Array) -> jax.Array:
        b, t, p, _ = patches.shape
        if not self.use_motion:
            return jnp.full((b, t, p), 1.0 / (t * p), jnp.float32)
        c = self.motion_cfg
        pixel = motion.pixel_motion(images, self.patch_size)  # [B,T,P]
        if c["mode"] == "pixel":
            m = pixel
        elif c["mode"] == "feature":
            m = motion.feature_motion(patches)  # [B,T,P]
        else:
            raise ValueError(f"model.motion.mode must be 'pixel' or 'feature', got {c['mode']!r}")
        normalize = c["normalize"]
        if self.motion_head is None:
            return motion.motion_weights(m, tau=c["tau"], alpha=c["alpha"], normalize=normalize)
        prior_logit = motion.normalize_motion(m, normalize) / c["tau"]  # [B,T,P]
        return motion.mix_uniform(self.motion_head(patches, pixel, prior_logit), c["alpha"])

    def _frozen_text(self, ids: jax.Array, eot: jax.Array) -> jax.Array:
        # The text tower is frozen: no gradient needs to flow back through it for fixed texts.
        _, tokens = self.clip.encode_text(ids, eot)
        return jax.lax.stop_gradient(tokens)  # [N,L,D]

    def _ot(self, text, text_mass, visual, visual_mass, probe=None):
        c = self.ot_cfg
        return alignment.ot_scores(
            text.astype(jnp.float32),
            text_mass,
            visual.astype(jnp.float32),
            visual_mass,
            epsilon=c["epsilon"],
            max_iterations=c["max_iterations"],
            threshold=c["threshold"],
            inner_iterations=c["inner_iterations"],
            implicit=c["implicit"],
            relative_epsilon=c["relative_epsilon"],
            tau_b=c["tau_visual"],
            probe=probe,
        )

    def __call__(
        self,
        images: jax.Array,
        *,
        captions: jax.Array | None = None,
        caption_eot: jax.Array | None = None,
        ot_probe: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Classifies clips.

        Args:
          images: [B,T,H,W,3] float frames as ``data.normalize`` prepares them (CLIP's mean and std,
            or [0,1] for DFER-CLIP's recipe).
          captions: optional [B,L] int32 per-clip caption token ids (used when cate.captions).
          caption_eot: [B] int32 EOT positions of ``captions``.
          ot_probe: optional float32 scalar zero; the gradient with respect to it counts the OT
            problems whose gradient was non-finite and zeroed (alignment module docstring).

        Returns:
          (logits [B,C], aux) with aux["motion_weights"] [B,T,P], aux["global_logits"] [B,C],
          with the learned weighting "motion_logits" [B,C] (the weighted tokens classified), and
          with OT on: "ot_logits" [B,C]; "class_maps" [B,C,T,P], per class the transport mass each
          visual token receives (sums to 1; zero on tokens top_k left out); "ot_visual_mass"
          [B,T,P], the predicted class's map; "text_mass" [C,N]; per problem [B,C]:
          "ot_converged", "ot_iterations", "ot_error", "ot_epsilon", "ot_cost_std",
          "ot_mutual_information" (nats), "ot_visual_entropy" (nats); with captions:
          "caption_scores" and "caption_ot_iterations" [B,B] (clip x caption).
        """
        # One function on purpose: the forward reads top to bottom as the model's diagram (frames,
        # motion weighting, temporal model, prompts and CATE, global logits, OT and its class maps),
        # with the shape of every stage; the stages' own work lives in the submodules.
        b, t, h, w, ch = images.shape
        cls, patches = self.clip.encode_image(images.reshape(b * t, h, w, ch))
        d = cls.shape[-1]
        p = patches.shape[1]
        cls = cls.reshape(b, t, d)  # [B,T,D]
        patches = patches.reshape(b, t, p, d)  # [B,T,P,D]

        weights = self._motion(images, patches)  # [B,T,P]
        frames = cls
        if self.motion_gate is not None:
            pooled = motion.pool_patches(patches, weights)  # [B,T,D]
            frames = cls + jnp.tanh(self.motion_gate[...]).astype(cls.dtype) * pooled
        video = _normalize(self.temporal(frames))  # [B,D]

        class_emb, coarse_tokens, coarse_valid = self.prompts(self.clip)  # [C,D],[C,Lp,D],[C,Lp]
        coarse_keys = prompts.valid_token_mask(
            coarse_tokens.shape[1], self.prompts.eot[...], include_eot=True
        )  # [C,Lp]
        class_emb = _normalize(class_emb)
        if self.use_cate:
            cue_eot = self.cue_eot[...]
            fine = self._frozen_text(self.cue_ids[...], cue_eot)  # [C,Lf,D]
            fine_valid = prompts.valid_token_mask(fine.shape[1], cue_eot)
            text_tokens, text_mass, fine_emb = self.cate(fine, fine_valid, coarse_tokens, coarse_keys)
            class_emb = _normalize(class_emb + _normalize(fine_emb))  # [C,D]
        else:
            text_tokens = coarse_tokens  # [C,Lp,D]
            valid = coarse_valid.astype(jnp.float32)
            text_mass = valid / valid.sum(-1, keepdims=True)  # uniform over the prompt's words

        global_logits = self.logit_scale * video @ class_emb.T  # [B,C]
        aux: dict[str, jax.Array] = {"motion_weights": weights, "global_logits": global_logits}
        if self.learned_motion:
            # The clip's tokens pooled by the motion weights over all T*P (frames included), classified:
            # the weighting's own evidence, from which it learns which motion tells the classes apart
            # (loss.motion_weight; attention pooling as in multiple-instance learning).
            evidence = jnp.einsum("btp,btpd->bd", weights.astype(patches.dtype), patches)  # [B,D]
            aux["motion_logits"] = self.logit_scale * _normalize(evidence) @ class_emb.T  # [B,C]
        if not self.use_ot and not (self.use_captions and captions is not None):
            return global_logits, aux

        k = int(self.motion_cfg["top_k"] or 0)
        vis, vis_mass, vis_idx = motion.select_top_k(patches, weights, k)  # [B,K,D], [B,K], [B,K]
        logits = global_logits
        if self.use_ot:
            scores, res = self._ot(
                text_tokens[None], text_mass[None], vis[:, None], vis_mass[:, None], ot_probe
            )  # [B,C], plan [B,C,N,K]
            ot_logits = self.logit_scale * scores
            fusion = self.ot_cfg["fusion_weight"]
            logits = (1.0 - fusion) * global_logits + fusion * ot_logits
            pred = jnp.argmax(logits, axis=-1)  # [B]
            col_mass = jax.lax.stop_gradient(res.plan).sum(axis=2)  # [B,C,K] mass each token receives
            maps = jnp.zeros((b, self.num_classes, t * p), col_mass.dtype)
            maps = maps.at[
                jnp.arange(b)[:, None, None], jnp.arange(self.num_classes)[None, :, None], vis_idx[:, None, :]
            ].set(col_mass)
            maps = maps.reshape(b, self.num_classes, t, p)  # [B,C,T,P]
            stats = alignment.plan_statistics(plan=res.plan)
            aux.update(
                ot_logits=ot_logits,
                class_maps=maps,
                ot_visual_mass=jnp.take_along_axis(maps, pred[:, None, None, None], axis=1)[:, 0],
                text_mass=text_mass,
                ot_converged=res.converged,
                ot_iterations=res.n_iters,
                ot_error=res.error,
                ot_epsilon=res.epsilon,
                ot_cost_std=res.cost_std,
                ot_mutual_information=stats["mutual_information"],
                ot_visual_entropy=stats["visual_entropy"],
            )
        if self.use_captions and captions is not None:
            aux["caption_scores"], aux["caption_ot_iterations"] = self._caption_scores(
                captions, caption_eot, patches, weights, ot_probe
            )  # [B clips, B captions] each
        return logits, aux

    def _caption_scores(self, captions, caption_eot, patches, weights, probe):
        """([B clips, B captions] OT scores, each clip against every caption of the batch, and the
        Sinkhorn iterations of each problem).

        Bounded cost: captions are cut to ``cate.caption_tokens`` positions (the text tower is
        causal, so the kept tokens' features are those of the whole caption) and each clip keeps its
        ``cate.caption_top_k`` most weighted visual tokens, so a problem is at most that size whatever
        the caption's padding or the clip's token count.
        """
        if caption_eot is None:
            caption_eot = clip_lib.find_eot(captions, self.clip.config.text.eos_token_id)
        length = min(int(self.cate_cfg["caption_tokens"] or captions.shape[1]), captions.shape[1])
        cap_ids = captions[:, :length]  # [B,Lc]
        cap = jax.lax.stop_gradient(self.clip.encode_text(cap_ids, jnp.minimum(caption_eot, length - 1))[1])
        # Word tokens only (0 < position < EOT), as far as the cut keeps them.
        cap_valid = prompts.valid_token_mask(length, jnp.minimum(caption_eot, length))  # [B,Lc]
        cap_mass = (
            self.cate.importance(cap, cap_valid)
            if self.use_cate
            else cate.masked_softmax(jnp.zeros(cap_valid.shape), cap_valid)
        )  # [B,Lc]
        # A clip without a caption has no word token: an all-zero marginal never converges and would
        # keep every problem of the batch iterating; a uniform stand-in converges at once (the loss
        # masks these pairs out).
        empty = cap_valid.sum(-1, keepdims=True) == 0
        cap_mass = jnp.where(empty, 1.0 / length, cap_mass)
        k = int(self.cate_cfg["caption_top_k"] or 0)
        vis, vis_mass, _ = motion.select_top_k(patches, weights, k)  # [B,K,D], [B,K]
        scores, res = self._ot(cap[None], cap_mass[None], vis[:, None], vis_mass[:, None], probe)
        return scores, res.n_iters


def _stored_cue_rows(cfg: Any):
    """The cue token ids to use with stored prompt ids, or None when the cues must be tokenised."""
    rows = cfg.cate.token_ids
    if rows:
        return rows
    if cfg.prompt.text == "cue" or not cfg.cate.enabled:
        # The prompt texts are the cues; or CATE, the only reader of cue ids, is off.
        return cfg.prompt.token_ids
    return None


def needs_tokenizer(cfg: Any) -> bool:
    """False when ``cfg`` (the model section) stores the token ids of its class texts
    (``model.prompt.token_ids``, and ``model.cate.token_ids`` where CATE reads other cues): converted
    and exported models are built without a tokenizer, so without a download."""
    return not cfg.prompt.token_ids or _stored_cue_rows(cfg) is None


def class_tokens_from_config(cfg: Any, tokenizer) -> prompts.ClassTokens:
    """Tokenises the (possibly overridden) class names and cues of ``cfg`` (the model section).

    With ``model.prompt.token_ids`` set (per class, the ids of the text after the contexts, ``[SOT]
    .. [EOT]``; written by grace_jax.convert and grace_jax.export) those ids are used as they are and
    ``class_names``/``class_cues`` are for display only; ``model.cate.token_ids`` likewise holds the
    cue ids, which default to the prompt ids when the prompts are the cues (``prompt.text="cue"``).
    """
    if cfg.prompt.token_ids:
        cue_rows = _stored_cue_rows(cfg)
        if cue_rows is None:
            cues = class_cues_lib.class_cues(cfg.num_classes, names=list(cfg.class_names), cues=list(cfg.class_cues))
            tok = tokenizer([c.cue for c in cues])
            cue_rows = prompts.rows_from_ids(tok.ids, tok.eot_index)
        tokens = prompts.tokens_from_ids(cfg.prompt.token_ids, cue_rows, cfg.prompt.n_ctx)
        if len(tokens.prompt_ids) != cfg.num_classes or len(tokens.cue_ids) != cfg.num_classes:
            raise ValueError(
                f"model.prompt.token_ids / model.cate.token_ids hold {len(tokens.prompt_ids)} / "
                f"{len(tokens.cue_ids)} texts but num_classes={cfg.num_classes}"
            )
        return tokens
    cues = class_cues_lib.class_cues(cfg.num_classes, names=list(cfg.class_names), cues=list(cfg.class_cues))
    return prompts.tokenize_classes(
        tokenizer,
        [c.name for c in cues],
        [c.cue for c in cues],
        cfg.prompt.n_ctx,
        prompt_text=cfg.prompt.text,
    )


def build_model(cfg: Any, *, rngs: nnx.Rngs, tokenizer=None, clip: clip_lib.CLIP | None = None) -> GRACE:
    """Builds GRACE from the ``model`` config section.

    CLIP comes from ``cfg.clip.init`` (a directory or hub name of Hugging Face CLIP weights; empty for
    random weights of ``cfg.clip.architecture`` or else ``cfg.clip.variant``) unless ``clip`` is given.
    The tokenizer comes from ``cfg.clip.tokenizer`` or else ``cfg.clip.init`` unless given; none is
    needed when the config stores its token ids (``needs_tokenizer``).
    """
    dtype = compute_dtype(cfg.clip.dtype)
    # "random" (configs/base.py RANDOM_INIT) and "" (converted and exported runs, whose weights come
    # from their checkpoint) both mean: no pretrained weights to read here.
    init = "" if cfg.clip.init == "random" else cfg.clip.init
    if clip is None and init:
        clip = clip_checkpoint.load_pretrained(init, dtype=dtype, remat=cfg.clip.remat)
    if tokenizer is None and needs_tokenizer(cfg):
        from grace_jax.text.tokenizer import Tokenizer

        source = cfg.clip.tokenizer or init
        if not source:
            raise ValueError("model.clip.tokenizer (or model.clip.init) must name a CLIP tokenizer")
        tokenizer = Tokenizer.from_pretrained(source)
    tokens = class_tokens_from_config(cfg, tokenizer)
    if clip is not None and int(np.max(tokens.cue_ids)) >= clip.config.text.vocab_size:
        raise ValueError("the tokenizer's vocabulary is larger than the CLIP text tower's")
    return GRACE(cfg, tokens, rngs=rngs, clip=clip)
