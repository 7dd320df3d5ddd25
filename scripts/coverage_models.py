"""Tiny random-init model folders for the coverage matrix (scripts/coverage_matrix.py), no hub access.

Each row is one architecture x task: a transformers 5.x config with small sizes (hidden 16-64, 1-2 layers),
the model class the task loads, and what the family's real checkpoints ship beside the weights: a tokenizer
trained here in a fraction of a second on hfexport's shipped texts with the family's own tokenizer class
(WordPiece, byte-level or Metaspace BPE, Unigram), an image processor, a feature extractor or a processor,
all saved with save_pretrained. The sizes are tiny; the layouts (special tokens, heads, configs) are the
families' own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

TEXT_TASKS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "zero-shot-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
}
LABELS = {
    "text-classification": ["negative", "positive"],
    "zero-shot-classification": ["entailment", "neutral", "contradiction"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
    "image-classification": ["cat", "dog", "bird"],
}
# Task names a build may record for a row and still be the row's task (hfexport's names for image and
# seq2seq tasks are still being settled by other work).
SAME_TASK = {
    "image-feature-extraction": {"image-feature-extraction", "feature-extraction"},
    "text2text-generation": {"text2text-generation", "translation", "summarization"},
    "zero-shot-image-classification": {"zero-shot-image-classification", "image-text-embedding",
                                       "feature-extraction", "image-feature-extraction"},
    # Whisper builds under automatic-speech-recognition as its encoder-decoder variant (decision 0163)
    "automatic-speech-recognition": {"automatic-speech-recognition", "automatic-speech-recognition-seq2seq"},
}


@dataclass(frozen=True)
class Row:
    family: str  # text-encoder, decoder-llm, seq2seq, vision, audio, dual-encoder
    arch: str  # the row's architecture label (a model_type, or a layout such as deberta-v3)
    task: str
    make: Callable[[Path], None] = field(repr=False, compare=False)
    cli_task: str | None = None  # passed as --task; None: hfexport infers it from the folder as for a user
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.arch}/{self.task}"

    @property
    def slug(self) -> str:
        return self.name.replace("/", "__")

    def same_task(self, built_task: str | None) -> bool:
        return built_task is None or built_task in SAME_TASK.get(self.task, {self.task})


# -- tokenizers, trained in a fraction of a second on the shipped corpus ---------------------------------


@cache
def _texts() -> tuple[str, ...]:
    from hfexport.data import default_calibration_texts

    return tuple(default_calibration_texts())


@cache
def _wordpiece() -> dict[str, int]:
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(_texts(), vocab_size=600)
    return trainer.get_vocab()


@cache
def _bpe(specials: tuple[str, ...], metaspace: bool = False) -> tuple[dict, list]:
    """(vocab, merges) of a byte-level (GPT-2 style) or Metaspace (SentencePiece style) BPE."""
    from tokenizers import ByteLevelBPETokenizer, SentencePieceBPETokenizer

    trainer = SentencePieceBPETokenizer(unk_token=specials[0]) if metaspace else ByteLevelBPETokenizer()
    trainer.train_from_iterator(_texts(), vocab_size=600, special_tokens=list(specials))
    model = json.loads(trainer._tokenizer.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


@cache
def _unigram(specials: tuple[str, ...], unk: str = "<unk>") -> list[tuple[str, float]]:
    from tokenizers import SentencePieceUnigramTokenizer

    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(_texts(), vocab_size=600, special_tokens=list(specials), unk_token=unk)
    return [(piece, float(score)) for piece, score in json.loads(trainer._tokenizer.to_str())["model"]["vocab"]]


@cache
def _clip_bpe() -> tuple[dict, list]:
    """(vocab, merges) of a CLIP-style BPE: lowercased words, byte-level alphabet, `</w>` ending each word.

    NOTE: not _bpe's GPT-2 vocabulary, which has no `</w>` pieces: CLIPTokenizer would map most words to its unk
    token, <|endoftext|>, which is also the end-of-text id CLIP pools at, so every text would embed alike."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    backend.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", initial_alphabet=alphabet)
    backend.train_from_iterator(_texts(), trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = model["vocab"]
    for piece in [*alphabet, *(a + "</w>" for a in alphabet)]:  # every byte, inside and at the end of a word
        vocab.setdefault(piece, len(vocab))
    return vocab, [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
LLM_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def text_tokenizer(kind: str):
    """A tokenizer of the family's own transformers class (all tokenizers-backed, so tokenizer.json exists)."""
    import transformers as T

    if kind in ("bert", "distilbert", "electra", "mpnet"):
        cls = {"bert": T.BertTokenizer, "distilbert": T.DistilBertTokenizer, "electra": T.ElectraTokenizer,
               "mpnet": T.MPNetTokenizer}[kind]
        return cls(vocab=_wordpiece(), model_max_length=128)
    if kind in ("roberta", "bart"):
        vocab, merges = _bpe(ROBERTA_SPECIALS)
        return {"roberta": T.RobertaTokenizer, "bart": T.BartTokenizer}[kind](vocab=vocab, merges=merges,
                                                                             model_max_length=128)
    if kind == "deberta":
        vocab, merges = _bpe(BERT_SPECIALS)
        return T.DebertaTokenizer(vocab=vocab, merges=merges, model_max_length=128)
    if kind == "modernbert":  # ModernBERT ships a generic fast tokenizer: byte-level BPE, BERT's specials
        from tokenizers import Tokenizer, models, pre_tokenizers, processors

        vocab, merges = _bpe(BERT_SPECIALS)
        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        from tokenizers import decoders

        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return T.PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]",
                                         pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]",
                                         model_max_length=128)
    if kind in ("xlm-roberta", "camembert"):
        cls = T.XLMRobertaTokenizer if kind == "xlm-roberta" else T.CamembertTokenizer
        return cls(vocab=_unigram(ROBERTA_SPECIALS), model_max_length=128)
    if kind == "albert":
        return T.AlbertTokenizer(vocab=_unigram(("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")), model_max_length=128)
    if kind == "deberta-v2":
        return T.DebertaV2Tokenizer(vocab=_unigram(BERT_SPECIALS, unk="[UNK]"), model_max_length=128)
    if kind in ("t5", "siglip"):  # SigLIP's own (SentencePiece) tokenizer needs the sentencepiece package
        return T.T5Tokenizer(vocab=_unigram(("<pad>", "</s>", "<unk>")), extra_ids=10, model_max_length=128)
    if kind == "marian":  # MarianTokenizer is SentencePiece-only (sentencepiece is not installed here)
        return T.T5Tokenizer(vocab=_unigram(("</s>", "<unk>", "<pad>")), extra_ids=0, model_max_length=128)
    if kind == "mbart":
        return T.MBartTokenizer(vocab=_unigram(ROBERTA_SPECIALS), model_max_length=128)
    if kind == "pegasus":
        return T.PegasusTokenizer(vocab=_unigram(("<pad>", "</s>", "<mask_1>", "<mask_2>", "<unk>")),
                                  model_max_length=128)
    raise ValueError(f"no tokenizer for {kind!r}")


