"""The `hfexport` command: thin Click commands over hfexport.api. Heavy imports live in command bodies."""

from __future__ import annotations

import json
import sys

import click

from hfexport._cli_errors import EXIT_ERROR, EXIT_GATES, VerboseAnywhereGroup
from hfexport._cli_errors import handle_errors as _handle_errors
from hfexport.cli_matrix import matrix
from hfexport.cli_trust import sign, verify


@click.group(cls=VerboseAnywhereGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True, help="Show full tracebacks on errors (before or after the command).")
@click.version_option(package_name="hfexport")
def main(verbose: bool) -> None:
    """Export Hugging Face models into verified, torch-free deployment bundles."""


@main.command()
@click.option("--model", "-m", default=None, help="Hub id or local folder [default: all-MiniLM-L6-v2, offline].")
@click.option("--target", "-t", default="cpu", show_default=True, help="Target name or path to a YAML profile.")
@click.option("--recipe", "-r", default=None, help="Recipe name or YAML path [default: the target's].")
@click.option("--output", "-o", default="hfexport-bundle", show_default=True, help="Bundle folder to write.")
@click.option("--task", default=None, help="Task (inferred from the model when omitted).")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--trust-remote-code", is_flag=True, help="Allow custom model code from the hub repository.")
@click.option("--calibration-data", type=click.Path(), default=None, help="Text file (txt/jsonl/csv/parquet).")
@click.option("--eval-data", type=click.Path(), default=None, help="Held-out text for validation.")
@click.option("--train-data", type=click.Path(), default=None, help="Unlabelled text for distillation.")
@click.option("--text-column", default=None, help="Column holding text in jsonl/csv/parquet data.")
@click.option("--label-column", default=None, help="Column holding labels in --eval-data (task metrics).")
@click.option("--threads", type=int, default=None, help="Threads for validation timing [default: profile's].")
@click.option("--no-gates", is_flag=True, help="Write the bundle even if fidelity gates fail.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--no-cache", is_flag=True, help="Rerun every pass; neither reuse nor store cached stages.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--sign-with", type=click.Path(), default=None,
              help="Sign the bundle with this PEM private key at the end of the build (hfexport[sign]).")
@click.option("--validation", type=click.Choice(["full", "quick"]), default=None,
              help="full: the recipe's evaluation [default]; quick: fewer texts and runs, no memory, gates "
                   "still apply, no speed ratio claimed (for iterating, not benchmarking).")
@_handle_errors
def build(model, target, recipe, output, task, revision, trust_remote_code, calibration_data, eval_data,
          train_data, text_column, label_column, threads, no_gates, force, no_cache, quiet, log_format,
          sign_with, validation) -> None:
    """Build a deployable bundle for a target."""
    from hfexport.api import build as run_build
    from hfexport.progress import Progress

    progress = Progress("quiet" if quiet else log_format)
    result = run_build(model, target=target, recipe=recipe, output=output, task=task, revision=revision,
                       trust_remote_code=trust_remote_code, calibration_data=calibration_data,
                       eval_data=eval_data, train_data=train_data, text_column=text_column,
                       label_column=label_column,
                       gates=not no_gates, force=force, cache=not no_cache,
                       threads=threads, progress=progress, sign_with=sign_with, validation=validation,
                       verbose=click.get_current_context().find_root().params.get("verbose", False))
    summary = result.report.summary
    if log_format == "json":
        click.echo(json.dumps({"event": "bundle", "path": str(result.bundle), "summary": summary}))
    else:
        runtime = result.report.target.runtime or {}  # asked_for: the bundle's provider was missing
        where = f" on this host's {runtime['execution_providers']}" if "asked_for" in runtime else ""
        click.echo(f"bundle written to {result.bundle}  ({result.report.speed_phrase(' than PyTorch' + where)}, "
                   f"{summary['size_ratio']:.2f}x the size; report: {result.bundle / 'report' / 'report.html'})")


