"""The quality preset: ASMR-functa with a 4x4 latent grid (D = 1024, 64 values per cell,
each cell's vector mapped to its modulations by a per-cell linear map), and its SIREN
counterpart at equal shared parameters.

    asmr meta-train --config spatial_cpu --workdir runs/spatial            # ~21 min on 2 cores
    asmr meta-train --config spatial_cpu:siren --workdir runs/spatial-siren
    asmr meta-train --config spatial_cpu:smoke --workdir /tmp/smoke         # a few seconds

The cpu preset's network (ASMR width 128, 4 levels, bases 2,2,2,4, 32x32 patches, batch
16, k = 3) with the latent grid on the cells of its second level, and a lower outer rate
for the long run: Adam 1e-4, cosine-decayed to 1e-6 over 61,000 steps, which is what 20
minutes hold here. Expected (experiments/README.md, "Quality ceiling"): 36.3 dB test PSNR,
SSIM 0.958, after k = 3 inner steps on the 136 held-out test patches. The same grid at
the cpu preset's 3e-4 lost the basin after a few thousand steps (29.3 dB after 20 minutes).
"""

from meta.configs import _common, defaults


def get_config(arg=None):
    config = defaults()
    config.update(dataset="patches", resolution=32, model="asmr", width=128, levels=4, latent_dim=1024,
                  spatial=4, spatial_kernel=1, inner_steps=3, lr_scale=1.0, batch_size=16, steps=61_000, lr=1e-4,
                  lr_decay="cosine", clip=1.0, eval_every=1000, eval_images=64, checkpoint_every=4000)
    return _common.finish(config, arg, counterpart_of="asmr")