def llm_tokenizer(kind: str):
    """A decoder LLM's tokenizer, with a chat template (no pad token, as most LLMs ship)."""
    import transformers as T

    if kind == "gemma":  # SentencePiece-style BPE with <bos>/<eos>, as Gemma's tokenizer.json
        vocab, merges = _bpe(("<unk>", "<pad>", "<bos>", "<eos>", "<mask>", "<start_of_turn>", "<end_of_turn>"),
                             metaspace=True)
        tokenizer = T.GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=256)
    elif kind == "llama-spm":  # Llama 2 / Mistral / Phi-3: SentencePiece-style BPE, <s> and </s>
        vocab, merges = _bpe(("<unk>", "<s>", "</s>"), metaspace=True)
        tokenizer = T.LlamaTokenizer(vocab=vocab, merges=merges, model_max_length=256)
    else:  # byte-level BPE: GPT-2, OPT, GPT-NeoX, Qwen, Llama 3, SmolLM, OLMo, Granite
        vocab, merges = _bpe(LLM_SPECIALS)
        cls = {"gpt2": T.GPT2Tokenizer, "gpt_neox": T.GPTNeoXTokenizer, "qwen2": T.Qwen2Tokenizer}.get(kind)
        if cls is not None:
            tokenizer = cls(vocab=vocab, merges=merges, model_max_length=256)
        else:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers

            backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
            tokenizer = T.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                                  eos_token="<|endoftext|>", model_max_length=256)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# -- model folders ------------------------------------------------------------------------------------


def _save(folder: Path, model, *preprocessors) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    for pre in preprocessors:
        pre.save_pretrained(str(folder))


