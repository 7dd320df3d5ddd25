"""The PyTorch reference for speech: transformers' feature extractor + the CTC model, fp32 eager."""

from __future__ import annotations

from hfexport.validation.encoder import ProcessorTorchRunner


class AudioTorchRunner(ProcessorTorchRunner):
    """The original speech model, as users run it in transformers (padded batches, the extractor's mask)."""

    def __init__(self, model, extractor, task: str, meta, vocabulary=None):
        self.model, self.extractor, self.task, self.meta = model, extractor, task, meta
        self.vocabulary = vocabulary  # the bundle's CTC vocabulary: transcripts for WER

    def transcribe(self, clips: list) -> list[dict]:
        """{"text": ...} per clip, decoded over each clip's own frames as the runtime decodes."""
        from hfexport.data import load_audio
        from hfexport.runtime.audio import ctc_greedy_ids, frame_count

        fields = self.meta.task_fields
        logits = self.raw(clips)[0]["logits"]
        rate = self.extractor.sampling_rate
        lengths = [len(load_audio(c, rate)) for c in clips]
        return [{"text": self.vocabulary.decode(ctc_greedy_ids(row, frame_count(n, fields["conv_kernel"],
                                                                                 fields["conv_stride"])))}
                for row, n in zip(logits, lengths)]

    def raw(self, clips: list):
        from hfexport.data import load_audio

        rate = self.extractor.sampling_rate
        arrays = [load_audio(c, rate) for c in clips]
        feeds = self.extractor(arrays, sampling_rate=rate, padding=True, return_tensors="pt")
        return self._forward({n: feeds[n] for n in ("input_values", "attention_mask") if n in feeds})
