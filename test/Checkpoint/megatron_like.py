"""Stand-ins for the classes Megatron-LM and DeepSpeed pickle into checkpoints.

The fixtures pickle these by reference (module megatron_like), the way real
checkpoints reference megatron.core.enums.ModelType; loom must keep them opaque and
write them back so that Python, with this module importable, rebuilds equal objects.
"""
import enum


class ModelType(enum.Enum):
    encoder_or_decoder = 1
    encoder_and_decoder = 2


class LossScaler:
    """A plain class restored through __dict__ (BUILD), like DeepSpeed's loss scaler."""

    def __init__(self, scale=65536.0, growth_interval=1000):
        self.cur_scale = scale
        self.growth_interval = growth_interval

    def __eq__(self, other):
        return type(other) is LossScaler and vars(self) == vars(other)


class ZeroStageEnum(enum.IntEnum):
    """DeepSpeed pickles its ZeRO stage as this kind of enum in ZeRO-3 optimizer files."""
    disabled = 0
    optimizer_states = 1
    gradients = 2
    weights = 3
