"""The bundle manifest's body, written by the build (the runtime reads it back: hfexport/runtime/manifest.py)."""

from __future__ import annotations


def manifest_body(source, profile, recipe, records, artifact, model_files, tokenizer, precision) -> dict:
    from hfexport import host
    from hfexport.build.bundle import tool_versions

    config = source.config
    return {
        "model": {"id": source.model_id, "revision": source.revision, "task": source.task,
                  "model_type": source.model_type, "max_length": source.max_length, "pooling": source.pooling,
                  "id2label": config.get("id2label") if source.task != "feature-extraction" else None,
                  "problem_type": config.get("problem_type"),
                  "mask_token": tokenizer.mask_token, "mask_token_id": tokenizer.mask_token_id},
        "target": {"name": profile.name, "backend": profile.backend, "device": profile.device,
                   "execution_providers": profile.execution_providers, "isa": profile.effective_isa(),
                   "precision": precision, "session": profile.session_options(),
                   "runtime_packages": profile.runtime_packages},
        "recipe": {"name": recipe.name, "gates": recipe.gates.model_dump(mode="json"),
                   "evaluation": recipe.evaluation.model_dump(mode="json")},
        "passes": records,
        "model_file": model_files[0],
        "model_files": model_files,
        "tokenizer": {"file": "tokenizer/tokenizer.json", "pad_token": tokenizer.pad_token,
                      "pad_token_id": tokenizer.pad_token_id, "padding_side": tokenizer.padding_side},
        "signature": artifact.signature(),
        "tools": tool_versions(),
        "build_host": host.host_summary(),
    }


