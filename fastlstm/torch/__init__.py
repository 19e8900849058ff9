"""fastlstm for PyTorch users: ``torch.nn.Module``s that train and run on fastlstm's kernels.

    import fastlstm.torch
    model = fastlstm.torch.convert(model)   # every nn.LSTM / nn.LSTMCell, weights included
    loss = loss_fn(model(x), target); loss.backward(); optimizer.step()

`LSTM` and `LSTMCell` are drop-in ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` subclasses (same
constructor, parameters, ``state_dict``, forward); `convert` and `revert` swap them in a model.
CPU only. See docs/torch.md. Importing this module imports torch; ``import fastlstm`` does not.
"""
try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastlstm.torch needs PyTorch (pip install torch); fastlstm itself runs "
                      "without it") from exc

from ._convert import convert, revert
from ._modules import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell", "convert", "revert"]
