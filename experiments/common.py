"""Helpers shared by the experiment scripts: flags, timing, tables, results files.

Every script has a ``get_config(arg)`` returning a plain dict (``arg="smoke"`` shrinks the
run), a ``main(argv=None)`` that parses ``--smoke`` / ``--out`` / ``--steps``, and writes
``<out>/<name>.json`` and ``<out>/<name>.md`` with :func:`write_results`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys

import jax
import numpy as np

from asmr_jax import fit as fit_lib
from asmr_jax import io, macs, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
RESULTS_DIR = os.path.join(ROOT, "experiments", "results")


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every experiment takes: ``--smoke``, ``--out DIR``, ``--steps N``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny run (few steps, small crops) to check the script")
    p.add_argument("--out", default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of training steps")
    return p


def check_config(arg, *known: str) -> None:
    """Raises ``ValueError`` unless ``arg`` (of a script's ``get_config``) is ``None``/``""`` or one of ``known``."""
    if arg not in (None, "", *known):
        raise ValueError(f"unknown config {arg!r}: expected None or one of {list(known)}")


def pick(names: str, known, flag: str) -> list[str]:
    """The comma-separated ``names`` as a list, each one of ``known`` (else a ``ValueError``
    naming ``flag``, the value and the choices)."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown or not chosen:
        raise ValueError(f"{flag} {names!r}: expected comma-separated names of {list(known)}")
    return chosen


def positive_int(value, what: str) -> int:
    """``value`` as an int >= 1, else a ``ValueError`` naming ``what``."""
    if value is None or int(value) != value or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def block(tree):
    """Waits for every array in ``tree``; returns it."""
    return jax.block_until_ready(tree)


def render_latency(model, params, repeats: int = 5) -> float:
    """Median seconds of one jitted ``model.render(params)`` (compiled once beforehand)."""
    fn = models.jitted_render(model)
    return macs.median_time(lambda: block(fn(params)), repeats=repeats)


def fit_row(model, signal, cfg: dict, latency_repeats: int | None = None, **fit_kw):
    """Fits ``model`` with the config's steps/lr/seed and measures it.

    Returns ``(FitResult, row)``; the row holds the columns every table shares (params,
    MACs, PSNR/SSIM, step and fit time, render latency when ``latency_repeats`` is set).
    """
    fit_kw = {"key": jax.random.key(cfg["seed"]), **fit_kw}
    res = fit_lib.fit(model, signal, cfg["steps"], lr=cfg["lr"], progress=False, **fit_kw)
    cost = macs.count(model)
    row = dict(
        params=model.num_params(),
        paper_macs=cost.paper_macs,
        render_macs=cost.render_macs,
        psnr=res.psnr,
        ssim=res.ssim,
        step_seconds=res.step_seconds,
        fit_seconds=res.fit_seconds,
        render_seconds=render_latency(model, res.params, latency_repeats) if latency_repeats else None,
        bases=[list(b) for b in getattr(model, "bases", ())] or None,
    )
    return res, row


def mean_std(values) -> tuple[float, float]:
    """Mean and population standard deviation of finite ``values`` (``nan`` when empty)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals))


def fmt(value, digits: int = 2) -> str:
    """Numbers for tables: ``None`` -> ``-``, ints with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(headers, rows) -> str:
    """A GitHub markdown table from ``headers`` and rows of already formatted cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's ``VmHWM`` belongs to this process image; ``ru_maxrss`` (the fallback elsewhere)
    also counts the parent's memory at ``fork`` time, which a fresh subprocess inherits.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def rss_mib() -> float:
    """Resident memory of this process now, in MiB (``/proc/self/statm``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mib()


def child_command(module: str, *args) -> list[str]:
    """``python -m module *args``: how a script runs itself (or another experiment) in a fresh
    process; pass :func:`child_env` as its environment so the child finds this repository."""
    return [sys.executable, "-m", module, *(str(a) for a in args)]


def child_env(extra: dict | None = None, base: dict | None = None) -> dict:
    """``base`` (default ``os.environ``) with this repository first on ``PYTHONPATH``, plus ``extra``."""
    env = {**(os.environ if base is None else base), **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    return env


def environment() -> dict:
    """Where a result was measured."""
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def jsonable(obj):
    """``obj`` with tuples as lists, NumPy scalars as Python numbers and NaN/inf as ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return obj


