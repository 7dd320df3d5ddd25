"""A tiny random-init Whisper (d_model 64, 2 + 2 layers) with a locally trained byte-level BPE
WhisperTokenizer and a WhisperFeatureExtractor, saved as a model folder; the generation config has what a
hub checkpoint's has (lang_to_id, task_to_id, no_timestamps_token_id, suppress_tokens, begin_suppress_tokens,
forced_decoder_ids), so the runtime's prompt and logits masks are exercised."""

from __future__ import annotations

import json
from pathlib import Path

LANGUAGES = ("<|en|>", "<|de|>", "<|fr|>")
EMBED_STD = 0.3
SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", *LANGUAGES, "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")


def _bpe() -> tuple[dict, list]:
    from tokenizers import ByteLevelBPETokenizer

    from hfexport.data import default_calibration_texts

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(default_calibration_texts(), vocab_size=400)
    model = json.loads(trainer._tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    # The specials after the text tokens, <|notimestamps|> last, as in Whisper's vocabulary: generate reads every
    # id above <|notimestamps|> as a timestamp token.
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIALS)})
    return vocab, [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def make_whisper_model(folder: Path, *, multilingual: bool = True, mel_bins: int = 80, seed: int = 0) -> Path:
    """multilingual: the generation config names languages (generate detects one); else an English-only
    layout with the <|en|><|transcribe|> prefix forced by forced_decoder_ids."""
    import torch
    import transformers as T

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe()
    tokenizer = T.WhisperTokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    assert tokenizer.convert_tokens_to_ids(SPECIALS[-1]) == len(tokenizer) - 1
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    eos, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = T.WhisperConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
                             encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                             decoder_ffn_dim=128, num_mel_bins=mel_bins, max_source_positions=1500,
                             max_target_positions=64, decoder_start_token_id=start, eos_token_id=eos,
                             bos_token_id=eos, pad_token_id=eos, begin_suppress_tokens=None, suppress_tokens=None,
                             tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = T.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # spread logits: greedy decoding picks real tokens, not near-ties
        torch.nn.init.normal_(model.proj_out.weight, std=EMBED_STD)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id = start, eos, eos
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.suppress_tokens = [ids["<|startoflm|>"], ids["<|startofprev|>"], ids["<|nocaptions|>"], 5, 17]
    gen.begin_suppress_tokens = [tokenizer.convert_tokens_to_ids("Ġ"), eos]  # " " and the end, as Whisper's
    gen.max_length = 64
    if multilingual:
        gen.is_multilingual = True
        gen.lang_to_id = {token: ids[token] for token in LANGUAGES}
        gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        gen.forced_decoder_ids = [[1, None], [2, ids["<|transcribe|>"]]]
    else:
        gen.is_multilingual = False
        gen.forced_decoder_ids = [[1, ids["<|en|>"]], [2, ids["<|transcribe|>"]]]
    model.save_pretrained(str(folder))
    extractor = T.WhisperFeatureExtractor(feature_size=mel_bins)
    T.WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder
