"""Runs ``asmr`` command lines in this one fresh interpreter and reports how each ended.

Reads a JSON list of argument lists on stdin; writes a JSON list of ``{"rc", "stderr",
"stdout"}`` on stdout. A command that raises is reported with its traceback in ``stderr``
(as the real ``asmr`` would print it), so the caller sees every traceback.
"""

import contextlib
import io
import json
import os
import sys
import traceback

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def run(argv):
    from meta import commands as command

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = command.main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported, as the interpreter would
            traceback.print_exc()
            rc = 1
    return {"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()}


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    results = [run(argv) for argv in cases]
    sys.__stdout__.write(json.dumps(results))
