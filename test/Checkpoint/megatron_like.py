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
    if name.endswith(("word_embeddings.weight", "output_layer.weight", "lm_head.weight",
                      "query_key_value.weight", "query_key_value.bias", "dense_h_to_4h.weight",
                      "dense_h_to_4h.bias")):
        return 0
    return None


def is_swiglu_fc1(name):
    return name.endswith(("mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias"))


def megatron_deepspeed_tp_slice(tensor, name, mp, tp, swiglu):
    """Tensor-parallel rank mp's slice of full tensor `name`; with SwiGLU, dense_h_to_4h's
    slice is [gate; up] of the rank's rows of each (the full tensor being all gates, then
    all ups, as ds_to_universal.py joins it)."""
    if swiglu and is_swiglu_fc1(name):
        import torch
        gate, up = tensor.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp)[mp], up.chunk(tp)[mp]]).clone()
    dim = megatron_deepspeed_tp_dim(name)
    return tensor if dim is None else tensor.chunk(tp, dim=dim)[mp].clone()


def pipe_name_of(name, layers, tied):
    """GPTModelPipe's name of GPTModel's parameter `name` in a model of `layers`
    transformer layers, its index in the layer list and its key in that layer's
    state_dict (megatron/model/gpt_model.py, deepspeed/runtime/pipe/module.py)."""
    emb, enc = "language_model.embedding.", "language_model.encoder."
    if name.startswith(emb):
        key = name[len(emb):]
        return ("tied_modules.embed." if tied else "1.") + key, 1, key
    if name.startswith(enc + "layers."):
        n, key = name[len(enc + "layers."):].split(".", 1)
        return f"{int(n) + 2}.{key}", int(n) + 2, key
    if name.startswith(enc + "final_layernorm."):
        key = name[len(enc + "final_layernorm."):]
        return f"{layers + 2}.{key}", layers + 2, key
    if name == "language_model.output_layer.weight":
        return f"{layers + 3}.lm_head.weight", layers + 3, "lm_head.weight"
    raise ValueError(f"{name}: not a GPTModel parameter")


def gpt_name_of(pipe):
    """The inverse of pipe_name_of: a GPTModelPipe parameter's GPTModel name."""
    head, _, key = pipe.partition(".")
    if head == "tied_modules":
        return "language_model.embedding." + key.split(".", 1)[1]
    if head == "1":
        return "language_model.embedding." + key
    if key in ("weight", "bias"):
        return "language_model.encoder.final_layernorm." + key
    if key == "lm_head.weight":
        return "language_model.output_layer.weight"
    return f"language_model.encoder.layers.{int(head) - 2}.{key}"
