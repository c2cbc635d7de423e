"""Loading CLIP weights from Hugging Face or OpenAI checkpoints into `grace_jax.models.clip.CLIP`.

grace_jax's module tree uses Hugging Face's names, so the map is mechanical: the path of every parameter, with
its leaf renamed (`kernel`/`scale`/`embedding` -> `weight`), is the checkpoint key, and PyTorch's
`[out, in]` linear and `[out, in, kh, kw]` conv layouts are transposed to Flax's. OpenAI's original
state-dict names are first rewritten to Hugging Face's (`openai_to_hf`).

Tensors are read with safetensors' numpy API: no torch at run time for Hugging Face checkpoints.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from grace_jax.infra import hub
from grace_jax.infra.errors import UserError
from grace_jax.models import clip as clip_lib

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the tensor."""


def hf_key(path: tuple) -> str:
    """Flax parameter path -> Hugging Face state-dict key."""
    *parents, leaf = (str(p) for p in path)
    return ".".join(parents + [_LEAF_NAMES.get(leaf, leaf)])


def _to_flax_layout(path: tuple, tensor: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return tensor
    if tensor.ndim == 4:  # Conv: [out, in, kh, kw] -> [kh, kw, in, out].
        return tensor.transpose(2, 3, 1, 0)
    return tensor.T  # Linear: [out, in] -> [in, out].


def config_from_hf(hf: Mapping) -> clip_lib.CLIPConfig:
    """Builds grace_jax's architecture description from a Hugging Face `config.json` dict."""
    v, t = hf.get("vision_config", {}), hf.get("text_config", {})
    dv, dt = clip_lib.VisionConfig(patch_size=32), clip_lib.TextConfig()  # transformers' defaults
    vision = clip_lib.VisionConfig(
        image_size=v.get("image_size", dv.image_size),
        patch_size=v.get("patch_size", dv.patch_size),
        width=v.get("hidden_size", dv.width),
        layers=v.get("num_hidden_layers", dv.layers),
        heads=v.get("num_attention_heads", dv.heads),
        mlp_dim=v.get("intermediate_size", dv.mlp_dim),
        hidden_act=v.get("hidden_act", dv.hidden_act),
        layer_norm_eps=v.get("layer_norm_eps", dv.layer_norm_eps),
    )
    text = clip_lib.TextConfig(
        vocab_size=t.get("vocab_size", dt.vocab_size),
        context_length=t.get("max_position_embeddings", dt.context_length),
        width=t.get("hidden_size", dt.width),
        layers=t.get("num_hidden_layers", dt.layers),
        heads=t.get("num_attention_heads", dt.heads),
        mlp_dim=t.get("intermediate_size", dt.mlp_dim),
        eos_token_id=t.get("eos_token_id", dt.eos_token_id),
        hidden_act=t.get("hidden_act", dt.hidden_act),
        layer_norm_eps=t.get("layer_norm_eps", dt.layer_norm_eps),
    )
    return clip_lib.CLIPConfig(vision, text, hf.get("projection_dim", 512))


def build_from_tensors(
    config: clip_lib.CLIPConfig,
    get_tensor: Callable[[str], np.ndarray | None],
    *,
    source: str,
    dtype=jnp.float32,
    remat: bool = False,
) -> clip_lib.CLIP:
    """Builds a `CLIP` whose every parameter is `get_tensor(hf_key)` (None when absent).

    The model is traced abstractly first, so no random initialisation is spent on ViT-L.
    """
    abstract = nnx.eval_shape(lambda: clip_lib.CLIP(config, rngs=nnx.Rngs(0), dtype=dtype, remat=remat))
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    leaves = []
    for path, variable in flat:
        key = hf_key(path)
        tensor = get_tensor(key)
        if tensor is None:
            raise CheckpointError(f"{source}: tensor {key!r} is missing.")
        tensor = _to_flax_layout(path, np.asarray(tensor))
        expected = tuple(variable.shape)
        if tensor.shape != expected:
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {tensor.shape} (in Flax layout), the model expects {expected}."
            )
        leaves.append((path, variable.replace(jnp.asarray(tensor, variable.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _safetensors_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(directory, n) for n in names]
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(single):
        return [single]
    hint = ""
    if os.path.exists(os.path.join(directory, "pytorch_model.bin")):
        hint = (
            " It has pytorch_model.bin only: re-save it with transformers' "
            "`CLIPModel.from_pretrained(dir).save_pretrained(dir)` to get safetensors."
        )
    raise CheckpointError(f"{single}: file not found.{hint}")


def _load_hf_directory(directory: str, *, dtype, remat) -> clip_lib.CLIP:
    from safetensors import safe_open

    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise CheckpointError(f"{config_path}: file not found (expected a Hugging Face CLIP dir).")
    with open(config_path) as f:
        try:
            config = config_from_hf(json.load(f))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_path}: not valid JSON ({e}).") from e
    files = _safetensors_files(directory)
    handles = [safe_open(path, framework="np") for path in files]
    where = {key: h for h in handles for key in h.keys()}

    def get_tensor(key):
        return where[key].get_tensor(key) if key in where else None

    return build_from_tensors(config, get_tensor, source=" + ".join(files), dtype=dtype, remat=remat)


# OpenAI name (regex) -> Hugging Face name; applied to every key of an OpenAI state dict.
_OPENAI_RENAMES = [
    (r"^visual\.conv1\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual\.class_embedding$", "vision_model.embeddings.class_embedding"),
    (r"^visual\.positional_embedding$", "vision_model.embeddings.position_embedding.weight"),
    (r"^visual\.ln_pre\.", "vision_model.pre_layrnorm."),
    (r"^visual\.ln_post\.", "vision_model.post_layernorm."),
    (r"^visual\.transformer\.resblocks\.", "vision_model.encoder.layers."),
    (r"^transformer\.resblocks\.", "text_model.encoder.layers."),
    (r"^token_embedding\.", "text_model.embeddings.token_embedding."),
    (r"^positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^ln_final\.", "text_model.final_layer_norm."),
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
    (r"\.attn\.out_proj\.", ".self_attn.out_proj."),
]


def openai_to_hf(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rewrites an OpenAI CLIP (ViT) state dict into Hugging Face names and layouts."""
    out = {}
    for key, value in state.items():
        value = np.asarray(value)
        if key in ("input_resolution", "context_length", "vocab_size"):
            continue
        if key == "visual.proj":  # OpenAI multiplies x @ proj; Hugging Face stores [out, in].
            out["visual_projection.weight"] = value.T
            continue
        if key == "text_projection":
            out["text_projection.weight"] = value.T
            continue
        new = key
        for pattern, repl in _OPENAI_RENAMES:
            new = re.sub(pattern, repl, new)
        if new.endswith(".attn.in_proj_weight") or new.endswith(".attn.in_proj_bias"):
            prefix, leaf = new.rsplit(".attn.in_proj_", 1)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
                out[f"{prefix}.self_attn.{name}.{leaf}"] = part
            continue
        out[new] = value
    return out


def config_from_openai(state: Mapping[str, np.ndarray], source: str) -> clip_lib.CLIPConfig:
    """Reads the architecture off the tensor shapes, as OpenAI's own `build_model` does."""
    if "visual.class_embedding" not in state:
        raise CheckpointError(
            f"{source}: no 'visual.class_embedding'; only OpenAI's ViT CLIP models are supported (not the ResNet ones)."
        )

    def count_layers(prefix):
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        return len({m.group(1) for k in state if (m := pattern.match(k))})

    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    text_width = state["ln_final.weight"].shape[0]
    vocab = state["token_embedding.weight"].shape[0]
    vision = clip_lib.VisionConfig(
        image_size=patch * grid,
        patch_size=patch,
        width=width,
        layers=count_layers("visual.transformer.resblocks."),
        heads=width // 64,  # OpenAI's rule; head count is not recoverable from the weights.
        mlp_dim=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
    )
    text = clip_lib.TextConfig(
        vocab_size=vocab,
        context_length=state["positional_embedding"].shape[0],
        width=text_width,
        layers=count_layers("transformer.resblocks."),
        heads=text_width // 64,
        mlp_dim=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        eos_token_id=vocab - 1,  # OpenAI's <|endoftext|> is the last id of its vocabulary.
    )
    return clip_lib.CLIPConfig(vision, text, state["text_projection"].shape[1])


def _load_openai(path: str, *, dtype, remat) -> clip_lib.CLIP:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path}: reading OpenAI .pt checkpoints needs torch installed.") from e
    try:
        state = torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:  # Not TorchScript: a plain pickled state dict.
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- torch raises many types for a bad file.
            raise CheckpointError(f"{path}: not a readable OpenAI CLIP checkpoint ({e}).") from e
    state = {k: v.float().numpy() for k, v in state.items()}
    config = config_from_openai(state, path)
    hf_state = openai_to_hf(state)
    return build_from_tensors(config, hf_state.get, source=path, dtype=dtype, remat=remat)


def check_source(path_or_name: str) -> None:
    """Raises CheckpointError, before anything is loaded, for a local checkpoint that is not there:
    a missing .pt file, a missing folder, a folder without Hugging Face CLIP files. Hub names pass
    (whether they can be fetched shows when they are)."""
    if os.path.isdir(path_or_name):
        config_path = os.path.join(path_or_name, "config.json")
        if not os.path.exists(config_path):
            raise CheckpointError(f"{config_path}: file not found (expected a Hugging Face CLIP dir).")
        _safetensors_files(path_or_name)
    elif path_or_name.endswith((".pt", ".pth")):
        if not os.path.exists(path_or_name):
            raise CheckpointError(f"{path_or_name}: file not found.")
    elif os.path.sep in path_or_name and not hub.HUB_NAME.fullmatch(path_or_name):
        # More than `owner/name`: a path, and it does not exist. (`owner/name` is a hub name.)
        raise CheckpointError(f"{path_or_name}: no such directory or checkpoint file.")


def load_pretrained(path_or_name: str, *, dtype=jnp.float32, remat: bool = False) -> clip_lib.CLIP:
    """Returns a `CLIP` holding pretrained weights.

    Args:
      path_or_name: a directory in the Hugging Face layout (`config.json` + `model.safetensors`, as
        `CLIPModel.save_pretrained` writes it), an OpenAI `.pt` checkpoint (needs torch), or a hub
        name such as `openai/clip-vit-base-patch16` (from the hub cache, or downloaded where the hub
        can be reached; otherwise a CheckpointError at once: `grace_jax.infra.hub`).
      dtype: compute dtype; parameters stay float32.
      remat: rematerialise transformer blocks in the backward pass.

    Raises:
      CheckpointError: a missing file, a missing tensor or a shape mismatch; the message names the
        file and the tensor.
    """
    check_source(path_or_name)
    if os.path.isdir(path_or_name):
        return _load_hf_directory(path_or_name, dtype=dtype, remat=remat)
    if path_or_name.endswith((".pt", ".pth")):
        return _load_openai(path_or_name, dtype=dtype, remat=remat)
    try:
        directory = hub.snapshot(path_or_name, "model.clip.init", hub.CLIP_FILES)
    except hub.HubError as e:
        raise CheckpointError(str(e)) from None
    return _load_hf_directory(directory, dtype=dtype, remat=remat)