def _labels(task: str) -> dict:
    labels = LABELS.get(task, ["NO", "YES"])
    return {"id2label": dict(enumerate(labels)), "label2id": {v: i for i, v in enumerate(labels)}}


def _text_encoder(arch: str, task: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch
        import transformers as T

        kind = {"deberta-v3": "deberta-v2"}.get(arch, arch)
        tokenizer = text_tokenizer(kind)
        size = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "max_position_embeddings": 130, **_labels(task)}
        pad = {"pad_token_id": tokenizer.pad_token_id}
        if arch == "distilbert":
            config = T.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                        max_position_embeddings=128, **_labels(task))
        elif arch in ("roberta", "xlm-roberta", "camembert"):
            cls = {"roberta": T.RobertaConfig, "xlm-roberta": T.XLMRobertaConfig, "camembert": T.CamembertConfig}
            config = cls[arch](**size, **pad, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, type_vocab_size=1)
        elif arch == "albert":
            config = T.AlbertConfig(**size, embedding_size=16, **pad)
        elif arch == "electra":
            config = T.ElectraConfig(**size, embedding_size=32, **pad)
        elif arch == "deberta":
            config = T.DebertaConfig(**size, **pad)
        elif arch == "deberta-v2":
            config = T.DebertaV2Config(**size, **pad, relative_attention=True, position_buckets=64,
                                       pos_att_type=["p2c", "c2p"], type_vocab_size=2)
        elif arch == "deberta-v3":  # the v3 checkpoints' layout: no token types, relative positions only
            config = T.DebertaV2Config(**size, **pad, relative_attention=True, position_buckets=64,
                                       pos_att_type=["p2c", "c2p"], type_vocab_size=0, position_biased_input=False,
                                       norm_rel_ebd="layer_norm", share_att_key=True, max_relative_positions=-1)
        elif arch == "mpnet":
            config = T.MPNetConfig(**size, **pad, relative_attention_num_buckets=32)
        elif arch == "modernbert":
            config = T.ModernBertConfig(**size, **pad, cls_token_id=tokenizer.cls_token_id,
                                        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                                        eos_token_id=tokenizer.sep_token_id, global_attn_every_n_layers=2,
                                        local_attention=16)
        else:
            config = T.BertConfig(**size, **pad)
        torch.manual_seed(0)
        _save(folder, getattr(T, TEXT_TASKS[task]).from_config(config), tokenizer)

    return make


def _decoder_llm(arch: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch
        import transformers as T

        kind = {"gemma": "gemma", "gemma2": "gemma", "gemma3_text": "gemma", "llama": "llama-spm",
                "mistral": "llama-spm", "phi3": "llama-spm"}.get(arch, arch)
        tokenizer = llm_tokenizer(kind)
        eos = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        common = {"vocab_size": len(tokenizer), "bos_token_id": bos, "eos_token_id": eos,
                  "pad_token_id": tokenizer.pad_token_id}
        sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_position_embeddings": 512}
        if arch == "gpt2":
            config = T.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
        elif arch == "opt":
            config = T.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                 word_embed_proj_dim=64, max_position_embeddings=512, **common)
        elif arch == "gpt_neox":
            config = T.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=512, **common)
        elif arch == "smollm":  # SmolLM: a Llama with tied embeddings and a byte-level BPE
            config = T.LlamaConfig(**sizes, tie_word_embeddings=True, **common)
        else:
            cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "qwen2": T.Qwen2Config,
                   "qwen3": T.Qwen3Config, "phi3": T.Phi3Config, "gemma": T.GemmaConfig, "gemma2": T.Gemma2Config,
                   "gemma3_text": T.Gemma3TextConfig, "granite": T.GraniteConfig, "olmo2": T.Olmo2Config}[arch]
            extra = {"head_dim": 16} if arch in ("qwen3", "gemma", "gemma2", "gemma3_text") else {}
            if arch in ("gemma2", "gemma3_text"):  # sliding-window layers mixed with global ones, a short window
                extra["sliding_window"] = 64
            config = cls(**sizes, **extra, **common)
        torch.manual_seed(0)
        _save(folder, T.AutoModelForCausalLM.from_config(config), tokenizer)

    return make