@main.command()
@_handle_errors
def targets() -> None:
    """List target profiles and whether each fits this host."""
    from hfexport._shipped import list_shipped
    from hfexport._yaml import load_model_file
    from hfexport.profiles import TargetProfile

    profiles = [load_model_file(path, TargetProfile) for path in list_shipped("targets")]
    rows = [("TARGET", "BUILD HERE", "RUN HERE", "BACKEND/DEVICE", "PRECISIONS", "DESCRIPTION")]
    for profile in profiles:
        runs, why = profile.host_fit()
        rows.append((profile.name, _build_fit(profile), "yes" if runs else f"no: {why}",
                     f"{profile.backend}/{profile.device}", ",".join(profile.precisions), profile.description))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for *columns, description in rows:
        click.echo("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)) + f"  {description}")


def _build_fit(profile) -> str:
    """Whether this host can build for the target: a build needs the backend's build packages, not its device
    (a cuda bundle is built and validated here on ONNX Runtime's CPU provider; the report says so)."""
    import importlib.util

    needs = {"onnxruntime": ["torch", "onnxruntime"], "openvino": ["torch", "openvino", "nncf"],
             "xla": ["torch", "jax"]}.get(profile.backend, ["torch"])
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        return f"no: needs {', '.join(missing)}"
    return "yes" if profile.host_fit()[0] else "yes (validated on CPU)"


@main.command()
@_handle_errors
def recipes() -> None:
    """List the shipped recipes, the targets each is written for, and the old names that still resolve."""
    from hfexport.recipes import RECIPE_ALIASES, list_recipes

    rows = [(r.name, ",".join(r.targets) or "any", " -> ".join(spec.type for spec in r.passes), r.description)
            for r in list_recipes()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for *columns, description in rows:
        click.echo("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)) + f"  {description}")
    click.echo("old names (kept for one release): "
               + ", ".join(f"{old} -> {new}" for old, new in RECIPE_ALIASES.items()))


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@_handle_errors
def inspect(bundle, as_json) -> None:
    """Summarise a bundle's manifest and verify its checksums."""
    from hfexport.api import inspect_bundle

    info = inspect_bundle(bundle)
    m = info["manifest"]
    if as_json:
        signed = info.get("signature")
        click.echo(json.dumps({**m.to_dict(), "checksums": info["checksums"],
                               "signature": {"signer": signed.signer, "method": signed.method} if signed else None},
                              indent=2))
        return
    model, target = m.model, m.target
    click.echo(f"bundle     {info['path']}")
    click.echo(f"format     {m.format_version} (hfexport {m.hfexport_version})")
    click.echo(f"model      {model.id} @ {model.revision or '-'}  ({model.task}, {model.model_type})")
    click.echo(f"target     {target.name} ({target.backend}, {target.isa}, {target.precision})")
    for note in info.get("notes", []):
        click.echo(f"warning    {note}")
    for p in m.passes:
        click.echo(f"pass       {p.name:<16} {p.seconds:>6.1f}s  {p.size_bytes / 1e6:>7.1f} MB"
                   + ("  (cached)" if p.cached else ""))
    total = sum(f.bytes for f in m.files.values())
    click.echo(f"files      {len(m.files)} files, {total / 1e6:.1f} MB")
    v = m.validation
    if v:
        s = v.summary
        fid = ", ".join(f"{k} {val:.4f}" for k, val in s.items() if k not in ("speedup", "throughput_ratio",
                                                                              "size_ratio"))
        speed = (f"speed ratio unreliable ({v.timing_warnings[0]})" if v.timing_warnings
                 else f"{s['speedup']:.2f}x faster")
        click.echo(f"validation {'passed' if v.passed else 'FAILED'}: {speed}, "
                   f"{s['size_ratio']:.2f}x size, {fid}")
    click.echo(f"checksums  {info['checksums']}")
    signed = info.get("signature")
    click.echo(f"signature  {signed.describe() if signed else 'unsigned (sign it: hfexport sign BUNDLE --private-key KEY)'}")
    if info["checksums"] != "ok":
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("bundle", type=click.Path())
@click.argument("texts", nargs=-1)
@click.option("--question", default=None, help="Question answering: the question (TEXTS is the context).")
@click.option("--label", "labels", multiple=True, help="Zero-shot (image) classification: a candidate label (repeat it).")
@click.option("--top-k", type=int, default=None, help="Classification / fill-mask: results per text; "
              "text generation: sample from the k most likely tokens.")
@click.option("--max-new-tokens", type=int, default=None, help="Text generation: tokens to generate at most.")
@click.option("--chat", is_flag=True, help="Text generation: interactive chat, one user message per stdin line.")
@click.option("--do-sample/--greedy", default=None, help="Text generation [default: the model's generation config].")
@click.option("--temperature", type=float, default=None)
@click.option("--top-p", type=float, default=None)
@click.option("--repetition-penalty", type=float, default=None)
@click.option("--seed", type=int, default=None, help="Text generation: repeatable sampling.")
@click.option("--stop", multiple=True, help="Text generation: stop at this string (repeatable).")
@click.option("--device", default=None, help="OpenVINO bundles: run on this device (CPU, GPU, NPU, AUTO).")
@click.option("--public-key", type=click.Path(), default=None,
              help="Refuse the bundle unless it is signed by this PEM public key (hfexport[sign]).")
@_handle_errors
def run(bundle, texts, question, labels, top_k, max_new_tokens, chat, do_sample, temperature, top_p, repetition_penalty,
        seed, stop, device, public_key) -> None:
    """Run text through a bundle with the torch-free runtime and print the results.

    Text-generation bundles stream the generated text of each prompt as it comes; --chat reads user
    messages from stdin (one per line, until EOF) and streams each reply.
    """
    import numpy as np

    from hfexport.runtime import load

    predictor = load(bundle, device=device, public_key=public_key)
    if predictor.task == "text-generation":
        options = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature,
                   "top_k": top_k, "top_p": top_p, "repetition_penalty": repetition_penalty, "seed": seed,
                   "stop": list(stop) or None}
        _run_generation(predictor, texts, chat, options)
        return
    if chat:
        raise click.UsageError("--chat needs a text-generation bundle")
    if not texts:
        raise click.UsageError("give at least one text")
    options = {"top_k": top_k} if top_k else {}
    if predictor.task.startswith("zero-shot") and not labels:  # text (NLI) or images (CLIP): labels at call time
        raise click.UsageError(f"a {predictor.task} bundle needs --label (repeat it for each candidate label)")
    if labels:
        options["candidate_labels"] = list(labels)
    if predictor.task == "question-answering":
        if not question:
            raise click.UsageError("question answering needs --question")
        results = predictor([(question, " ".join(texts))], **options)
    else:
        results = predictor(list(texts), **options)
    if isinstance(results, np.ndarray):
        np.set_printoptions(precision=4, suppress=True, threshold=12, edgeitems=4)
        for text, vector in zip(texts, results):
            click.echo(f"{text!r}: dim={vector.shape[0]} norm={np.linalg.norm(vector):.4f} {vector}")
        if len(results) > 1:
            unit = results / np.linalg.norm(results, axis=1, keepdims=True)
            click.echo("cosine similarity:\n" + np.array2string(unit @ unit.T, precision=4))
        return
    for text, result in zip(texts, results):
        click.echo(f"{text!r}: {json.dumps(result)}")


def _run_generation(generator, prompts, chat: bool, options: dict) -> None:
    if not chat:
        if not prompts:
            raise click.UsageError("give a prompt, or --chat")
        for prompt in prompts:
            for piece in generator.stream(prompt, **options):
                click.echo(piece, nl=False)
            click.echo()
        return
    if not generator.chat_template:
        raise click.UsageError("this model's tokenizer has no chat template; run it with a prompt instead")
    messages = [{"role": "user", "content": p} for p in prompts]
    interactive = sys.stdin.isatty()
    while True:
        if not messages or messages[-1]["role"] != "user":
            if interactive:
                click.echo("> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                return
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line.rstrip("\n")})
        reply = []
        for piece in generator.stream(messages, **options):
            reply.append(piece)
            click.echo(piece, nl=False)
        click.echo()
        messages.append({"role": "assistant", "content": "".join(reply)})


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--eval-data", type=click.Path(), default=None,
              help="Held-out data: txt, jsonl, csv, parquet or a datasets folder.")
