"""Token classification (NER): per-token labels grouped into entities ("simple" aggregation)."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import label_of, softmax


def _split_tag(label: str) -> tuple[str, str]:
    if label[:2] in ("B-", "I-", "E-", "S-"):
        return label[0], label[2:]
    return "I", label


def postprocess(outputs, batch, meta, texts, encoder, aggregation: str = "simple", **_options):
    probs = softmax(outputs["logits"])
    id2label = meta.id2label or {}
    results = []
    for row, text in enumerate(texts):
        tokens = []
        for pos in range(probs.shape[1]):
            if batch.attention_mask[row, pos] == 0 or batch.special_tokens_mask[row, pos]:
                continue
            index = int(probs[row, pos].argmax())
            start, end = (int(v) for v in batch.offsets[row, pos])
            tokens.append({"entity": label_of(id2label, index), "score": float(probs[row, pos, index]),
                           "index": pos, "start": start, "end": end, "word": text[start:end]})
        if aggregation == "none":
            results.append([t for t in tokens if t["entity"] != "O"])
            continue
        groups: list[dict] = []
        for token in tokens:
            tag, entity = _split_tag(token["entity"])
            if entity == "O":
                continue
            last = groups[-1] if groups else None
            # Sub-words of one word (no gap between spans) and I- tags continue the current group.
            continues = last is not None and last["entity_group"] == entity and (
                tag == "I" or token["start"] == last["end"])
            if continues:
                last["scores"].append(token["score"])
                last["end"] = token["end"]
            else:
                groups.append({"entity_group": entity, "scores": [token["score"]],
                               "start": token["start"], "end": token["end"]})
        results.append([{"entity_group": g["entity_group"], "score": float(np.mean(g["scores"])),
                         "word": text[g["start"]:g["end"]], "start": g["start"], "end": g["end"]}
                        for g in groups])
    return results
