"""What both encoder-decoder (seq2seq) exports share: the two tensor-only wrappers, their names and sample
inputs, and the greedy check of the exported pair against PyTorch `generate`, run through the runtime's loop.

The two graphs (ONNX and OpenVINO alike; docs/decisions/0150-seq2seq-two-graphs-cached-cross-attention.md):

    encoder  input_ids [batch, sequence], attention_mask [batch, sequence]
             (speech, Whisper: input_features [batch, mel bins, frames], no mask)
             -> cross.<i>.key/value [batch, heads, sequence, head_dim]   (every decoder layer's cross-attention
                K/V, projected once from the encoder's states)
    decoder  input_ids [batch, step], encoder_attention_mask [batch, sequence] (text only),
             past_key_values.<i>.key/value [batch, heads, past, head_dim], cross.<i>.key/value
             -> logits [batch, step, vocab], present.<i>.key/value [batch, heads, past + step, head_dim]

The encoder wrapper runs the model's own decoder once on a dummy token with an empty EncoderDecoderCache, so
the cross-attention projections are the model's own code for every architecture; tracing keeps only what the
cross.* outputs need (the dummy step's self-attention, FFN and LM head are dead code and are dropped).
"""

from __future__ import annotations

from hfexport.errors import ExportError

SAMPLE_SOURCE = "hfexport checks the exported encoder and decoder by greedy decoding this sentence"
ENCODER_INPUTS = ("input_ids", "attention_mask")
DECODER_INPUTS = ("input_ids", "encoder_attention_mask")
SPEECH_ENCODER_INPUTS, SPEECH_DECODER_INPUTS = ("input_features",), ("input_ids",)  # Whisper: no source mask
ENCODER_FILE, DECODER_FILE = "encoder_model", "decoder_model"  # + .onnx / .xml


def is_speech(model) -> bool:
    """A speech encoder-decoder (Whisper): log-mel `input_features` in, every clip padded to the same frames."""
    return getattr(model, "main_input_name", "input_ids") == "input_features"


def encoder_inputs(model) -> tuple[str, ...]:
    return SPEECH_ENCODER_INPUTS if is_speech(model) else ENCODER_INPUTS


