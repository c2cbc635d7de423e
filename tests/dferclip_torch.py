"""DFER-CLIP (Zhao & Liu, BMVC 2023) in PyTorch, as a reference for parity tests.

Written for this project from reading DFER-CLIP's official code (zengqunzhao/DFER-CLIP: models/clip/model.py,
models/Temporal_Model.py, models/Prompt_Learner.py, models/Generate_Model.py, main.py): the same
computations and the same module tree, so ``GenerateModel(...).state_dict()`` has exactly the keys of
the official model, duplicated views included:

- ``prompt_learner.ctx`` and the buffers ``prompt_learner.token_prefix`` / ``token_suffix``;
- ``text_encoder.{positional_embedding, text_projection, transformer.*, ln_final.*}``, which are the
  CLIP text tower's own tensors seen again;
- ``image_encoder.*``, the CLIP visual tower seen again;
- ``temporal_net.*`` (``cls_token``, ``pos_embedding``, ``temporal_transformer.layers.N.{0,1}...``);
- ``clip_model_.*``: the whole OpenAI-layout CLIP (``visual.conv1``, ``visual.class_embedding``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight`` ..., ``token_embedding``, ``ln_final``,
  ``text_projection``, ``logit_scale``).

``main.py`` wraps the model in ``torch.nn.DataParallel`` (keys gain a ``module.`` prefix) before it
saves ``{'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'}``; that is left to the caller.

Sizes are configurable (``ClipSize``: ``B32`` is ViT-B/32, ``TINY`` a few-millisecond model) and
weights random. Only what DFER-CLIP's training scripts run is here: the ViT image tower (no ResNet),
the class token at the end of the prompt (``--class-token-position end``), float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "B32",
    "TINY",
    "ClipSize",
    "CLIP",
    "GenerateModel",
    "make_optimizer",
    "make_scheduler",
    "make_tokenize",
    "set_trainable",
]


# Sentences in the form of DFER-CLIP's class descriptors ("a ..., ..., and ...", each ending with its
# own period), written for the parity tests and benchmarks/train_step.py; the tiny vocabulary keeps
# them within 77 positions (grace_jax/text/class_cues.py's own cue sentences do not fit there).
DESCRIPTOR_SENTENCES = (
    "a wide smile, lifted cheeks, and creased eye corners.",
    "a drooping mouth, heavy lids, and raised inner brows.",
    "a still face, level brows, and closed lips.",
    "a hard stare, drawn brows, and pressed lips.",
    "wide eyes, a dropped jaw, and high brows.",
    "a wrinkled nose, a raised upper lip, and low brows.",
    "tense wide eyes, stretched lips, and raised brows.",
)


@dataclasses.dataclass(frozen=True)
class ClipSize:
    """An OpenAI CLIP ViT architecture; the MLPs are 4x wide, as OpenAI's blocks hard-code."""

    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    vision_heads: int | None = None  # None: OpenAI's rule, width // 64

    @property
    def heads(self) -> int:
        return self.vision_heads or self.vision_width // 64

    def replace(self, **kw) -> ClipSize:
        return dataclasses.replace(self, **kw)