@click.option("--text-column", default=None)
@click.option("--label-column", default=None, help="Labels for task metrics (accuracy, F1, Spearman, EM).")
@click.option("--report-dir", type=click.Path(), default=None, help="[default: BUNDLE.validation/]")
@click.option("--threads", type=int, default=None)
@click.option("--quiet", "-q", is_flag=True)
@_handle_errors
def validate(bundle, eval_data, text_column, label_column, report_dir, threads, quiet) -> None:
    """Re-validate a bundle on this host against its PyTorch model; exit code follows the gates."""
    from hfexport.api import validate_bundle
    from hfexport.progress import Progress

    report = validate_bundle(bundle, eval_data=eval_data, text_column=text_column, label_column=label_column,
                             report_dir=report_dir,
                             threads=threads, progress=Progress("quiet" if quiet else "text"))
    from pathlib import Path

    where = Path(report_dir) if report_dir else Path(bundle).expanduser().with_name(Path(bundle).name + ".validation")
    click.echo(f"{'passed' if report.passed else 'FAILED'}: {report.speed_phrase(' than PyTorch')}; "
               + ", ".join(f"{g.metric} {g.value:.4f} (>= {g.threshold})" for g in report.gates)
               + f"; report: {where / 'report.html'}")
    if not report.passed:
        sys.exit(EXIT_GATES)


