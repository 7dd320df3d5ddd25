"""Silence the libraries' own chatter during a build; hfexport prints its own progress lines."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings


@contextlib.contextmanager
def quiet_libraries(enabled: bool = True):
    if not enabled:
        yield
        return
    root = logging.getLogger()
    saved_level = root.level
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # transformers takes its verbosity from this variable when it is imported; importing it here instead would
    # cost a rebuild that reuses every stage its only torch import before validation.
    saved_verbosity = os.environ.get("TRANSFORMERS_VERBOSITY")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    _quiet_transformers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # onnxruntime.quantization logs advice at WARNING on the root logger.
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(saved_level)
            _quiet_transformers()  # imported meanwhile: stays quiet, as when it was imported here
            if saved_verbosity is None:
                os.environ.pop("TRANSFORMERS_VERBOSITY", None)
            else:
                os.environ["TRANSFORMERS_VERBOSITY"] = saved_verbosity


def _quiet_transformers() -> None:
    transformers = sys.modules.get("transformers")
    if transformers is not None and hasattr(transformers, "logging"):
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


def disable_telemetry() -> None:
    """OpenVINO's and NNCF's usage telemetry off for this process: a build never phones home.

    NOTE: both send through the `openvino_telemetry` package, which opts a user in when no consent file
    exists (OpenVINO's converter) and once hung a build after its bundle was written, its sender
    waiting on an analytics host. Marking the package unimportable makes OpenVINO's converter and NNCF
    fall back to their own no-op stubs (their documented behaviour without it); where it was imported
    already, every consent check declines and the live instance stops sending."""
    import sys

    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError
        return
    module = sys.modules["openvino_telemetry"]
    if module is None:
        return
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    instance = getattr(module.Telemetry, "_SingletonMetaClass__single_instance", None)
    if instance is not None:
        instance.consent = False


def telemetry_disabled() -> bool:
    """Whether disable_telemetry() is in force in this process (tests and the build's own check)."""
    import sys

    module = sys.modules.get("openvino_telemetry", False)
    if module is None:
        return True
    if module is False:
        return False
    instance = getattr(module.Telemetry, "_SingletonMetaClass__single_instance", None)
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    declines = OptInChecker().check(False) == ConsentCheckResult.DECLINED
    return declines and (instance is None or not instance.consent)