B32 = ClipSize(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
TINY = ClipSize(32, 32, 2, 64, 8, 77, 1024, 64, 1, 2)


# ------------------------------------------------------------------------------ OpenAI-layout CLIP
class LayerNorm(nn.LayerNorm):
    """OpenAI's LayerNorm: computed in float32 whatever the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)  # sequence-first, packed in_proj_weight
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = LayerNorm(width)
        self.attn_mask = attn_mask  # a plain attribute, not a buffer: not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [L,N,D]
        mask = None if self.attn_mask is None else self.attn_mask.to(x.dtype)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, resolution: int, patch: int, width: int, layers: int, heads: int, out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        scale = width**-0.5
        grid = resolution // patch
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N,3,H,W] -> [N,out]
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [N,P,W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # [1+P,N,W]
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj  # only the class token is used


class CLIP(nn.Module):
    """OpenAI's CLIP (ViT image tower), with random weights.

    ``initialize_parameters`` draws what OpenAI's does; ``randomize_norms_and_biases`` then moves the
    LayerNorms and biases off their identity/zero start so a parity test cannot pass by ignoring them.
    """

    def __init__(self, size: ClipSize):
        super().__init__()
        self.context_length = size.context_length
        self.visual = VisionTransformer(
            size.image_resolution,
            size.vision_patch_size,
            size.vision_width,
            size.vision_layers,
            size.heads,
            size.embed_dim,
        )
        causal = torch.full((size.context_length, size.context_length), float("-inf")).triu_(1)
        self.transformer = Transformer(size.transformer_width, size.transformer_layers, size.transformer_heads, causal)
        self.vocab_size = size.vocab_size
        self.token_embedding = nn.Embedding(size.vocab_size, size.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(size.context_length, size.transformer_width))
        self.ln_final = LayerNorm(size.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(size.transformer_width, size.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @torch.no_grad()
    def randomize_norms_and_biases(self, scale: float = 0.1) -> CLIP:
        for name, param in self.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_"):
                param.add_(scale * torch.randn_like(param))
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype


# ------------------------------------------------------------------------------ temporal model
class TanhGELU(nn.Module):
    """The GELU DFER-CLIP's Temporal_Model.py defines: the tanh approximation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # torch's default eps 1e-5
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        # Indices 0..4 are part of the key names (net.0 and net.3 are the linears).
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            TanhGELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        if heads == 1 and dim_head == dim:
            self.to_out = nn.Identity()
        else:
            self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,N,D]
        b, n, _ = x.shape
        q, k, v = (
            t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1)
        )  # [B,H,N,Dh], heads major within each of q, k, v
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class TemporalTransformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        Residual(PreNorm(dim, Attention(dim, heads, dim_head, dropout))),
                        Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout))),
                    ]
                )
                for _ in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


class TemporalTransformerCls(nn.Module):
    """DFER-CLIP's Temporal_Transformer_Cls: class token first, positions, blocks, class output."""

    def __init__(self, num_patches, input_dim, depth, heads, mlp_dim, dim_head):
        super().__init__()
        self.num_patches, self.input_dim = num_patches, input_dim
        self.cls_token = nn.Parameter(torch.randn(1, 1, input_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, input_dim))
        self.temporal_transformer = TemporalTransformer(input_dim, depth, heads, dim_head, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,D] -> [B,D]
        b, n, _ = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.pos_embedding[:, : n + 1]
        return self.temporal_transformer(x)[:, 0]


# ------------------------------------------------------------------------------ text side
def make_tokenize(
    encode: Callable[[str], Sequence[int]], sot: int, eot: int, context_length: int = 77
) -> Callable[[str], torch.Tensor]:
    """CLIP's ``tokenize`` for one text: [1, context_length] long, SOT w.. EOT then zeros.

    ``encode`` turns a text into BPE ids without special tokens. Like CLIP's, it refuses texts that
    do not fit instead of cutting them.
    """

    def tokenize(text: str) -> torch.Tensor:
        ids = [sot, *encode(text), eot]
        if len(ids) > context_length:
            raise RuntimeError(f"Input {text} is too long for context length {context_length}")
        out = torch.zeros(1, context_length, dtype=torch.long)
        out[0, : len(ids)] = torch.tensor(ids)
        return out

    return tokenize


