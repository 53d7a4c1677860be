"""COIN++'s CIFAR-10 config (``configs/config_cifar10.txt``), and its ASMR counterpart.

    asmr meta-train --config coinpp_cifar10 --data-dir DIR --workdir runs/cifar-siren
    asmr meta-train --config coinpp_cifar10:asmr --data-dir DIR --workdir runs/cifar-asmr
    asmr meta-train --config coinpp_cifar10:smoke --workdir /tmp/smoke

Values from COIN++ (``config_cifar10.txt`` and ``main.py`` defaults): SIREN 10 layers of
width 512, w0 50, latent 384 mapped linearly to shifts only, latent init 0, k = 3 inner
steps of plain SGD at 1e-2 (no meta-SGD: ``meta_sgd=False`` with ``lr_scale=1e-2``),
outer Adam 3e-6, batch 64, 500 epochs (50000 train images: 390,500 steps). COIN++ inits
SIREN biases like the weights, as our default init does. The ``asmr`` counterpart: 5
levels (32 = 2^5) at the width of equal shared parameters. Data: TFDS ``cifar10``
prepared under ``--data-dir``. Runtime: days on a GPU; not run here.
"""

from meta.configs import _common, defaults


def get_config(arg=None):
    config = defaults()
    config.update(dataset="cifar10", resolution=32, model="siren", width=512, depth=10, levels=5, w0=50.0,
                  latent_dim=384, inner_steps=3, lr_scale=1e-2, meta_sgd=False, modulate_shift=True,
                  batch_size=64, steps=390_500, lr=3e-6, clip=None, eval_every=5000, eval_images=256,
                  checkpoint_every=5000, log_every=100)
    return _common.finish(config, arg, counterpart_of="siren")
