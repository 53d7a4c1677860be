"""Where the meta step's time goes: its parts timed and counted, and an XLA profile of the step.

For ASMR-functa and SIREN-functa at the main-job config (``meta/configs/cpu.py``: ASMR
width 128, 4 levels, 32x32 RGB, latent 64, k = 3, batch 16; SIREN at equal shared
parameters) and at functa's CPU reference config (width 256, depth 4, latent 256):

* parts of the step (x16 images), each jitted alone: render, one inner gradient, the
  inner loop, the outer loss (inner loop + final render), outer loss + gradient, and the
  whole step (with Adam); median ms of ``--repeats`` runs, XLA's flop count of the
  compiled function, GFLOP/s and its share of a 2048^3 float32 matmul measured in the
  same run;
* a profile of the compiled step (``jax.profiler`` perfetto trace of ``--profile-steps``
  steps): the ops that take the most time, with their HLO shape and kind, and the
  share of time in ops that hold a dot.

    python -m experiments.meta_step_profile          # ~5 min on 2 cores
    python -m experiments.meta_step_profile --smoke  # seconds

Results: experiments/results/meta_step_profile.{json,md}.
"""

from __future__ import annotations

import functools
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax

from asmr_jax import macs
from experiments import common

NAME = "meta_step_profile"


def get_config(arg=None) -> dict:
    common.check_config(arg, "smoke")
    cfg = {"configs": {"main job": "", "functa ref": "width=256,latent_dim=256"},  # arguments of meta/configs/cpu
           "models": ["asmr", "siren"], "batch": 16, "repeats": 7, "profile_steps": 5, "matmul": 2048, "top": 10}
    if arg == "smoke":
        cfg.update(configs={"smoke": "smoke"}, batch=4, repeats=2, profile_steps=1, matmul=256, top=5)
    return cfg


def matmul_rate(n: int, repeats: int) -> float:
    """GFLOP/s of an ``n^3`` float32 matmul (the reference rate)."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    sec = macs.median_time(lambda: common.block(f(a)), repeats=repeats)
    return 2 * n**3 / sec / 1e9


def parts(meta, params, opt_state, optimizer, images):
    """``name -> (fn, args)`` of the step's parts, each over the batch."""
    from meta import functa, optimize

    latents = functa.start_latent(meta, params, images.shape[:1])
    step = functools.partial(optimize.meta_step, meta, optimizer)
    return {
        "render": (lambda p, z: functa.render(meta, p, z), (params, latents)),
        "one inner gradient": (lambda p, z, x: functa.inner_grad(meta, p, z, x), (params, latents, images)),
        "inner loop, k": (lambda p, x: functa.inner_loop(meta, p, x), (params, images)),
        "outer loss": (lambda p, x: functa.outer_loss(meta, p, x)[0], (params, images)),
        "outer loss + gradient": (jax.grad(lambda p, x: functa.outer_loss(meta, p, x)[0]), (params, images)),
        "meta step (with Adam)": (step, (params, opt_state, images)),
    }


