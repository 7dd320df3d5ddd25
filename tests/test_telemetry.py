"""A build switches OpenVINO's and NNCF's usage telemetry off (checked in a fresh process, as a user runs it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("openvino")

BUILD_THEN_CHECK = """
import sys
{prelude}
from hfexport.build.engine import run_build
from hfexport.errors import ModelLoadError
try:
    run_build("/nonexistent/model", target="cpu")  # fails on the model, after the build's first steps
except ModelLoadError:
    pass
from hfexport._quiet import telemetry_disabled
assert telemetry_disabled(), "telemetry still on"
from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry
telemetry = init_ovc_telemetry()
assert not getattr(telemetry, "consent", False), "OpenVINO's converter would send"
from nncf.telemetry import wrapper
assert type(wrapper.telemetry).__name__ != "NNCFTelemetry" or not getattr(getattr(wrapper.telemetry, "_impl", None), "consent", False), "NNCF would send"
print("telemetry off")
"""


@pytest.mark.parametrize("prelude", ["", "import openvino, nncf  # imported before the build starts"])
def test_build_sets_telemetry_opt_outs(prelude):
    result = subprocess.run([sys.executable, "-c", BUILD_THEN_CHECK.format(prelude=prelude)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "telemetry off" in result.stdout
