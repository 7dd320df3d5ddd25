"""Image-text dual encoders (CLIP, SigLIP): the two towers exported apart, as two graphs of one artifact.

    image_model  pixel_values [batch, 3, height, width] -> image_embeds [batch, embed]   (get_image_features)
    text_model   input_ids, attention_mask [batch, sequence] -> text_embeds [batch, embed]   (get_text_features)

Both embeddings are projected and not normalised, as transformers returns them; the runtime normalises and scales
them (logit_scale, SigLIP's logit_bias) from the manifest, so an app can embed a thousand labels once and score
every image against them. The artifact's `path` is the image graph, `parts` the text graph (the encoder-decoder
layout: optimize and quantize run each graph on its own, backends/_seq2seq_graph.for_each_graph), and each graph
is checked against PyTorch on a sample batch before it is passed on. Calibrating int8 (NNCF, static ONNX
Runtime) feeds each tower its own inputs: the calibration images to the image graph, text to the text graph,
tokenised as the runtime tokenises it (SigLIP: padded to 64 tokens).
"""

from __future__ import annotations

from pathlib import Path

from hfexport.errors import ExportError, first_line

IMAGE_FILE, TEXT_FILE = "image_model", "text_model"  # + .onnx / .xml
IMAGE_INPUTS, TEXT_INPUTS = ("pixel_values",), ("input_ids", "attention_mask")
IMAGE_OUTPUT, TEXT_OUTPUT = "image_embeds", "text_embeds"
SAMPLE_TEXTS = ["This is a photo of a cat.", "hfexport checks the exported text tower with this longer sentence."]


def text_padding(model_type: str | None) -> int | None:
    """The fixed length transformers' zero-shot-image-classification pipeline pads text to (SigLIP: 64 tokens,
    "max_length" padding, because SigLIP was trained on padded text and pools the last position), else None."""
    return 64 if "siglip" in str(model_type or "") else None


def tokenize(tokenizer, texts: list[str], model_type: str | None, return_tensors: str = "pt"):
    """Texts as the pipeline tokenises them: padded to the longest (CLIP) or to 64 tokens (SigLIP)."""
    length = text_padding(model_type)
    if length:
        return tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                         return_tensors=return_tensors)
    return tokenizer(texts, padding=True, truncation=True, return_tensors=return_tensors)


def scores(model) -> dict:
    """The model's logit scale (the multiplier, exp of its parameter) and SigLIP's logit bias, for the manifest."""
    out = {"logit_scale": float(model.logit_scale.detach().exp().item())}
    bias = getattr(model, "logit_bias", None)
    out["logit_bias"] = float(bias.detach().item()) if bias is not None else None
    return out


def towers(model):
    """(image module, text module): tensor-only wrappers around get_image_features / get_text_features."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask,
                                                return_dict=True).pooler_output

    return ImageTower().eval(), TextTower().eval()


def samples(ctx) -> tuple[dict, dict]:
    """(image sample, text sample) as torch tensors: two generated images, two texts of different lengths."""
    from hfexport.data import synthetic_image

    images = ctx.hf_processor()(images=[synthetic_image(index) for index in (0, 1)], return_tensors="pt")
    text = tokenize(tower_tokenizer(ctx), SAMPLE_TEXTS, ctx.source.model_type)
    return ({"pixel_values": images["pixel_values"]},
            {name: text[name].long() for name in TEXT_INPUTS})


def tower_tokenizer(ctx):
    """The transformers tokenizer saved beside the image processor (processor/tokenizer in the build)."""
    if "dual_tokenizer" not in ctx._torch_cache:
        from transformers import AutoTokenizer

        ctx._torch_cache["dual_tokenizer"] = AutoTokenizer.from_pretrained(str(ctx.tokenizer_dir / "tokenizer"))
    return ctx._torch_cache["dual_tokenizer"]


def _expected(module, sample: dict, names) -> list:
    import torch

    with torch.inference_mode():
        return [module(*[sample[n] for n in names]).numpy()]


def _check(got, want, tolerance: float, what: str) -> float:
    import numpy as np

    worst = float(np.abs(np.asarray(got[0], np.float64) - want[0]).max())
    if worst > tolerance:
        raise ExportError(f"exported {what} differs from PyTorch by {worst:.2e} (tolerance {tolerance:.0e})")
    return worst


_AXES = {"pixel_values": {0: "batch"}, "input_ids": {0: "batch", 1: "sequence"},
         "attention_mask": {0: "batch", 1: "sequence"}, IMAGE_OUTPUT: {0: "batch"}, TEXT_OUTPUT: {0: "batch"}}


def _graphs(model, ctx):
    image, text = towers(model)
    image_sample, text_sample = samples(ctx)
    return ((IMAGE_FILE, image, image_sample, IMAGE_INPUTS, IMAGE_OUTPUT),
            (TEXT_FILE, text, text_sample, TEXT_INPUTS, TEXT_OUTPUT))


def export_onnx(config, artifact, ctx, out_dir: Path):
    """Both towers to ONNX (TorchScript exporter), each checked against PyTorch with ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    import torch

    from hfexport.artifacts import OnnxModel

    model = ctx.torch_module(artifact.path)
    opset = config.opset or ctx.target.opset
    stats = {"opset": opset, "exporter": "torchscript", "graphs": {}, "max_abs_diff_vs_torch": 0.0, **scores(model)}
    for stem, module, sample, inputs, output in _graphs(model, ctx):
        path = out_dir / f"{stem}.onnx"
        try:
            with torch.inference_mode():
                torch.onnx.export(module, tuple(sample[n] for n in inputs), str(path), input_names=list(inputs),
                                  output_names=[output], dynamic_axes={n: _AXES[n] for n in (*inputs, output)},
                                  opset_version=opset, dynamo=False)
        except Exception as exc:  # exporters raise anything; the first line is what the user needs
            raise ExportError(f"ONNX export of the {stem} tower of {ctx.source.model_type} failed: "
                              f"{first_line(exc)}") from exc
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: sample[i.name].numpy() for i in session.get_inputs()}
        worst = _check(session.run([output], feeds), _expected(module, sample, inputs), config.tolerance, stem)
        nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
        stats["graphs"][stem] = {"nodes": nodes}
        stats["max_abs_diff_vs_torch"] = max(stats["max_abs_diff_vs_torch"], worst)
    stats["nodes"] = sum(g["nodes"] for g in stats["graphs"].values())
    return OnnxModel(out_dir / f"{IMAGE_FILE}.onnx", IMAGE_INPUTS, (IMAGE_OUTPUT,), stats=stats,
                     parts=(f"{TEXT_FILE}.onnx",))


