"""Helpers shared by the config files (not a config itself)."""

from __future__ import annotations

from meta import configs


def finish(config, arg: str | None, counterpart_of: str | None = None, channels: int = 3):
    """Applies ``arg`` (words ``asmr``/``siren``/``smoke`` and ``key=value`` fields, comma-separated).

    With ``counterpart_of`` (``"siren"`` or ``"asmr"``) and a model kind other than it in
    ``arg``, the width is chosen so that the shared parameter count equals that of the
    ``counterpart_of`` network this config describes.
    """
    words, fields = configs.parse_arg(arg)
    bad = sorted(set(words) - {"smoke", "asmr", "siren"})
    if bad or ("asmr" in words and "siren" in words):
        raise ValueError(f"config argument {arg!r}: words must be asmr or siren, and smoke; got {words}")
    smoke = "smoke" in words
    head = next((w for w in words if w != "smoke"), None)
    if head in ("asmr", "siren") and counterpart_of and head != config.model:
        ref = configs.load_meta(config, channels)
        config.model = head
        config.width = configs.equal_params_width(config, head, ref.num_params(), channels)
    elif head in ("asmr", "siren"):
        config.model = head
    for k, v in fields.items():
        configs.set_field(config, f"{k}={v!r}")
    if smoke:
        config.update(resolution=min(config.resolution, 16), width=16, depth=min(config.depth or 3, 3),
                      levels=min(config.levels or 3, 3), bases=None, latent_dim=8, batch_size=4, steps=2,
                      eval_every=1, eval_images=4, eval_more_steps=2, checkpoint_every=1)
        if config.spatial is not None:  # 2x2 cells of 2 values: a grid every smoke network has
            config.update(spatial=2, spatial_kernel=1)
    return config
