"""Stand-ins for the classes Megatron-LM and DeepSpeed pickle into checkpoints.

The fixtures pickle these by reference (module megatron_like), the way real
checkpoints reference megatron.core.enums.ModelType; loom must keep them opaque and
write them back so that Python, with this module importable, rebuilds equal objects.

DeepSpeed's fragment_address is pickled under its real module path
(deepspeed.utils.tensor_fragment), as loom writes it: importing this module
registers that path, so the fixtures and their checks load it without DeepSpeed.
"""
import dataclasses
import enum
import sys
import types


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


@dataclasses.dataclass
class fragment_address:
    """Where a parameter's part lies in a flat fp32 partition (DeepSpeed's
    tensor_fragment.py): the values of param_slice_mappings."""
    numel: int
    start: int


def _register(path, **attrs):
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for name, value in attrs.items():
        value.__module__ = path
        setattr(sys.modules[path], name, value)


_register("deepspeed.utils.tensor_fragment", fragment_address=fragment_address)


def megatron_deepspeed_tp_dim(name):
    """The dimension Megatron-DeepSpeed cuts parameter `name` on over tensor-parallel
    ranks, or None when every rank holds it whole: its universal_checkpoint_info
    (megatron/model/gpt_model.py) lists the row-parallel weights (cut on dim 1) and
    the replicated parameters; everything else (word embeddings, query_key_value,
    dense_h_to_4h and their biases) is column-parallel, cut on dim 0."""
    if name.endswith(("self_attention.dense.weight", "mlp.dense_4h_to_h.weight")):
        return 1
    if name.endswith(("word_embeddings.weight", "output_layer.weight", "query_key_value.weight",
                      "query_key_value.bias", "dense_h_to_4h.weight", "dense_h_to_4h.bias")):
        return 0
    return None