def export_openvino(config, artifact, ctx, out_dir: Path):
    """Both towers to OpenVINO IR (`openvino.convert_model` on the torch modules), checked at f32."""
    import openvino as ov
    import torch

    from hfexport.artifacts import OpenVINOModel
    from hfexport.backends._openvino.export import _name_ports

    model = ctx.torch_module(artifact.path)
    stats = {"weights": "fp16" if config.compress_to_fp16 else "fp32", "graphs": {}, "max_abs_diff_vs_torch": 0.0,
             **scores(model)}
    core = ov.Core()
    for stem, module, sample, inputs, output in _graphs(model, ctx):
        path = out_dir / f"{stem}.xml"
        ports = [(ov.PartialShape([-1, *sample[n].shape[1:]]), ov.Type.f32) if n == "pixel_values"
                 else (ov.PartialShape([-1, -1]), ov.Type.i64) for n in inputs]
        try:
            with torch.inference_mode():
                ir = ov.convert_model(module, example_input=tuple(sample[n] for n in inputs), input=ports)
            _name_ports(ir, inputs, [output])
            ov.save_model(ir, str(path), compress_to_fp16=config.compress_to_fp16)
        except Exception as exc:  # the converter raises anything; the first line is what the user needs
            raise ExportError(f"OpenVINO export of the {stem} tower of {ctx.source.model_type} failed: "
                              f"{first_line(exc)}") from exc
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled.create_infer_request().infer({n: sample[n].numpy() for n in inputs})
        worst = _check([result[compiled.output(output)]], _expected(module, sample, inputs), config.tolerance,
                       stem)
        stats["graphs"][stem] = {"nodes": len(ir.get_ops())}
        stats["max_abs_diff_vs_torch"] = max(stats["max_abs_diff_vs_torch"], worst)
    stats["nodes"] = sum(g["nodes"] for g in stats["graphs"].values())
    return OpenVINOModel(out_dir / f"{IMAGE_FILE}.xml", IMAGE_INPUTS, (IMAGE_OUTPUT,), stats=stats,
                         parts=(f"{TEXT_FILE}.xml",))


def calibration(ctx, graph: Path) -> tuple[list, object]:
    """(items, encode) that calibrate one tower: the build's calibration images for the image graph, the shipped
    calibration text for the text graph, each made into that graph's feeds the way the runtime makes them."""
    if graph.stem != TEXT_FILE:
        from hfexport.backends.base import image_encoder

        return list(ctx.calibration_texts), image_encoder(ctx, IMAGE_INPUTS)
    from hfexport.data import default_calibration_texts

    tokenizer, model_type = tower_tokenizer(ctx), ctx.source.model_type

    def encode(text: str) -> dict:
        encoded = tokenize(tokenizer, [text], model_type, return_tensors="np")
        return {name: encoded[name].astype("int64") for name in TEXT_INPUTS}

    return default_calibration_texts(), encode


def quantize_towers(artifact, out_dir: Path, ctx, quantize_one, what: str = "quantize"):
    """`quantize_one(one_graph_artifact, folder, items, encode)` on each tower, each calibrated on its own inputs."""
    import dataclasses

    from hfexport.backends._seq2seq_graph import for_each_graph

    def run_one(one, folder):
        items, encode = calibration(ctx, one.path)
        inputs, outputs = ((IMAGE_INPUTS, (IMAGE_OUTPUT,)) if one.path.stem != TEXT_FILE
                           else (TEXT_INPUTS, (TEXT_OUTPUT,)))
        return quantize_one(dataclasses.replace(one, inputs=inputs, outputs=outputs), folder, items, encode)

    result = for_each_graph(artifact, out_dir, run_one, what)
    return dataclasses.replace(result, inputs=IMAGE_INPUTS, outputs=(IMAGE_OUTPUT,))
