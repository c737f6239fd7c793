"""BERT-family text encoders from `transformers`, seen through the FrozenEncoder interface."""

from __future__ import annotations

import hashlib

import torch
from transformers import BertConfig, BertModel

from autopmf.encoders.compat import require_layer_parts
from supernet.encoder import TextEncoder, attend, first_tensor

# What run_layer's row path calls in a BertLayer.
BERT_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output", "intermediate", "output")


class BertTextEncoder(TextEncoder):
    """A frozen `BertModel` (BERT, MiniLM, ...) with its tokenizer."""

    def __init__(self, model: BertModel, tokenizer, name: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        cfg = model.config
        self.hidden_size = cfg.hidden_size
        self.depth = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        # Texts are truncated to the space's max_text_len, and never beyond what the model or
        # its tokenizer supports (transformers sets model_max_length huge when unknown).
        limit = getattr(tokenizer, "model_max_length", None) or cfg.max_position_embeddings
        self.max_positions = min(cfg.max_position_embeddings, limit)
        require_layer_parts(model.encoder.layer, BERT_PARTS, name)
        self.freeze()

    def tokenize(self, texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
        max_len = min(max_len, self.max_positions)
        if self.tokenizer is None:
            return hashed_word_tokenize(texts, max_len, self.model.config.vocab_size)
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.embeddings(input_ids=inputs["input_ids"],
                                     token_type_ids=torch.zeros_like(inputs["input_ids"]))

    def run_layer(self, index, tokens, key_mask, rows=None):
        additive = None
        if key_mask is not None:
            # BERT's attention adds the mask to the scores (eager) or passes it to SDPA;
            # an additive [B, 1, 1, N] float mask works for both.
            additive = (~key_mask)[:, None, None, :].to(tokens.dtype)
            additive = additive * torch.finfo(tokens.dtype).min
        layer = self.model.encoder.layer[index]
        if rows is None:
            return first_tensor(layer(tokens, attention_mask=additive))
        # BertLayer on the kept rows only (post-norm): LN(x + attn), then LN(a + FFN(a)).
        kept, heads = tokens[:, rows], layer.attention.self
        mixed = attend(heads.query(kept), heads.key(tokens), heads.value(tokens),
                       self.num_heads, additive)
        attended = layer.attention.output(mixed, kept)
        return layer.output(layer.intermediate(attended), attended)

    def cls_feature(self, tokens):
        return tokens[:, 0]  # BERT is post-norm: the last layer's output is already normed


def hashed_word_tokenize(texts: list[str], max_len: int, vocab_size: int
                         ) -> dict[str, torch.Tensor]:
    """Tokenizer for tiny test encoders that ship no vocabulary: [CLS]=1, words hashed into
    the vocabulary (stable across runs, unlike Python's hash), 0 = padding."""
    ids = torch.zeros(len(texts), max_len, dtype=torch.long)
    mask = torch.zeros(len(texts), max_len, dtype=torch.long)
    for row, text in enumerate(texts):
        words = text.lower().split()[: max_len - 1]
        codes = [1] + [2 + int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % (vocab_size - 2)
                       for w in words]
        ids[row, : len(codes)] = torch.tensor(codes)
        mask[row, : len(codes)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def tiny_bert(depth: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0,
              attn_implementation: str = "sdpa", intermediate: int = 0, vocab: int = 1000,
              positions: int = 128) -> BertTextEncoder:
    """A randomly initialised BERT, tiny by default, for unit tests (no files needed);
    `intermediate` 0 means 2 * hidden."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=depth,
                     num_attention_heads=heads, intermediate_size=intermediate or hidden * 2,
                     max_position_embeddings=positions, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0,
                     attn_implementation=attn_implementation)
    return BertTextEncoder(BertModel(cfg, add_pooling_layer=False), None, f"tiny-bert:{depth}")
