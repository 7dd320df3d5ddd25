"""Automatic speech recognition with a CTC head: wav2vec2, HuBERT (raw waveform in, per-frame logits out)."""

from __future__ import annotations

import numpy as np

from hfexport.errors import ModelLoadError, first_line
from hfexport.tasks.base import Output, TaskSpec

_TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json")


class AutomaticSpeechRecognition(TaskSpec):
    name = "automatic-speech-recognition"
    aliases = ("asr", "speech-recognition")
    auto_class = "AutoModelForCTC"
    # Frames vary with the clip's length: the exporter's "sequence" axis.
    outputs = (Output("logits", ("batch", "sequence", "vocab")),)
    architecture_suffixes = ("ForCTC",)
    modality = "audio"
    # NOTE: measured on tiny random-init wav2vec2 / HuBERT at int8 (docs/decisions/0141-speech-recognition.md).
    padded_comparable = True  # frame logits: a batch pads every clip to its longest
    default_gates = {"ctc_token_agreement": 0.90}
    gate_metrics = frozenset({"ctc_token_agreement", "frame_top1_agreement"})

    def check_model(self, config: dict) -> None:
        if "conv_kernel" not in config or "conv_stride" not in config:
            raise ModelLoadError(f"{config.get('model_type')} is not a CTC speech model with a convolutional "
                                 "feature encoder; automatic-speech-recognition builds wav2vec2-style CTC models "
                                 "(wav2vec2, HuBERT, ...) only")
        if config.get("pad_token_id") is None:
            raise ModelLoadError("config.json has no pad_token_id: a CTC model needs its blank id there")

    def manifest_fields(self, config: dict, processor, pooling) -> dict:
        """What the runtime decodes with: the blank id, the word delimiter, and the conv feature encoder's
        kernels and strides (to know how many frames of a padded batch are a clip's own)."""
        return {"blank_id": int(config["pad_token_id"]), "word_delimiter": "|",
                "conv_kernel": [int(k) for k in config["conv_kernel"]],
                "conv_stride": [int(s) for s in config["conv_stride"]]}

    def eval_inputs(self, clips: list, mask_token: str | None = None) -> list:
        return list(clips)

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.data import DataError

        if not all("audio" in row for row in rows):
            raise DataError(f"{source}: speech recognition takes a folder of .wav files as --eval-data")
        labels = [row["label"] for row in rows] if all("label" in row for row in rows) else []
        return [row["audio"] for row in rows], labels

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        """(logits float64, blank id) per row: both sides see the same padded batches."""
        blank = int(meta.task_fields.get("blank_id", 0)) if meta is not None else 0
        return [(row, blank) for row in outputs["logits"].astype(np.float64)]

    def fidelity(self, reference, candidate) -> dict[str, float]:
        frames = same = exact = agree = total = 0
        for (ref, blank), (cand, _) in zip(reference, candidate):
            ref_ids, cand_ids = ref.argmax(-1), cand.argmax(-1)
            frames += len(ref_ids)
            same += int((ref_ids == cand_ids).sum())
            ref_tokens, cand_tokens = ctc_collapse(ref_ids, blank), ctc_collapse(cand_ids, blank)
            exact += ref_tokens == cand_tokens
            distance = edit_distance(ref_tokens, cand_tokens)
            agree += max(len(ref_tokens), 1) - min(distance, max(len(ref_tokens), 1))
            total += max(len(ref_tokens), 1)
        return {"ctc_token_agreement": agree / max(total, 1), "frame_top1_agreement": same / max(frames, 1),
                "ctc_exact_match": exact / max(len(reference), 1)}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        from hfexport.tasks._labelled import batched

        # PyTorch's runner transcribes as the runtime decodes; a bundle's runner is the runtime itself.
        texts = [item["text"] for item in batched(getattr(runner, "transcribe", runner), inputs, batch)]
        return {"wer": word_error_rate(labels, texts)}

    def graph_outputs(self, outputs) -> tuple:
        return (outputs["logits"],)

    def prepare_processor(self, source, folder):
        from hfexport.build.audio_processor import prepare_audio_processor

        try:
            return prepare_audio_processor(source, folder)
        except (OSError, KeyError) as exc:
            raise ModelLoadError(f"{source.model_id}: cannot prepare the audio processor ({first_line(exc)})") from exc


def ctc_collapse(ids, blank: int) -> list[int]:
    ids = [int(i) for i in ids]
    return [i for k, i in enumerate(ids) if (k == 0 or i != ids[k - 1]) and i != blank]


def edit_distance(first: list, second: list) -> int:
    """Levenshtein distance between two sequences (numpy rows)."""
    row = np.arange(len(second) + 1)
    for i, item in enumerate(first, 1):
        previous, row = row, np.empty_like(row)
        row[0] = i
        for j, other in enumerate(second, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (item != other))
    return int(row[-1])


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    words = sum(len(ref.split()) for ref in references)
    errors = sum(edit_distance(ref.split(), hyp.split()) for ref, hyp in zip(references, hypotheses))
    return errors / max(words, 1)


SPEC = AutomaticSpeechRecognition()
