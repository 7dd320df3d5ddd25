"""Tiny random-init CTC speech models (wav2vec2, HuBERT) with a local character vocabulary, built on cpu in
seconds, saved with their feature extractor and Wav2Vec2CTCTokenizer as a model folder."""

from __future__ import annotations

import json
from pathlib import Path

CHARS = list("abcdefghijklmnopqrstuvwxyz'")
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(CHARS)}}


def make_ctc_model(folder: Path, family: str = "wav2vec2", *, attention_mask: bool = False, seed: int = 0) -> Path:
    """family: wav2vec2 or hubert. attention_mask: a layer-normed feature encoder whose extractor returns a mask
    (wav2vec2-large-lv60 style), else group norm with no mask (wav2vec2-base style)."""
    import torch
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
                  feat_extract_norm="layer" if attention_mask else "group", do_stable_layer_norm=attention_mask)
    torch.manual_seed(seed)
    if family == "hubert":
        model = transformers.HubertForCTC(transformers.HubertConfig(**common))
    else:
        model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**common))
    with torch.no_grad():  # a head with spread logits: greedy CTC decodes real tokens, not near-ties
        torch.nn.init.normal_(model.lm_head.weight, std=1.5 / model.config.hidden_size ** 0.5)
    model.save_pretrained(str(folder))
    (folder / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    tokenizer.save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=attention_mask).save_pretrained(str(folder))
    return folder