def profile(fn, args, steps: int, top: int) -> dict:
    """Top ops by time in a perfetto trace of ``steps`` runs of jitted ``fn``, with their HLO lines."""
    jitted = jax.jit(fn)
    compiled = jitted.lower(*args).compile()
    hlo = compiled.as_text()
    common.block(jitted(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(steps):
                common.block(jitted(*args))
        files = glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(files[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    defined = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w+)\(", line)
        if m:
            defined[m.group(1)] = (m.group(2), m.group(3), line)
    times = {}
    for e in events:
        if e.get("ph") == "X" and e.get("name") in defined:
            times[e["name"]] = times.get(e["name"], 0.0) + e.get("dur", 0.0) / 1e3 / steps  # ms per step
    total = sum(times.values())

    def has_dot(name):
        _, kind, line = defined[name]
        if kind == "dot":
            return True
        called = re.search(r"calls=%?([\w.\-]+)", line)
        if not called:
            return False
        body = re.search(r"\n%?" + re.escape(called.group(1)) + r" .*?\n}", hlo, re.S)
        return bool(body and " dot(" in body.group(0))

    ranked = sorted(times.items(), key=lambda kv: -kv[1])
    rows = [{"op": n, "ms": t, "share": t / total, "shape": defined[n][0], "kind": defined[n][1],
             "dot": has_dot(n)} for n, t in ranked[:top]]
    dot_ms = sum(t for n, t in times.items() if has_dot(n))
    return {"total_ms": total, "ops": len(times), "dot_share": dot_ms / total if total else None, "top": rows}


def run_config(label: str, arg: str, kind: str, cfg: dict, rate: float, log) -> dict:
    from meta import configs, optimize

    config = configs.load(f"cpu:{kind}" + (f",{arg}" if arg else ""))
    meta = configs.load_meta(config, 3)
    params = meta.init(jax.random.key(0))
    optimizer = optimize.make_optimizer(config.lr, config.clip)
    opt_state = optimizer.init(params)
    images = jax.random.uniform(jax.random.key(1), (cfg["batch"], *meta.shape, meta.channels))
    rows = []
    for name, (fn, args) in parts(meta, params, opt_state, optimizer, images).items():
        jitted = jax.jit(fn)
        flops = macs.xla_cost(fn, *args).get("flops", float("nan"))
        common.block(jitted(*args))
        sec = macs.median_time(lambda f=jitted, a=args: common.block(f(*a)), repeats=cfg["repeats"])
        rows.append({"part": name[:-1] + f"k={meta.inner_steps}" if name.endswith(", k") else name,
                     "ms": sec * 1e3, "mflop": flops / 1e6, "gflops": flops / sec / 1e9,
                     "matmul_share": flops / sec / 1e9 / rate})
        log(f"{label:10s} {kind:5s} {rows[-1]['part']:24s} {sec * 1e3:8.2f} ms {flops / 1e6:9.1f} MFLOP "
            f"{flops / sec / 1e9:6.1f} GFLOP/s")
    step_fn, step_args = parts(meta, params, opt_state, optimizer, images)["meta step (with Adam)"]
    prof = profile(step_fn, step_args, cfg["profile_steps"], cfg["top"])
    by = {r["part"]: r["ms"] for r in rows}
    return {"config": label, "model": kind, "shared_params": meta.num_params(), "width": config.width,
            "parts": rows, "profile": prof,
            "grad_over_loss": by["outer loss + gradient"] / by["outer loss"],
            "images_per_second": cfg["batch"] / (by["meta step (with Adam)"] / 1e3)}


def to_markdown(payload) -> str:
    out = [f"2048^3 float32 matmul in the same run: {payload['matmul_gflops']:.0f} GFLOP/s "
           f"(batch {payload['config']['batch']}, medians of {payload['config']['repeats']})."]
    for r in payload["rows"]:
        body = [[p["part"], f"{p['ms']:.2f}", f"{p['mflop']:.0f}", f"{p['gflops']:.0f}",
                 f"{100 * p['matmul_share']:.0f}%"] for p in r["parts"]]
        out.append(f"### {r['model']} at {r['config']} (width {r['width']}, {r['shared_params']:,} shared params): "
                   f"{r['images_per_second']:.0f} images/s, value+grad / loss = {r['grad_over_loss']:.2f}\n\n"
                   + common.markdown_table(["part (x batch)", "ms", "MFLOP", "GFLOP/s", "% of matmul"], body))
        prof = r["profile"]
        top = [[t["op"], t["kind"], t["shape"], f"{t['ms']:.2f}", f"{100 * t['share']:.1f}%",
                "yes" if t["dot"] else ""] for t in prof["top"]]
        out.append(f"Profile of the step: {prof['ops']} ops, {prof['total_ms']:.1f} ms of op time per step, "
                   f"{100 * (prof['dot_share'] or 0):.0f}% in ops that hold a dot. Top ops:\n\n"
                   + common.markdown_table(["op", "HLO kind", "shape", "ms/step", "share", "dot"], top))
    return "\n\n".join(out) + "\n"


def main(argv=None) -> int:
    args, cfg = common.parse_config(__doc__, get_config, argv)
    rate = matmul_rate(cfg["matmul"], cfg["repeats"])
    print(f"matmul {cfg['matmul']}^3: {rate:.1f} GFLOP/s", flush=True)
    rows = [run_config(label, spec, kind, cfg, rate, lambda m: print(m, flush=True))
            for label, spec in cfg["configs"].items() for kind in cfg["models"]]
    payload = {"config": cfg, "matmul_gflops": rate, "rows": rows}
    common.report(args.out, NAME + ("_smoke" if args.smoke else ""), payload, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
