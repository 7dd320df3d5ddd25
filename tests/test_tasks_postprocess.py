"""Runtime post-processing on hand-made arrays: pooling, softmax labels, entity grouping, spans."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.manifest import ModelInfo
from hfexport.runtime.tasks.feature_extraction import pool
from hfexport.runtime.tasks.question_answering import best_span
from hfexport.runtime.tasks.token_classification import postprocess as tokens_post
from hfexport.runtime.tokenizer import Batch


def test_pool_mean_ignores_padding_and_normalises():
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[2.0, 0.0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean", normalize=True), [[1.0, 0.0]])
    np.testing.assert_allclose(pool(hidden, mask, "cls"), [[1.0, 0.0]])
    np.testing.assert_allclose(pool(hidden, mask, "max"), [[3.0, 0.0]])


def test_best_span_respects_context_and_order():
    start = np.array([9.0, 1.0, 5.0, 0.0])
    end = np.array([9.0, 0.0, 1.0, 6.0])
    context = np.array([False, True, True, True])  # position 0 is the question: never an answer
    s, e, score = best_span(start, end, context)
    assert (s, e) == (2, 3) and 0 < score <= 1


def test_token_classification_groups_bio_tags():
    text = "Ada Lovelace lived in London"
    offsets = np.array([[[0, 0], [0, 3], [4, 12], [13, 18], [19, 21], [22, 28], [0, 0]]])
    labels = [0, 1, 2, 0, 0, 3, 0]  # O B-PER I-PER O O B-LOC O
    logits = np.full((1, 7, 5), -5.0)
    for pos, label in enumerate(labels):
        logits[0, pos, label] = 5.0
    batch = Batch(input_ids=np.zeros((1, 7), np.int64), attention_mask=np.ones((1, 7), np.int64),
                  token_type_ids=np.zeros((1, 7), np.int64), offsets=offsets,
                  special_tokens_mask=np.array([[1, 0, 0, 0, 0, 0, 1]]), sequence_ids=[[None] + [0] * 5 + [None]])
    meta = ModelInfo(id="tiny", revision=None, task="token-classification", model_type="bert", max_length=7,
                     id2label={"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC", "4": "I-LOC"})
    groups = tokens_post({"logits": logits}, batch, meta, [text], None)[0]
    assert [(g["entity_group"], g["word"]) for g in groups] == [("PER", "Ada Lovelace"), ("LOC", "London")]