def _seq2seq(arch: str, task: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch
        import transformers as T

        kind = {"t5-encoder": "t5", "flan-t5": "t5"}.get(arch, arch)
        tokenizer = text_tokenizer(kind)
        vocab, pad = len(tokenizer), tokenizer.pad_token_id
        if kind == "t5":
            config = T.T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2,
                                num_heads=4, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                                decoder_start_token_id=pad,
                                **({"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
                                   if arch == "flan-t5" else {}))
        else:
            cls = {"bart": T.BartConfig, "marian": T.MarianConfig, "mbart": T.MBartConfig,
                   "pegasus": T.PegasusConfig}[kind]
            start = pad if kind in ("marian", "pegasus") else tokenizer.eos_token_id
            config = cls(vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_position_embeddings=128, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else pad,
                         decoder_start_token_id=start, forced_eos_token_id=tokenizer.eos_token_id)
        if arch == "t5-encoder":
            model_class = T.T5EncoderModel
        else:
            model_class = T.AutoModel if task == "feature-extraction" else T.AutoModelForSeq2SeqLM
        torch.manual_seed(0)
        model = model_class(config) if model_class is T.T5EncoderModel else model_class.from_config(config)
        _save(folder, model, tokenizer)

    return make


def _image_processor(arch: str):
    import transformers as T

    square = {"height": 32, "width": 32}
    if arch in ("convnext", "resnet"):
        return T.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    if arch == "dinov2":
        return T.BitImageProcessor(size={"shortest_edge": 32}, crop_size=square, do_center_crop=True)
    if arch == "mobilenet_v2":
        return T.MobileNetV2ImageProcessor(size={"shortest_edge": 32}, crop_size=square)
    if arch == "efficientnet":
        return T.EfficientNetImageProcessor(size=square)
    if arch == "deit":
        return T.DeiTImageProcessor(size={"height": 36, "width": 36}, crop_size=square)
    return T.ViTImageProcessor(size=square)  # vit, swin


def _vision(arch: str, task: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch
        import transformers as T

        labels = _labels("image-classification")
        vit = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "intermediate_size": 64}
        config = {
            "vit": lambda: T.ViTConfig(**vit, **labels),
            "deit": lambda: T.DeiTConfig(**vit, **labels),
            "dinov2": lambda: T.Dinov2Config(**vit, **labels),
            "convnext": lambda: T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32, **labels),
            "resnet": lambda: T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                             layer_type="basic", **labels),
            "mobilenet_v2": lambda: T.MobileNetV2Config(image_size=32, depth_multiplier=0.25, **labels),
            # hidden_dim is the top conv's width, round_filters(1280) = 320 at width 0.25 (64 cannot run a forward)
            "efficientnet": lambda: T.EfficientNetConfig(image_size=32, width_coefficient=0.25,
                                                         depth_coefficient=0.25, hidden_dim=320, **labels),
            "swin": lambda: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                         num_heads=[2, 2], window_size=4, **labels),
        }[arch]()
        torch.manual_seed(0)
        if arch == "deit" and task == "image-classification":  # the Auto class maps DeiT to the distilled head
            model = T.DeiTForImageClassification(config)
        else:
            model = (T.AutoModelForImageClassification if task == "image-classification" else T.AutoModel
                     ).from_config(config)
        _save(folder, model, _image_processor(arch))

    return make


def _ctc_vocab(folder: Path) -> Path:
    letters = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
    path = folder / "ctc-vocab.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({c: i for i, c in enumerate(letters)}))
    return path


def _audio(arch: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch
        import transformers as T

        torch.manual_seed(0)
        if arch == "whisper":
            vocab, merges = _bpe(("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                  "<|translate|>", "<|notimestamps|>", "<|startofprev|>", "<|nocaptions|>"))
            tokenizer = T.WhisperTokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>")
            start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
            eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
            config = T.WhisperConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
                                     max_target_positions=64, decoder_start_token_id=start, eos_token_id=eos,
                                     bos_token_id=eos, pad_token_id=eos, begin_suppress_tokens=None,
                                     suppress_tokens=None)
            processor = T.WhisperProcessor(feature_extractor=T.WhisperFeatureExtractor(feature_size=80),
                                           tokenizer=tokenizer)
            _save(folder, T.WhisperForConditionalGeneration(config), processor)
            return
        vocab_file = _ctc_vocab(folder)
        tokenizer = T.Wav2Vec2CTCTokenizer(str(vocab_file))
        vocab_file.unlink()
        sizes = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 64, "conv_dim": (16, 16), "conv_kernel": (10, 3), "conv_stride": (5, 2),
                 "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
                 "pad_token_id": tokenizer.pad_token_id, "ctc_loss_reduction": "mean"}
        config = (T.HubertConfig if arch == "hubert" else T.Wav2Vec2Config)(**sizes)
        model = (T.HubertForCTC if arch == "hubert" else T.Wav2Vec2ForCTC)(config)
        extractor = T.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                               do_normalize=True, return_attention_mask=arch != "hubert")
        _save(folder, model, T.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer))

    return make


