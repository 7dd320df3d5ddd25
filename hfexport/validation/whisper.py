"""The PyTorch reference and the bundle runner for Whisper: each clip's new token ids (what fidelity compares)
and transcripts (what WER reads), both sides greedy on the same clips."""

from __future__ import annotations

_NEW_TOKENS = 32  # per clip: the comparison and the timed calls (a random model rarely ends on its own)


class WhisperTorchRunner:
    """transformers' WhisperFeatureExtractor + `generate(input_features)`, PyTorch fp32 eager: what users run."""

    tokenizer = None

    def __init__(self, model, extractor, task: str, bundle):
        from hfexport.backends._whisper import restore_generation_config

        self.model, self.extractor, self.task, self.bundle = model, extractor, task, bundle
        self.eos = set(bundle.loop.prompt.eos)
        restore_generation_config(model, bundle.bundle / "generation_config.json")  # the prompt the bundle uses

    def ids(self, clips: list) -> list[list[int]]:
        import torch

        from hfexport._quiet import quiet_libraries
        from hfexport.data import load_audio

        rate = self.extractor.sampling_rate
        arrays = [load_audio(c, rate) for c in clips]
        features = self.extractor(arrays, sampling_rate=rate, return_tensors="pt")["input_features"]
        with torch.inference_mode(), quiet_libraries():
            out = self.model.generate(features.to(self.model.device), max_new_tokens=_NEW_TOKENS, do_sample=False,
                                      num_beams=1)
        return [_until_eos(row, self.eos) for row in out.tolist()]

    def transcribe(self, clips: list) -> list[dict]:
        """{"text": ...} per clip, decoded by the bundle's tokenizer as the runtime decodes."""
        return [{"text": self.bundle.decode(ids)} for ids in self.ids(clips)]

    __call__ = comparable = ids


class WhisperBundleRunner:
    """A Whisper bundle (or an intermediate stage's two graphs) through hfexport.runtime: exactly what users run."""

    def __init__(self, predictor, task: str):
        self.predictor, self.task = predictor, task

    def comparable(self, clips: list) -> list[list[int]]:
        return self.predictor.generate_ids(list(clips), max_new_tokens=_NEW_TOKENS)

    def transcribe(self, clips: list) -> list[dict]:
        return self.predictor(list(clips), max_new_tokens=_NEW_TOKENS)

    __call__ = comparable


def _until_eos(row: list[int], eos: set[int]) -> list[int]:
    return row[:next((i for i, t in enumerate(row) if t in eos), len(row))]
