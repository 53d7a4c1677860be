"""Meta-train loop throughput: the plain loop vs the prefetching one, and 1 vs 2 processes.

    python -m experiments.pipeline_benchmark            # ~6 min on 2 cores
    python -m experiments.pipeline_benchmark --smoke    # seconds

The CPU preset (``meta/configs/cpu.py``: ASMR width 128, 4 levels, 32x32 patches, batch
16, latent 64, k = 3), where one meta step is a few tens of milliseconds and host work
shows. Each row is ``meta.train.train`` in a fresh process for ``--steps`` steps with no
evaluation or checkpoint inside the timed part; the rate is the median seconds per step
over the windows between metric fetches, the first (compiling) window dropped:

* ``plain``: ``prefetch=0, log_every=1``: load, transfer, step, then wait for the loss,
  every step (the loop before the pipeline change);
* ``prefetch``: ``prefetch=2, log_every=25`` (the default): a background thread loads and
  transfers the next batches, metrics are fetched every 25 steps;
* ``2 processes``: the prefetching loop in 2 ``jax.distributed`` processes of 1 CPU device
  each on loopback, against 1 process with 2 devices (on 2 cores only the overhead of the
  second process and its gloo all-reduce can show, not a speed-up).

Writes ``experiments/results/pipeline_benchmark.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

from experiments import common

ROWS = (  # name, processes, devices per process, prefetch, log_every
    ("plain, 1 device", 1, 1, 0, 1),
    ("prefetch, 1 device", 1, 1, 2, 25),
    ("plain, 2 devices", 1, 2, 0, 1),
    ("prefetch, 2 devices", 1, 2, 2, 25),
    ("prefetch, 2 processes x 1 device", 2, 1, 2, 25),
)


def get_config(arg=None) -> dict:
    common.check_config(arg, "smoke")
    return {"steps": 20, "repeats": 1} if arg == "smoke" else {"steps": 400, "repeats": 1}


def child(args) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    from asmr_jax import sharding

    if args.processes > 1:
        sharding.initialize_distributed(f"127.0.0.1:{args.port}", args.processes, args.process_id, timeout_s=120)
    from meta import configs
    from meta.train import train

    config = configs.load("cpu:smoke" if args.smoke else "cpu")
    config.update(steps=args.steps, eval_every=args.steps, checkpoint_every=args.steps, log_every=args.log_every,
                  prefetch=args.prefetch, eval_images=8)
    if args.smoke:
        config.update(batch_size=4)
    r = train(configs.to_config(config), args.workdir, progress=False, plots=False, log=lambda *a: None)
    if jax.process_index() == 0:
        print(json.dumps({"step_seconds": r.metrics["step_seconds_median"], "devices": r.metrics["devices"],
                          "batch": config.batch_size,
                          "processes": r.metrics["processes"], "loss": r.metrics["final_train_loss"]}))


def run_row(name, nproc, ndev, prefetch, log_every, steps, smoke, tmp) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = os.path.join(tmp, name.replace(" ", "_").replace(",", ""))
    cmd = lambda i: common.child_command(  # noqa: E731
        "experiments.pipeline_benchmark", "--child", "--processes", nproc, "--process-id", i, "--port", port,
        "--devices", ndev, "--prefetch", prefetch, "--log-every", log_every, "--steps", steps, "--workdir", workdir,
        *(["--smoke"] if smoke else []))
    env = common.child_env(base={k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")})
    procs = [subprocess.Popen(cmd(i), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(nproc)]
    outs = [p.communicate(timeout=1200) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            sys.stderr.write(err[-4000:])
            raise SystemExit(f"row {name!r} failed")
    res = json.loads(outs[0][0].strip().splitlines()[-1])
    return {"name": name, "processes": nproc, "devices_per_process": ndev, "prefetch": prefetch,
            "log_every": log_every, "step_ms": 1e3 * res["step_seconds"],
            "images_per_second": res["batch"] / res["step_seconds"],
            "final_loss": res["loss"]}


def to_markdown(payload) -> str:
    rows = payload["rows"]
    by = {r["name"]: r for r in rows}
    table = common.markdown_table(
        ["loop", "processes", "devices/process", "step ms (median)", "images/s", "final loss"],
        [[r["name"], r["processes"], r["devices_per_process"], common.fmt(r["step_ms"]),
          common.fmt(r["images_per_second"], 1), common.fmt(r["final_loss"], 5)] for r in rows])
    ratio = lambda a, b: by[a]["images_per_second"] / by[b]["images_per_second"]  # noqa: E731
    lines = [f"{payload['config']['steps']} meta steps per row, CPU preset.", "", table, "",
             f"- prefetch / plain, 1 device: {ratio('prefetch, 1 device', 'plain, 1 device'):.2f}x",
             f"- prefetch / plain, 2 devices: {ratio('prefetch, 2 devices', 'plain, 2 devices'):.2f}x",
             f"- 2 processes / 1 process (2 devices each way): "
             f"{ratio('prefetch, 2 processes x 1 device', 'prefetch, 2 devices'):.2f}x"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--processes", "--process-id", "--port", "--devices", "--prefetch", "--log-every"):
        p.add_argument(flag, type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = get_config("smoke" if args.smoke else None)
    if args.steps is not None:
        cfg["steps"] = common.positive_int(args.steps, "--steps")
    if args.child:
        child(args)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, nproc, ndev, prefetch, log_every in ROWS:
            log_every = min(log_every, max(1, cfg["steps"] // 5))  # several timed windows even when short
            rows.append(run_row(name, nproc, ndev, prefetch, log_every, cfg["steps"], args.smoke, tmp))
            print(f"{rows[-1]['name']}: {rows[-1]['step_ms']:.1f} ms/step", flush=True)
    payload = {"config": cfg, "rows": rows}
    common.report(args.out, "pipeline_benchmark" + ("_smoke" if args.smoke else ""), payload, to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
