"""Functa's published CelebA-HQ 64x64 meta-learning config, and its ASMR counterpart.

    asmr meta-train --config functa_celebahq64 --data-dir DIR --workdir runs/celeba-siren
    asmr meta-train --config functa_celebahq64:asmr --data-dir DIR --workdir runs/celeba-asmr
    asmr meta-train --config functa_celebahq64:siren,latent_dim=512 ...      # latent 128..1024
    asmr meta-train --config functa_celebahq64:smoke --workdir /tmp/smoke   # CPU smoke run

Values from functa's ``experiment_meta_learning.py``: SIREN width 512, depth 15, w0 30,
latent 128 (the paper sweeps 128..1024) mapped linearly to shifts only, latent init 0,
meta-SGD from U(0.005, 0.1), k = 3 inner steps, outer Adam 3e-6 without clipping, 16
images per device, 500k steps; all biases start at 0 and the output adds 0.5
(``functa_init``). ``batch_size`` here is global: multiply by the device count to match
functa's per-device 16. Functa reads its own ``celeb_a_hq_custom`` builder; TFDS's
``celeb_a_hq`` needs a manual download, so this reads TFDS ``celeb_a`` (center-cropped,
resized to 64) unless ``dataset=celeb_a_hq/256`` (or another prepared set) is given.

The ``asmr`` counterpart: 6 levels (64 = 2^6, every level informative) at the width whose
shared parameter count equals the SIREN's. Runtime: the 500k steps are a multi-day GPU
job; ``experiments/meta_benchmark.py`` measures one step and its memory on this CPU.
"""

from meta.configs import _common, defaults


def get_config(arg=None):
    config = defaults()
    config.update(dataset="celeb_a", resolution=64, model="siren", width=512, depth=15, levels=6, w0=30.0,
                  latent_dim=128, inner_steps=3, lr_scale=1.0, modulate_shift=True, modulate_scale=False,
                  latent_init_scale=0.0, l2_weight=0.0, noise_std=0.0, functa_init=True, meta_sgd=True,
                  batch_size=16, steps=500_000, lr=3e-6, clip=None, eval_every=5000, eval_images=256,
                  checkpoint_every=5000, log_every=100)
    return _common.finish(config, arg, counterpart_of="siren")
