"""Checkpoint loading: Hugging Face directories, OpenAI state dicts, and the errors on bad input."""

import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import clip_fixtures  # noqa: E402

from grace_jax.models import clip as clip_lib  # noqa: E402
from grace_jax.models import clip_checkpoint  # noqa: E402

TINY = clip_lib.clip_config("tiny")


def _hf_to_openai(state: dict) -> dict:
    """The inverse of the name map, written independently of the code under test."""
    out = {}
    for key, value in state.items():
        if "position_ids" in key:
            continue
        k = key
        for hf, oa in [
            ("vision_model.embeddings.patch_embedding.", "visual.conv1."),
            ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
            ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
            ("vision_model.pre_layrnorm.", "visual.ln_pre."),
            ("vision_model.post_layernorm.", "visual.ln_post."),
            ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
            ("text_model.encoder.layers.", "transformer.resblocks."),
            ("text_model.embeddings.token_embedding.", "token_embedding."),
            ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
            ("text_model.final_layer_norm.", "ln_final."),
            (".layer_norm1.", ".ln_1."),
            (".layer_norm2.", ".ln_2."),
            (".mlp.fc1.", ".mlp.c_fc."),
            (".mlp.fc2.", ".mlp.c_proj."),
            (".self_attn.out_proj.", ".attn.out_proj."),
        ]:
            k = k.replace(hf, oa)
        if k == "visual_projection.weight":
            out["visual.proj"] = value.T
        elif k == "text_projection.weight":
            out["text_projection"] = value.T
        elif ".self_attn.q_proj." in k:
            leaf = k.rsplit(".", 1)[1]
            prefix = k.split(".self_attn.")[0]
            parts = [state[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"{prefix}.attn.in_proj_{leaf}"] = torch.cat(parts, 0)
        elif ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            continue
        else:
            out[k] = value
    return out


def _outputs(model, images, ids):
    cls, patches = model.encode_image(jnp.asarray(images))
    eot, tokens = model.encode_text(jnp.asarray(ids))
    return [np.asarray(x) for x in (cls, patches, eot, tokens)]


# OpenAI's loader infers heads as width // 64, so its checkpoints follow that rule.
OPENAI_SMALL = clip_lib.CLIPConfig(
    clip_lib.VisionConfig(image_size=32, patch_size=8, width=128, layers=2, heads=2, mlp_dim=256),
    clip_lib.TextConfig(vocab_size=1024, width=128, layers=2, heads=2, mlp_dim=256, eos_token_id=1023),
    64,
)


def _scripted(state: dict, path: str) -> None:
    """Saves tensors as a TorchScript archive, the container OpenAI ships its models in."""
    root = torch.nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        module.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(path)


@pytest.mark.slow
@pytest.mark.parametrize("container", ["state_dict", "torchscript"])
def test_openai_checkpoint_loads_to_the_same_model(tmp_path, container):
    reference = clip_fixtures.write_hf_clip(str(tmp_path / "hf"), OPENAI_SMALL, seed=4)
    path = str(tmp_path / "ViT-small.pt")
    state = _hf_to_openai(reference.state_dict())
    if container == "torchscript":
        _scripted(state, path)
    else:
        torch.save(state, path)
    from_hf = clip_checkpoint.load_pretrained(str(tmp_path / "hf"))
    from_openai = clip_checkpoint.load_pretrained(path)
    assert from_openai.config == OPENAI_SMALL
    images = np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)
    ids = np.array([[1022, 5, 9, 1023, 1023], [1022, 1023, 1023, 1023, 1023]], np.int32)
    for a, b in zip(_outputs(from_hf, images, ids), _outputs(from_openai, images, ids)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_openai_resnet_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "RN50.pt")
    torch.save({"visual.conv1.weight": torch.zeros(64, 3, 3, 3), "ln_final.weight": torch.zeros(8)}, path)
    with pytest.raises(clip_checkpoint.CheckpointError, match="RN50.pt.*ResNet"):
        clip_checkpoint.load_pretrained(path)


def test_missing_tensor_names_file_and_tensor(tmp_path):
    clip_fixtures.write_hf_clip(str(tmp_path), TINY)
    path = str(tmp_path / "model.safetensors")
    tensors = safetensors.numpy.load_file(path)
    del tensors["vision_model.encoder.layers.1.mlp.fc2.bias"]
    safetensors.numpy.save_file(tensors, path)
    with pytest.raises(clip_checkpoint.CheckpointError) as err:
        clip_checkpoint.load_pretrained(str(tmp_path))
    assert "model.safetensors" in str(err.value)
    assert "vision_model.encoder.layers.1.mlp.fc2.bias" in str(err.value)


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    clip_fixtures.write_hf_clip(str(tmp_path), TINY)
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    config["text_config"]["intermediate_size"] = 96
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(clip_checkpoint.CheckpointError, match=r"model\.safetensors.*fc1.* shape"):
        clip_checkpoint.load_pretrained(str(tmp_path))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(clip_checkpoint.CheckpointError, match="config.json: file not found"):
        clip_checkpoint.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(clip_checkpoint.CheckpointError, match="model.safetensors: file not found"):
        clip_checkpoint.load_pretrained(str(tmp_path))
    with pytest.raises(clip_checkpoint.CheckpointError, match="nope.pt: file not found"):
        clip_checkpoint.load_pretrained(str(tmp_path / "nope.pt"))


def test_hub_name_fails_clearly_offline():
    with pytest.raises(clip_checkpoint.CheckpointError, match="openai/clip-vit-base-patch16"):
        clip_checkpoint.load_pretrained("openai/clip-vit-base-patch16")


def test_bf16_compute_keeps_fp32_params(tmp_path):
    clip_fixtures.write_hf_clip(str(tmp_path), TINY)
    model = clip_checkpoint.load_pretrained(str(tmp_path), dtype=jnp.bfloat16)
    assert model.vision_model.embeddings.class_embedding[...].dtype == jnp.float32
    cls, _ = model.encode_image(jnp.zeros((1, 32, 32, 3)))
    assert cls.dtype == jnp.bfloat16