def _dual(arch: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch
        import transformers as T

        vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "intermediate_size": 64}
        torch.manual_seed(0)
        if arch == "clip":
            vocab, merges = _clip_bpe()
            tokenizer = T.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
            text = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "intermediate_size": 64, "max_position_embeddings": 77,
                    "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                    "pad_token_id": tokenizer.pad_token_id}
            config = T.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
            processor = T.CLIPProcessor(image_processor=T.CLIPImageProcessor(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tokenizer)
            _save(folder, T.CLIPModel(config), processor)
            return
        tokenizer = text_tokenizer("siglip")
        text = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "max_position_embeddings": 64, "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id}
        config = T.SiglipConfig(text_config=text, vision_config=vision)
        model = T.SiglipModel(config)
        with torch.no_grad():  # a trained SigLIP's scale and bias are learned; its init (exp(0), 0) hides the bias
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-2.0)
        _save(folder, model, T.SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer)

    return make


def rows() -> list[Row]:
    """Every row of the matrix, in table order."""
    out: list[Row] = []
    fe, tc, tok, qa, fm, zs = ("feature-extraction", "text-classification", "token-classification",
                               "question-answering", "fill-mask", "zero-shot-classification")
    encoders = {
        "bert": (fe, tc, tok, qa, fm, zs), "roberta": (fe, tc, tok, qa, fm), "distilbert": (fe, tc, qa),
        "albert": (fe, tc), "electra": (tc, tok), "deberta": (tc,), "deberta-v2": (tc,),
        "deberta-v3": (fe, tc, zs), "xlm-roberta": (fe, tok), "mpnet": (fe,), "camembert": (fm,),
        "modernbert": (fe, tc, fm),
    }
    for arch, tasks in encoders.items():
        note = "DebertaV2 with type_vocab_size 0, as the v3 checkpoints" if arch == "deberta-v3" else ""
        out += [Row("text-encoder", arch, task, _text_encoder(arch, task), cli_task=task if task == zs else None,
                    note=note) for task in tasks]
    for arch in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text", "gpt2", "gpt_neox",
                 "opt", "granite", "olmo2", "smollm"):
        note = "sliding window 64 (< the 128-token validation prompt)" if arch in ("gemma2", "gemma3_text") else ""
        out.append(Row("decoder-llm", arch, "text-generation", _decoder_llm(arch), note=note))
    t2t = "text2text-generation"
    for arch, task, note in (("t5", t2t, ""), ("flan-t5", t2t, "T5 v1.1 layout: gated-gelu, untied head"),
                             ("bart", t2t, ""), ("marian", t2t, "generic fast tokenizer (MarianTokenizer needs "
                                                                "sentencepiece, not installed)"),
                             ("mbart", t2t, ""), ("pegasus", t2t, ""), ("t5-encoder", fe, "T5EncoderModel"),
                             ("bart", fe, "BartModel: the encoder's states are the features")):
        out.append(Row("seq2seq", arch, task, _seq2seq(arch, task), note=note))
    ic, ife = "image-classification", "image-feature-extraction"
    for arch, tasks in (("vit", (ic, ife)), ("deit", (ic,)), ("convnext", (ic, ife)), ("resnet", (ic,)),
                        ("dinov2", (ic, ife)), ("mobilenet_v2", (ic,)), ("efficientnet", (ic,)), ("swin", (ic,))):
        out += [Row("vision", arch, task, _vision(arch, task)) for task in tasks]
    for arch in ("wav2vec2", "hubert", "whisper"):
        out.append(Row("audio", arch, "automatic-speech-recognition", _audio(arch)))
    out.append(Row("dual-encoder", "clip", "zero-shot-image-classification", _dual("clip")))
    out.append(Row("dual-encoder", "siglip", "zero-shot-image-classification", _dual("siglip"),
                   note="T5-style fast tokenizer (SiglipTokenizer needs sentencepiece, not installed)"))
    return out
