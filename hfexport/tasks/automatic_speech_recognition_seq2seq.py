"""Speech recognition with an encoder-decoder (Whisper): log-mel features in, text out.

`--task automatic-speech-recognition` (or no --task) on a WhisperForConditionalGeneration folder lands here
(hfexport.tasks.specialise); a CTC model (wav2vec2, HuBERT) stays automatic-speech-recognition. The export is
text2text-generation's two graphs (backends/_seq2seq_graph.py) with `input_features` [batch, mel bins, 3000] into
the encoder; the runtime (runtime/whisper.py) computes the log-mel features in numpy and runs Whisper's greedy
loop. Validation runs both sides on the same clips: PyTorch `generate(input_features)` against the bundle's
loop, compared token by token (docs/decisions/0163-whisper.md).
"""

from __future__ import annotations

from hfexport.errors import ModelLoadError, first_line
from hfexport.tasks.automatic_speech_recognition import edit_distance, word_error_rate
from hfexport.tasks.base import Output, TaskSpec


class SpeechSeq2Seq(TaskSpec):
    name = "automatic-speech-recognition-seq2seq"
    auto_class = "AutoModelForSpeechSeq2Seq"
    outputs = (Output("logits", ("batch", "sequence", "vocab")),)
    aliases = ("speech-seq2seq", "whisper")  # speech-seq2seq: transformers' mapping (AutoModelForSpeechSeq2Seq)
    architecture_suffixes = ("WhisperForConditionalGeneration",)
    modality = "audio"
    generative = True  # exported as the encoder-decoder pair, quantised as one (weights only on openvino)
    variant_of = "automatic-speech-recognition"  # what users type; specialise() picks this spec by the model
    # NOTE: measured on tiny random-init Whisper (docs/decisions/0163-whisper.md): fp32 graphs give PyTorch's
    # greedy tokens exactly; the int8 defaults are judged by the share of PyTorch's tokens the bundle keeps.
    default_gates = {"token_agreement": 0.90}
    gate_metrics = frozenset({"token_agreement"})  # exact_match is reported beside it
    distill_kind = None  # no distillation loss for an encoder-decoder's generated tokens

    @staticmethod
    def matches(config: dict) -> bool:
        """A speech encoder-decoder this task builds (the model types the runtime's Whisper loop serves)."""
        return config.get("model_type") == "whisper"

    def check_model(self, config: dict) -> None:
        if not self.matches(config):
            raise ModelLoadError(f"{config.get('model_type') or 'this model'} is not a Whisper model; speech "
                                 "encoder-decoders other than Whisper (Speech2Text, ...) are not built yet")

    def check_folder(self, folder, config: dict) -> None:
        if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
            raise ModelLoadError(f"{folder}: no preprocessor_config.json or processor_config.json; save the "
                                 "WhisperProcessor (feature extractor and tokenizer) into the model folder")

    def manifest_fields(self, config: dict, processor, pooling) -> dict:
        return {"decoder_start_token_id": config.get("decoder_start_token_id"),
                "graphs": {"encoder": "model_file", "decoder": "the other graph of model_files"}}

    # -- build ------------------------------------------------------------------------------------

    def prepare_processor(self, source, folder):
        from hfexport.build.audio_processor import prepare_whisper_processor

        try:
            return prepare_whisper_processor(source, folder)
        except (OSError, KeyError) as exc:
            raise ModelLoadError(f"{source.model_id}: cannot prepare the Whisper processor ({first_line(exc)})") from exc

    def text_tokenizer(self, source):
        """The model's transformers tokenizer (the manifest's tokenizer section reads its padding facts)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(source.local_dir), trust_remote_code=source.trust_remote_code)

    # -- evaluation -------------------------------------------------------------------------------

    def eval_inputs(self, clips: list, mask_token: str | None = None) -> list:
        return list(clips)

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.tasks.automatic_speech_recognition import SPEC as CTC

        return CTC.labelled_examples(rows, text_column=text_column, label_column=label_column, source=source)

    def fidelity(self, reference: list, candidate: list) -> dict[str, float]:
        """reference / candidate: each clip's new token ids. token_agreement: PyTorch's tokens kept (1 - edit
        distance / length, summed over clips); exact_match: clips with the very same tokens."""
        agree = total = exact = 0
        for ref, cand in zip(reference, candidate):
            length = max(len(ref), 1)
            agree += length - min(edit_distance(list(ref), list(cand)), length)
            total += length
            exact += list(ref) == list(cand)
        return {"token_agreement": agree / max(total, 1), "exact_match": exact / max(len(reference), 1)}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        from hfexport.tasks._labelled import batched

        texts = [item["text"] for item in batched(runner.transcribe, inputs, batch)]
        return {"wer": word_error_rate(labels, texts)}

    def reference_runner(self, model, extractor, bundle):
        from hfexport.validation.whisper import WhisperTorchRunner

        return WhisperTorchRunner(model, extractor, self.name, bundle)

    def bundle_runner(self, predictor):
        from hfexport.validation.whisper import WhisperBundleRunner

        return WhisperBundleRunner(predictor, self.name)

    def stage_predictor(self, manifest, staging, model, artifact):
        from hfexport.runtime.tasks.automatic_speech_recognition_seq2seq import open_predictor

        return open_predictor(manifest, staging, model, artifact.path.with_name(artifact.parts[0]))


SPEC = SpeechSeq2Seq()
