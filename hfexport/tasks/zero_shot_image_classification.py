"""Zero-shot image classification with image-text dual encoders (CLIP, SigLIP): labels chosen at call time.

The towers are exported apart (backends/_dual_encoder.py): an image graph (pixel_values -> image_embeds) and a text
graph (input_ids, attention_mask -> text_embeds), the projected embeddings of `get_image_features` /
`get_text_features`. The logit scale (and SigLIP's logit bias) are the manifest's, not a graph's, so an app
embeds its labels once (runtime/dual_encoder.py). The bundle ships both the image processor (processor/) and the
tokenizer (tokenizer/). Calibration and evaluation data are images; the text tower is calibrated on the shipped
corpus and judged on the label prompts of validation/dual_encoder.py.
"""

from __future__ import annotations

from functools import cache

from hfexport.errors import ModelLoadError
from hfexport.tasks.base import Output, TaskSpec


class ZeroShotImageClassification(TaskSpec):
    name = "zero-shot-image-classification"
    auto_class = "AutoModelForZeroShotImageClassification"  # CLIPModel, SiglipModel, ... (loaded by architecture)
    outputs = (Output("image_embeds", ("batch", "embed")), Output("text_embeds", ("batch", "embed")))
    aliases = ("image-text-embedding",)
    modality = "image"
    dual_encoder = True  # the backends export, optimise and quantise the two towers as two graphs
    # NOTE: measured on tiny random-init CLIP and SigLIP (docs/decisions/0162-dual-encoders.md): fp32 exports agree
    # to 1e-6; the default int8 (cpu: dynamic on MatMul; openvino: NNCF int8 weight compression) kept both towers'
    # cosine min >= 0.998 and zero-shot top-1 agreement >= 0.945 over 128 images x 4 label sets.
    default_gates = {"cosine_min": 0.98, "cosine_mean": 0.99, "top1_agreement": 0.90}
    gate_metrics = frozenset(default_gates)
    distill_kind = None  # no distillation loss for two towers yet: the distill pass refuses at plan time

    def check_model(self, config: dict) -> None:
        if not (isinstance(config.get("text_config"), dict) and isinstance(config.get("vision_config"), dict)):
            raise ModelLoadError(f"{config.get('model_type') or 'this model'} is not an image-text dual encoder "
                                 "(config.json has no text_config and vision_config); zero-shot image "
                                 "classification needs a CLIP-style model such as CLIPModel or SiglipModel")

    # -- build ------------------------------------------------------------------------------------

    def prepare_processor(self, source, folder):
        """The image processor (checked against the runtime's preprocessing) and, in folder/tokenizer, the fast
        tokenizer: the bundle ships both."""
        from hfexport.build.engine import _prepare_processor, _prepare_tokenizer

        _prepare_processor(source, folder)
        _prepare_tokenizer(source, folder / "tokenizer")
        return folder

    def text_tokenizer(self, source):
        """The model's transformers tokenizer (the manifest's tokenizer section reads its padding facts)."""
        return _tokenizer(str(source.local_dir), source.trust_remote_code)

    def manifest_fields(self, config: dict, processor, pooling) -> dict:
        from hfexport.backends._dual_encoder import text_padding

        model_type = config.get("model_type")
        positions = (config.get("text_config") or {}).get("max_position_embeddings")
        return {"score": "sigmoid" if "siglip" in str(model_type) else "softmax",
                "text_padding": text_padding(model_type), "hypothesis_template": "This is a photo of {}.",
                # the text tower's positions: model.max_length reads the top-level config, which has none
                "text_max_length": int(positions) if isinstance(positions, int) else None,
                "graphs": {"image": "model_file", "text": "the other graph of model_files"}}

    def recorded_fields(self, records: list[dict]) -> dict:
        """logit_scale and logit_bias as the export read them from the model's weights."""
        export = next(r for r in records if r["name"] == "export")
        return {name: export["stats"][name] for name in ("logit_scale", "logit_bias")}

    # -- evaluation -------------------------------------------------------------------------------

    def eval_inputs(self, images: list, mask_token: str | None = None) -> list:
        return list(images)

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.data import image_examples

        return image_examples(rows, source=source)

    def fidelity(self, reference, candidate) -> dict[str, float]:
        from hfexport.validation.dual_encoder import fidelity

        return fidelity(reference, candidate)

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        from hfexport.validation.dual_encoder import zero_shot_accuracy

        return zero_shot_accuracy(runner, inputs, labels, batch)

    def call(self, predictor, inputs: list):
        """An app's call: the images against one label set (what a search's side-by-side timing runs)."""
        from hfexport.validation.dual_encoder import LABEL_SETS

        return predictor(inputs, candidate_labels=list(LABEL_SETS[0]))

    def reference_runner(self, model, processor, bundle):
        """PyTorch fp32 behind transformers' image processor and the bundle's tokenizer, as the pipeline runs it."""
        from transformers import AutoTokenizer

        from hfexport.validation.dual_encoder import TorchDualRunner

        tokenizer = AutoTokenizer.from_pretrained(str(bundle.path / "tokenizer"))
        return TorchDualRunner(model, processor, tokenizer, self.name, bundle.manifest.model)

    def bundle_runner(self, predictor):
        from hfexport.validation.dual_encoder import BundleDualRunner

        return BundleDualRunner(predictor)

    def stage_predictor(self, manifest, staging, backend, artifact):
        """A build stage's two graphs behind the staged bundle's processor and tokenizer."""
        from hfexport.runtime.dual_encoder import open_dual_encoder

        return open_dual_encoder(manifest, staging, backend, artifact.graphs()[1])

    def graph_outputs(self, outputs) -> tuple:
        return (outputs["image_embeds"], outputs["text_embeds"])


@cache
def _tokenizer(folder: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


SPEC = ZeroShotImageClassification()
