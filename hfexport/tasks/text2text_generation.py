"""Text-to-text generation with encoder-decoder models (T5, BART, Marian): translation, summarisation.

Exported as two graphs (the encoder, which also projects the cross-attention K/V once, and the decoder with its
self-attention KV cache; backends/_seq2seq_graph.py) and run by the runtime's encoder-decoder loop
(runtime/seq2seq.py), which has the decoder LLM's user surface. Fidelity is measured by the generation validator:
greedy tokens against PyTorch `generate`, top-1 agreement teacher-forced over PyTorch's greedy sequence.
"""

from __future__ import annotations

from hfexport.errors import ModelLoadError
from hfexport.tasks.base import Output, TaskSpec

# Encoder-decoder model types whose encoder reads something other than text: another task's job.
_NOT_TEXT = {"whisper": "automatic-speech-recognition", "speech_to_text": "automatic-speech-recognition",
             "vision-encoder-decoder": "image-to-text", "speech-encoder-decoder": "automatic-speech-recognition"}


class Text2TextGeneration(TaskSpec):
    name = "text2text-generation"
    auto_class = "AutoModelForSeq2SeqLM"
    # Outputs past the logits are the decoder's self-attention cache (`present.<layer>.key/value`).
    outputs = (Output("logits", ("batch", "sequence", "vocab")),)
    aliases = ("translation", "summarization", "seq2seq-lm")
    # T5ForConditionalGeneration, BartForConditionalGeneration, MarianMTModel (check_model refuses the
    # ...ForConditionalGeneration classes that are not text encoder-decoders)
    architecture_suffixes = ("ForConditionalGeneration", "MTModel")
    generative = True
    # As text generation: next-token agreement, robust to one flipped token in an int8 run; fp32 recipes add
    # greedy_agreement: 1.0.
    default_gates = {"top1_agreement": 0.90}
    gate_metrics = frozenset({"top1_agreement", "greedy_agreement"})

    def check_model(self, config: dict) -> None:
        model_type = config.get("model_type")
        if model_type in _NOT_TEXT:
            raise ModelLoadError(f"{model_type} is an {_NOT_TEXT[model_type]} model, not text-to-text: "
                                 f"hfexport does not build {_NOT_TEXT[model_type]} yet")
        if not config.get("is_encoder_decoder"):
            raise ModelLoadError(f"{model_type or 'this model'} is not an encoder-decoder (config.json has no "
                                 "is_encoder_decoder: true); a decoder-only model is --task text-generation")

    def check_folder(self, folder, config: dict) -> None:
        # NOTE: transformers 5.24's MarianTokenizer is sentencepiece-only (source.spm + target.spm + vocab.json) and
        # convert_slow_tokenizer has no Marian converter, so a hub Marian folder cannot give the runtime its
        # tokenizer.json; refused here in one line instead of failing after the model has loaded.
        if config.get("model_type") == "marian" and not (folder / "tokenizer.json").is_file():
            raise ModelLoadError(f"{folder}: MarianMT's tokenizer is sentencepiece-only (source.spm/target.spm, no "
                                 "tokenizer.json) and transformers has no converter to the fast tokenizer the "
                                 "torch-free runtime reads; add a tokenizer.json (built with the tokenizers library "
                                 "from vocab.json and the .spm files) to the folder and build again")

    def manifest_fields(self, config: dict, tokenizer, pooling: dict | None) -> dict:
        start = config.get("decoder_start_token_id")
        return {"decoder_start_token_id": start if start is not None else config.get("bos_token_id"),
                "graphs": {"encoder": "model_file", "decoder": "the other graph of model_files"}}


SPEC = Text2TextGeneration()