def cross_names(layers: int) -> list[str]:
    return [f"cross.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def decoder_input_names(layers: int, speech: bool = False) -> list[str]:
    names = list(SPEECH_DECODER_INPUTS if speech else DECODER_INPUTS)
    for i in range(layers):
        names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value", f"cross.{i}.key", f"cross.{i}.value"]
    return names


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def _caches(past_4d: bool, tensors: list, layers: int):
    """A (self, cross) EncoderDecoderCache holding `tensors` (past key, past value, cross key, cross value per layer).

    NOTE: `past_4d` as in _generation_graph.generation_wrapper: a fresh layer starts from a [batch, heads, 0, dim]
    slice instead of a 1-D empty tensor, which OpenVINO's converter needs (it rejects a rank-1/rank-4 Concat).
    """
    from transformers import DynamicCache, EncoderDecoderCache

    own, cross = DynamicCache(), DynamicCache()
    for i in range(layers):
        for cache, (key, value) in ((own, tensors[4 * i:4 * i + 2]), (cross, tensors[4 * i + 2:4 * i + 4])):
            if past_4d:
                cache.update(key[:, :, :0], value[:, :, :0], i)
                layer = cache.layers[i]
                layer.keys, layer.values = key, value
            else:
                cache.update(key, value, i)
    return EncoderDecoderCache(own, cross)


def encoder_wrapper(model):
    """(input_ids, attention_mask) -> every decoder layer's cross-attention key and value; a speech model's
    (input_features) -> the same."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    def cross_of(states, attention_mask):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        dummy = torch.zeros(states.shape[0], 1, dtype=torch.long, device=states.device)
        extra = {} if attention_mask is None else {"encoder_attention_mask": attention_mask}
        model.get_decoder()(input_ids=dummy, encoder_hidden_states=states, cache=cache, use_cache=True, **extra)
        cross = cache.cross_attention_cache.layers
        return tuple(t for layer in cross for t in (layer.keys, layer.values))

    class EncoderGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            states = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                              return_dict=True).last_hidden_state
            return cross_of(states, attention_mask)

    class SpeechEncoderGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_features):
            states = self.model.get_encoder()(input_features=input_features, return_dict=True).last_hidden_state
            return cross_of(states, None)

    return (SpeechEncoderGraph() if is_speech(model) else EncoderGraph()).eval()


def decoder_wrapper(model, layers: int, *, past_4d: bool = False):
    """(input_ids, encoder_attention_mask, past/cross per layer) -> (logits, present per layer)."""
    import torch

    def run(input_ids, encoder_attention_mask, tensors):
        cache = _caches(past_4d, list(tensors), layers)
        # The cross-attention reads the cached K/V; the encoder states it is handed only give its shape.
        if encoder_attention_mask is None:  # speech: no source mask; one dummy state per row
            shape_only, extra = torch.zeros(input_ids.shape[0], 1, 1, dtype=torch.float32), {}
        else:
            shape_only = encoder_attention_mask[:, :, None].to(torch.float32)
            extra = {"attention_mask": encoder_attention_mask}
        out = model(encoder_outputs=(shape_only,), decoder_input_ids=input_ids, cache=cache, use_cache=True,
                    return_dict=True, **extra)
        present = out.cache.self_attention_cache.layers
        return (out.logits, *[t for i in range(layers) for t in (present[i].keys, present[i].values)])

    class DecoderGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, encoder_attention_mask, *tensors):
            return run(input_ids, encoder_attention_mask, tensors)

    class SpeechDecoderGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, *tensors):
            return run(input_ids, None, tensors)

    return (SpeechDecoderGraph() if is_speech(model) else DecoderGraph()).eval()


def layout(model) -> tuple[int, int, int]:
    """(decoder layers, heads, head dim), read from a real cross-attention cache."""
    import torch

    with torch.inference_mode():
        sample = ((speech_features(model, 1),) if is_speech(model)
                  else (torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long)))
        cross = encoder_wrapper(model)(*sample)
    return len(cross) // 2, int(cross[0].shape[1]), int(cross[0].shape[3])


def speech_features(model, batch: int, generator=None):
    """Random log-mel features of the shape a speech encoder takes: [batch, mel bins, frames]
    (Whisper: 2 x max_source_positions frames, the encoder's two convolutions halve them)."""
    import torch

    config = model.config
    frames = 2 * int(config.max_source_positions)
    return torch.randn(batch, int(config.num_mel_bins), frames, generator=generator)


def sample_inputs(model, layers: int, heads: int, head_dim: int) -> tuple[tuple, tuple]:
    """(encoder sample, decoder sample): distinct batch (2), source (7), past (3) and step (2) lengths keep every
    dynamic axis apart."""
    import torch

    vocab = int(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    batch, source, past, step = 2, 7, 3, 2
    speech = is_speech(model)
    if speech:  # the cross K/V are as long as the encoder's output (frames / 2)
        encoder, source = (speech_features(model, batch, generator),), int(model.config.max_source_positions)
    else:
        encoder = (torch.randint(0, vocab, (batch, source), generator=generator),
                   torch.ones(batch, source, dtype=torch.long))
    tensors = []
    for _ in range(layers):
        tensors += [torch.randn(batch, heads, length, head_dim, generator=generator)
                    for length in (past, past, source, source)]
    mask = () if speech else (torch.ones(batch, source, dtype=torch.long),)
    return encoder, (torch.randint(0, vocab, (batch, step), generator=generator), *mask, *tensors)


def dynamic_axes(layers: int, speech: bool = False) -> tuple[dict, dict]:
    """Exporter dynamic_axes of (encoder, decoder); a speech encoder's frames are fixed (Whisper pads to 30 s)."""
    if speech:
        encoder = {name: {0: "batch"} for name in SPEECH_ENCODER_INPUTS}
    else:
        encoder = {name: {0: "batch", 1: "sequence"} for name in ENCODER_INPUTS}
    encoder.update({name: {0: "batch", 2: "sequence"} for name in cross_names(layers)})
    decoder = {"input_ids": {0: "batch", 1: "step"}, "logits": {0: "batch", 1: "step"}}
    if not speech:
        decoder["encoder_attention_mask"] = {0: "batch", 1: "sequence"}
    for name in decoder_input_names(layers, speech)[len(SPEECH_DECODER_INPUTS if speech else DECODER_INPUTS):]:
        decoder[name] = {0: "batch", 2: "past" if name.startswith("past") else "sequence"}
    decoder.update({name: {0: "batch", 2: "total"} for name in present_names(layers)})
    return encoder, decoder


def greedy_check(model, tokenizer, graphs, tokens: int) -> tuple[list[int], list[int], float]:
    """PyTorch `generate` vs the runtime's loop over the exported pair (`graphs`: runtime.seq2seq.Seq2SeqGraphs):
    greedy tokens and the worst teacher-forced logit gap over PyTorch's sequence."""
    import numpy as np
    import torch

    from hfexport.runtime.seq2seq import Constraints

    source = tokenizer(SAMPLE_SOURCE, return_tensors="pt")
    ids, mask = source["input_ids"], source["attention_mask"]
    gen = model.generation_config
    with torch.inference_mode():
        # min_new_tokens masks the end-of-sequence ids at every step, so a short random model is checked over
        # all `tokens`; the loop below masks the same ones.
        full = model.generate(ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                              do_sample=False, num_beams=1)
        reference = model(input_ids=ids, attention_mask=mask, decoder_input_ids=full).logits.numpy()
    want = full[0, 1:].tolist()
    rules = Constraints.from_config(gen.to_dict(), model.config.to_dict())
    cross = graphs.encode(ids.numpy(), mask.numpy())
    logits, _ = graphs.step(full.numpy(), mask.numpy(), graphs.empty_past(1, cross), cross, all_logits=True)
    diff = float(np.abs(logits - reference).max())
    got: list[int] = []
    past = graphs.empty_past(1, cross)
    current = np.array([[rules.start]], np.int64)
    for step in range(tokens):
        logits, past = graphs.step(current, mask.numpy(), past, cross)
        logits = rules.apply(logits, step, tokens, min_new_tokens=tokens, history=[[rules.start, *got]])
        got.append(int(logits[0].argmax()))
        current = np.array([[got[-1]]], np.int64)
    return want, got, diff


def raise_on_mismatch(want: list[int], got: list[int], diff: float, what: str) -> None:
    if want != got:
        first = next(i for i, (w, g) in enumerate(zip(want, got)) if w != g)
        raise ExportError(f"exported encoder-decoder's greedy tokens differ from PyTorch's generate at token {first} "
                          f"(PyTorch {want}, {what} {got}; max teacher-forced logit difference {diff:.2e})")


def for_each_graph(artifact, out_dir, run_one, what: str):
    """Run a single-graph step (`run_one(one_graph_artifact, folder) -> artifact`) on every graph of a multi-graph
    artifact; the results keep the graphs' names side by side in `out_dir`, and their stats are summed (nodes,
    quantised nodes, fused operators) with each graph's own under `graphs`."""
    import dataclasses
    import shutil

    joined, per_graph = [], {}
    for index, graph in enumerate(artifact.graphs()):
        one = dataclasses.replace(artifact, path=graph, parts=(), stats=_graph_stats(artifact.stats, graph.stem),
                                  **({} if index == 0 else {"inputs": (), "outputs": ()}))
        folder = out_dir / graph.stem
        folder.mkdir(parents=True, exist_ok=True)
        result = run_one(one, folder)
        files = result.files()
        if len(files) != (2 if result.path.suffix == ".xml" else 1):
            raise ExportError(f"{what}: {graph.name} came out as {len(files)} files (external weights); "
                              "encoder-decoder graphs past 2 GB are not supported yet")
        for file in files:  # encoder_model.xml + encoder_model.bin, decoder_model.onnx, ...
            shutil.move(str(file), str(out_dir / (graph.stem + file.suffix)))
        shutil.rmtree(folder, ignore_errors=True)
        joined.append(out_dir / graph.name)
        per_graph[graph.stem] = result.stats
        if index == 0:
            first = result
    stats = {k: v for k, v in first.stats.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    for key in ("nodes", "nodes_before", "quantized_nodes"):
        values = [s.get(key) for s in per_graph.values()]
        if all(isinstance(v, int) for v in values):
            stats[key] = sum(values)
    fused: dict[str, int] = {}
    for s in per_graph.values():
        for op, n in (s.get("fused_operators") or {}).items():
            fused[op] = fused.get(op, 0) + n
    if "fused_operators" in stats:
        stats["fused_operators"] = fused
    stats["graphs"] = per_graph
    return dataclasses.replace(first, path=joined[0], parts=tuple(p.name for p in joined[1:]), stats=stats)


def _graph_stats(stats: dict, stem: str) -> dict:
    """One graph's stats out of a joined artifact's (what the next step reads as `nodes_before`)."""
    return dict((stats.get("graphs") or {}).get(stem, {}))
