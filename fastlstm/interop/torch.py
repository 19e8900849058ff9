"""Recognising torch modules for `LSTM.from_torch` and `LSTMCell.from_torch`, without importing
torch: an LSTM or LSTMCell passes, anything else gets a TypeError that names what it is (a GRU,
an RNN, a model containing LSTMs) and what to do instead."""
from typing import Any, Set

# torch's recurrent modules that are not LSTMs, and what tells them apart (from_torch names it)
NOT_LSTM = {"GRU": "3 gate blocks (r, z, n), weight_ih_l0 of shape (3*hidden_size, input_size)",
             "RNN_TANH": "1 gate block, weight_ih_l0 of shape (hidden_size, input_size)",
             "RNN_RELU": "1 gate block, weight_ih_l0 of shape (hidden_size, input_size)",
             "GRUCell": "3 gate blocks (r, z, n), weight_ih of shape (3*hidden_size, input_size)",
             "RNNCell": "1 gate block, weight_ih of shape (hidden_size, input_size)"}


def torch_classes(module: Any) -> Set[str]:
    """Names of the torch.nn classes `module` is an instance of (torch is not imported)."""
    return {c.__name__ for c in type(module).__mro__
            if c.__module__.startswith("torch.nn.modules")}


def is_torch_cell(module: Any) -> bool:
    return "LSTMCell" in torch_classes(module)


def check_torch_lstm(module: Any) -> None:
    """from_torch's argument: a torch.nn.LSTM or LSTMCell (subclasses too), else a TypeError that
    names what was given and why it cannot be read."""
    classes = torch_classes(module)
    if "LSTM" in classes or "LSTMCell" in classes:
        return
    what = f"{type(module).__module__}.{type(module).__qualname__}"
    mode = getattr(module, "mode", None) if "RNNBase" in classes else None
    kind = mode if mode in NOT_LSTM else next((c for c in ("GRUCell", "RNNCell")
                                                if c in classes), None)
    if kind is not None:
        name = kind.replace("_TANH", "").replace("_RELU", "")
        why = (f"{'an' if name.startswith('RNN') else 'a'} {name} has {NOT_LSTM[kind]}, an "
               f"LSTM has 4 (i, f, g, o): its weights cannot run as an LSTM")
    elif not hasattr(module, "state_dict"):
        why = "it is not a torch.nn.Module"
    else:
        why = ("for a model that contains LSTMs, convert each one (fastlstm.LSTM.from_torch("
               "model.lstm)), or keep the model in torch and swap its LSTMs with "
               "fastlstm.torch.convert(model)")
    raise TypeError(f"from_torch takes a torch.nn.LSTM or torch.nn.LSTMCell; got {what}: {why}")
