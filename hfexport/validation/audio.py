"""The PyTorch reference for speech: transformers' feature extractor + the CTC model, fp32 eager."""

from __future__ import annotations

from hfexport.tasks import get_task


class AudioTorchRunner:
    """The original speech model, as users run it in transformers (padded batches, the extractor's mask)."""

    tokenizer = None

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
        import torch

        from hfexport.data import load_audio

        rate = self.extractor.sampling_rate
        arrays = [load_audio(c, rate) for c in clips]
        feeds = self.extractor(arrays, sampling_rate=rate, padding=True, return_tensors="pt")
        names = ("input_values", "attention_mask")
        spec = get_task(self.task)
        with torch.inference_mode():
            out = self.model(**{n: feeds[n].to(self.model.device) for n in names if n in feeds}, return_dict=True)
            values = spec.graph_outputs(out)
        outputs = {name: v.float().cpu().numpy() for name, v in zip(spec.output_names, values)}
        return outputs, None, None, None

    def __call__(self, clips: list):
        outputs, mask, ids, seq = self.raw(clips)
        return get_task(self.task).comparable(outputs, mask, ids, seq, self.meta)

    comparable = __call__