@main.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path())
@click.option("--name", "names", multiple=True, help="Model name for each bundle, in order [default: folder name].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--api-key", envvar="HFEXPORT_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' [env: HFEXPORT_API_KEY].")
@click.option("--max-batch-size", "max_batch", multiple=True, metavar="[MODEL=]N",
              help="Texts per model call, for all models or one [default: the bundle's evaluation batch size].")
@click.option("--max-wait-ms", "max_wait", multiple=True, metavar="[MODEL=]MS",
              help="How long a request waits for others to batch with [default: 5].")
@click.option("--no-batching", is_flag=True, help="Each request alone: no dynamic batching across requests.")
@click.option("--max-queue", type=int, default=256, show_default=True, help="Requests waiting per model; more: 429.")
@click.option("--max-inputs", type=int, default=2048, show_default=True, help="Texts per request.")
@click.option("--max-body-bytes", type=int, default=4 * 1024 * 1024, show_default=True)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request (then 504).")
@click.option("--truncate", is_flag=True, help="Cut inputs over a model's max length instead of a 400.")
@click.option("--generation-concurrency", type=int, default=1, show_default=True,
              help="Generations run at once per text-generation model.")
@click.option("--threads", type=int, default=None, help="Backend threads per model [default: the profile's].")
@click.option("--spin", is_flag=True, help="Let idle backend threads spin (faster calls, fewer cycles for HTTP).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True)
@_handle_errors
def serve(bundles, names, host, port, api_key, max_batch, max_wait, no_batching, max_queue, max_inputs,
          max_body_bytes, timeout, truncate, generation_concurrency, threads, spin, log_level) -> None:
    """Serve bundles over HTTP: OpenAI-compatible routes, dynamic batching (needs hfexport[serve]).

    Routes: /v1/embeddings, /v1/chat/completions, /v1/completions, /v1/models, /v1/classify,
    /v1/token-classify, /v1/question-answering, /v1/fill-mask, /health, /metrics. SIGTERM or Ctrl-C
    stops it: new requests are refused, requests in flight finish.
    """
    import signal

    from hfexport.errors import ConfigError

    try:
        from hfexport.serve.config import LOOPBACK, ModelSettings, ServeConfig, parse_per_model
        from hfexport.serve.metrics import Metrics
        from hfexport.serve.models import load_models
        from hfexport.serve.server import make_server
    except ImportError as exc:
        raise ConfigError(f'serving needs the serve extra: pip install "hfexport[serve]" ({exc})') from None
    batch, batch_per_model = parse_per_model(max_batch, int, "--max-batch-size")
    wait, wait_per_model = parse_per_model(max_wait, float, "--max-wait-ms")
    per_model = {name: ModelSettings(batch_per_model.get(name), wait_per_model.get(name))
                 for name in {*batch_per_model, *wait_per_model}}
    config = ServeConfig(host=host, port=port, api_key=api_key, batching=not no_batching, max_batch_size=batch,
                         max_wait_ms=5.0 if wait is None else wait, models=per_model, max_body_bytes=max_body_bytes,
                         max_inputs=max_inputs, max_queue=max_queue, timeout_s=timeout, truncate=truncate,
                         generation_concurrency=generation_concurrency, threads=threads, spin=spin)
    if host not in LOOPBACK and not api_key:
        click.echo(f"warning: serving on {host} without --api-key: anyone who can reach it can use it", err=True)
    metrics = Metrics()
    models = load_models(list(bundles), list(names), config, metrics)
    served = ", ".join(f"{m.name} ({m.task})" for m in models)
    for model in models:
        if model.batcher is not None and model.batcher.combine and model.batch_dependent:
            click.echo(f"note: {model.name} is dynamic int8 (one activation range per model call), so a text's "
                       "result varies slightly with the texts batched beside it; --no-batching makes it "
                       "repeatable (docs/decisions/0092-dynamic-int8-and-batching.md)", err=True)
    # uvicorn handles SIGTERM/SIGINT while it serves and raises the signal again once it has drained;
    # by then the shutdown was clean, so the command exits 0 instead of reporting an interruption.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        make_server(models, config, metrics=metrics, log_level=log_level,
                    on_ready=lambda url: click.echo(f"serving {served} on {url}", err=True)).run()
    finally:
        models.close()
    click.echo("stopped", err=True)


main.add_command(matrix)
main.add_command(sign)
main.add_command(verify)

if __name__ == "__main__":
    main()