class TextEncoder(nn.Module):
    """The CLIP text tower on prompt embeddings; EOT = the argmax of the token ids."""

    def __init__(self, clip_model: CLIP):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
        x = (prompts + self.positional_embedding.to(self.dtype)).permute(1, 0, 2)  # [L,C,W]
        x = self.transformer(x).permute(1, 0, 2)
        x = self.ln_final(x).to(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ self.text_projection


class PromptLearner(nn.Module):
    """Learnable contexts in place of n_ctx "X" placeholder words before each class text."""

    def __init__(
        self,
        texts: Sequence[str],
        clip_model: CLIP,
        tokenize: Callable[[str], torch.Tensor],
        *,
        n_ctx: int = 8,
        class_specific: bool = True,
    ):
        super().__init__()
        n_cls = len(texts)
        width = clip_model.ln_final.weight.shape[0]
        shape = (n_cls, n_ctx, width) if class_specific else (n_ctx, width)
        ctx = torch.empty(shape, dtype=clip_model.dtype)
        nn.init.normal_(ctx, std=0.02)
        self.ctx = nn.Parameter(ctx)
        placeholders = " ".join(["X"] * n_ctx)
        # DFER-CLIP joins placeholders and class text with one space; the text keeps its own period.
        self.prompts = [placeholders + " " + t for t in texts]
        tokenized = torch.cat([tokenize(p) for p in self.prompts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized).to(clip_model.dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOT
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :, :])  # text, EOT, padding
        self.n_cls, self.n_ctx = n_cls, n_ctx
        self.tokenized_prompts = tokenized

    def forward(self) -> torch.Tensor:
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class GenerateModel(nn.Module):
    """DFER-CLIP: per-frame CLIP image features -> temporal transformer; prompts -> text tower;
    logits = cos(video, class text) / 0.01."""

    def __init__(
        self,
        texts: Sequence[str],
        clip_model: CLIP,
        tokenize: Callable[[str], torch.Tensor],
        *,
        n_ctx: int = 8,
        class_specific: bool = True,
        temporal_layers: int = 1,
        num_frames: int = 16,
        temporal_heads: int = 8,
        temporal_mlp_dim: int = 1024,
        temporal_dim_head: int = 64,
    ):
        super().__init__()
        self.input_text = list(texts)
        self.prompt_learner = PromptLearner(texts, clip_model, tokenize, n_ctx=n_ctx, class_specific=class_specific)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.text_encoder = TextEncoder(clip_model)
        self.dtype = clip_model.dtype
        self.image_encoder = clip_model.visual
        # DFER-CLIP hard-codes input_dim=512, ViT-B/32's joint width; here it follows the CLIP size.
        self.temporal_net = TemporalTransformerCls(
            num_frames,
            clip_model.text_projection.shape[1],
            temporal_layers,
            temporal_heads,
            temporal_mlp_dim,
            temporal_dim_head,
        )
        self.clip_model_ = clip_model

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # [B,T,3,H,W] in [0,1]
        n, t, c, h, w = image.shape
        feats = self.image_encoder(image.reshape(-1, c, h, w).to(self.dtype)).reshape(n, t, -1)
        video = self.temporal_net(feats)
        video = video / video.norm(dim=-1, keepdim=True)
        text = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        text = text / text.norm(dim=-1, keepdim=True)
        return video @ text.t() / 0.01


# ------------------------------------------------------------------------------ main.py's recipe
def set_trainable(model: GenerateModel) -> None:
    """main.py: freeze everything, then train parameters whose (first) name contains image_encoder,
    temporal_net or prompt_learner.

    ``named_parameters`` lists a shared tensor once, under the first name it was registered by, so
    the visual tower counts as ``image_encoder.*`` and the text tower as ``text_encoder.*`` /
    ``clip_model_.*`` (frozen).
    """
    for _, param in model.named_parameters():
        param.requires_grad = False
    for name, param in model.named_parameters():
        if "image_encoder" in name or "temporal_net" in name or "prompt_learner" in name:
            param.requires_grad = True


def make_optimizer(
    model: GenerateModel,
    *,
    lr: float = 1e-2,
    lr_image_encoder: float = 1e-5,
    lr_prompt_learner: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> torch.optim.SGD:
    """main.py's SGD: three groups (temporal, image tower, prompt contexts), shared momentum and
    weight decay (train_*.sh values as defaults)."""
    return torch.optim.SGD(
        [
            {"params": model.temporal_net.parameters(), "lr": lr},
            {"params": model.image_encoder.parameters(), "lr": lr_image_encoder},
            {"params": model.prompt_learner.parameters(), "lr": lr_prompt_learner},
        ],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int] = (30, 40)
) -> torch.optim.lr_scheduler.MultiStepLR:
    """x0.1 at the milestone epochs (``scheduler.step()`` once per epoch, as main.py does)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.1)