def write_results(out_dir: str, name: str, payload: dict, markdown: str) -> tuple[str, str]:
    """Writes ``<out_dir>/<name>.json`` (``payload`` plus the environment) and ``.md``.

    Each file is written to a temporary name and renamed, so an interrupted run never
    leaves a half-written result over an older one. Returns both paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    payload = dict(payload, environment=environment())
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")
    io.atomic_write(json_path, json.dumps(jsonable(payload), indent=2) + "\n")
    io.atomic_write(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def command_line(module: str, argv=None) -> str:
    """The command that ran ``module``: ``python -m module`` and ``argv`` (default the process's)."""
    return " ".join(["python -m " + module, *(sys.argv[1:] if argv is None else argv)])


def report(out_dir: str, name: str, payload: dict, to_markdown) -> str:
    """Prints ``to_markdown(payload)`` and writes ``<name>.json`` / ``<name>.md`` (headed by the
    payload's ``command``, when it has one); returns the markdown."""
    md = to_markdown(payload)
    if payload.get("command"):
        md = f"Run: `{payload['command']}`\n\n" + md
    print(md)
    write_results(out_dir, name, payload, md)
    return md


def parse_config(doc: str, get_config, argv=None, extra=None):
    """The shared CLI of the experiment scripts: ``(args, cfg)`` from ``--smoke/--steps/--out``.

    ``extra(parser)`` may add script-specific flags.
    """
    p = parser(doc.split("\n")[0])
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    cfg = get_config("smoke" if args.smoke else None)
    if args.steps is not None:
        cfg["steps"] = positive_int(args.steps, "--steps")
    return args, cfg


def config_main(doc: str, get_config, run):
    """``main(argv=None)`` of a script that is ``run(cfg, out_dir)`` over its ``get_config``
    (flags: :func:`parse_config`); returns what ``run`` returns."""

    def main(argv=None):
        args, cfg = parse_config(doc, get_config, argv)
        return run(cfg, args.out)

    return main


def write_partial(out_dir: str, name: str, payload: dict) -> str:
    """Saves progress of a long run to ``<out_dir>/<name>.partial.json`` (never the final files)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.partial.json")
    io.atomic_write(path, json.dumps(jsonable(payload), indent=2) + "\n")
    return path


def read_partial(out_dir: str, name: str, config: dict) -> list:
    """Rows saved by :func:`write_partial` for this exact ``config`` (``[]`` if none)."""
    path = os.path.join(out_dir, f"{name}.partial.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        old = json.load(f)
    return old.get("rows", []) if old.get("config") == jsonable(config) else []


def remove_partial(out_dir: str, name: str) -> None:
    path = os.path.join(out_dir, f"{name}.partial.json")
    if os.path.exists(path):
        os.remove(path)


def resize(data: np.ndarray, shape) -> np.ndarray:
    """Anti-aliased resize of ``data [*spatial, C]`` on ``[0, 1]`` to ``[*shape, C]``."""
    from skimage.transform import resize as sk_resize

    shape = tuple(int(s) for s in shape)
    if shape == tuple(data.shape[:-1]):
        return data.astype(np.float32)
    out = sk_resize(data, shape + data.shape[-1:], anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def run_sine_children(module: str, impls, args=(), env=None, timeout: float | None = None) -> list[dict]:
    """Runs ``python -m module --child IMPL *args`` once per sine implementation, each in its own
    process with ``ASMR_JAX_SINE=IMPL`` (the choice is fixed at import), and returns the JSON
    each child printed last. A failing child stops the run with its stderr."""
    import subprocess

    rows = []
    for impl in impls:
        proc = subprocess.run(child_command(module, "--child", impl, *args),
                              env=child_env({**(env or {}), "ASMR_JAX_SINE": impl}),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-6000:])
            raise SystemExit(f"the {impl} child of {module} failed with exit code "
                             f"{proc.returncode}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{impl}: done", flush=True)
    return rows
