"""The main job's CPU preset: ASMR-functa on the bundled photo patches (32x32 RGB).

    asmr meta-train --config cpu --workdir runs/cpu              # ASMR, ~1 min for 1000 steps
    asmr meta-train --config cpu:siren --workdir runs/cpu-siren  # SIREN at equal shared params
    asmr meta-train --config cpu:smoke --workdir /tmp/smoke      # a few seconds

Functa's parameterization exactly (shifts inside ``w0``, haiku init of the latent map,
meta-SGD from ``U(0.005, 0.1)`` at ``lr_scale = 1``); what differs from functa's CelebA
config is the size (ASMR width 128, 4 levels, latent 64, 32x32) and the outer schedule:
Adam 3e-4 with global-norm clip 1 instead of 3e-6 for 500k steps, so that it learns in
minutes on two cores. Expected (experiments/README.md, "Functa parameterization"): about
23 dB test PSNR after k=3 inner steps at 1000 steps.
"""

from meta.configs import _common, defaults


def get_config(arg=None):
    config = defaults()
    config.update(dataset="patches", resolution=32, model="asmr", width=128, levels=4, latent_dim=64,
                  inner_steps=3, lr_scale=1.0, batch_size=16, steps=1000, lr=3e-4, clip=1.0,
                  eval_every=100, checkpoint_every=250)
    return _common.finish(config, arg, counterpart_of="asmr")
