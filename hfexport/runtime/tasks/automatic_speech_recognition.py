"""Speech recognition (CTC): the text of each clip, greedy-decoded from the logits (wav2vec2, HuBERT)."""

from __future__ import annotations

from hfexport.runtime.audio import as_audio_list, ctc_greedy_ids, frame_count


def normalise_inputs(clips, question=None, context=None) -> list:
    """A clip (mono float array or .wav path) or a list of them, as a list."""
    if question is not None or context is not None:
        raise ValueError("question= and context= are for question answering bundles")
    return as_audio_list(clips)


def postprocess(outputs, batch, meta, clips, encoder, **options) -> list[dict]:
    """{"text": ...} per clip: argmax per frame over the clip's own frames, repeats collapsed, blank dropped."""
    if options:
        raise ValueError(f"speech recognition takes no options, got {sorted(options)[0]}=")
    fields = meta.task_fields
    logits = outputs["logits"]
    results = []
    for row, samples in enumerate(batch.lengths):
        frames = min(frame_count(samples, fields["conv_kernel"], fields["conv_stride"]), logits.shape[1])
        results.append({"text": encoder.vocabulary.decode(ctc_greedy_ids(logits[row], frames))})
    return results
