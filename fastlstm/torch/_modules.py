"""`LSTM` and `LSTMCell`: ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` whose forward and backward
run on fastlstm's kernels.

They subclass torch's modules, so the constructor, the parameters (names, shapes, init),
``state_dict``, ``repr``, ``all_weights``, ``.double()``/``.float()``, hooks, ``train()``/``eval()``
and ``isinstance(m, torch.nn.LSTM)`` are torch's own; only ``forward`` changes.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ._autograd import _DTYPES, PackedCopy, run

State = Tuple[Tensor, Tensor]


class _FastlstmMixin:
    """The packed copy's cache and what the forwards check; shared by LSTM and LSTMCell."""

    num_threads: Optional[int]

    def _fastlstm_init(self) -> None:
        self.num_threads = None
        self._fastlstm_packed: Optional[PackedCopy] = None

    def __getstate__(self) -> Dict[str, Any]:
        # the packed copy holds raw pointers: pickle, deepcopy and torch.save rebuild it
        state: Dict[str, Any] = dict(super().__getstate__())  # type: ignore[call-overload]  # (RNNBase drops its weakrefs there)
        state["_fastlstm_packed"] = None
        return state

    def repack(self) -> None:
        """Rebuild the kernels' packed copy of the parameters from their current values.

        Forwards that autograd records (and all in ``train()`` mode with grad on) repack on every
        call anyway, as does the first forward after any optimizer step or backward in this
        process, and every forward of parameters in shared memory; other forwards repack when
        torch reports a change (another tensor, or its version counter moved, as
        ``load_state_dict`` does). Call this after editing values in place through ``.data``,
        which torch does not count, with no optimizer step or backward since, before an
        inference forward.
        """
        packed: Optional[PackedCopy] = getattr(self, "_fastlstm_packed", None)
        if packed is not None:
            packed.refresh(self._fastlstm_params(), force=True)

    def _fastlstm_params(self) -> List[Tensor]:
        raise NotImplementedError

    def _fastlstm_names(self) -> List[str]:
        raise NotImplementedError

    def _packed_copy(self, what: str) -> PackedCopy:
        params = self._fastlstm_params()
        for name, p in zip(self._fastlstm_names(), params):
            if p.device.type != "cpu":
                raise RuntimeError(
                    f"{what} runs on the CPU (fastlstm's kernels); its parameter {name} is on "
                    f"{p.device}. For the GPU use torch's own module: "
                    f"fastlstm.torch.revert(model) gives one back")
            if p.dtype not in _DTYPES:
                raise TypeError(
                    f"{what} runs in float32 or float64; its parameter {name} is {p.dtype}. "
                    f"Call .float() or .double() on the module first")
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise TypeError(f"{what}'s parameters must share one dtype; got {sorted(map(str, dtypes))}")
        packed: Optional[PackedCopy] = getattr(self, "_fastlstm_packed", None)
        if packed is None or not packed.fits(params):
            config = dict(batch_first=bool(getattr(self, "batch_first", False)))
            packed = self._fastlstm_packed = PackedCopy(config, self._fastlstm_names(), params)
        return packed

    def _threads(self) -> int:
        return self.num_threads or torch.get_num_threads()

    @staticmethod
    def _autocast_up(t: Tensor, dtype: torch.dtype) -> Tensor:
        """Under CPU autocast, bfloat16/float16 activations (a Linear's output) cast up to the
        parameters' dtype: the kernels run in float32 (or float64), as autocast runs the ops of
        its float32 list, and the outputs keep that dtype."""
        if (isinstance(t, Tensor) and t.dtype in (torch.bfloat16, torch.float16)
                and t.dtype != dtype and torch.is_autocast_enabled("cpu")):
            return t.to(dtype)
        return t

    @staticmethod
    def _check_tensor(what: str, name: str, t: object, dtype: torch.dtype) -> None:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.device.type != "cpu":
            raise RuntimeError(
                f"{what} runs on the CPU (fastlstm's kernels); {name} is on {t.device}. Pass CPU "
                f"tensors (and keep the module there), or use torch.nn.LSTM on the GPU")
        if t.dtype != dtype:
            raise TypeError(f"{what}: {name} must have the parameters' dtype {dtype}, as in "
                            f"torch.nn.LSTM; got {t.dtype}")


class LSTM(_FastlstmMixin, nn.LSTM):
    """``torch.nn.LSTM`` trained and run on fastlstm's CPU kernels.

    Same constructor, parameters and forward as ``torch.nn.LSTM``; load its ``state_dict``
    either way, or swap a model's LSTMs with `fastlstm.torch.convert`.

    Parameters
    ----------
    input_size : int
        Features per time step.
    hidden_size : int
        Hidden units.
    num_layers : int, default 1
        Stacked layers.
    bias : bool, default True
        Whether the layers have ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
    batch_first : bool, default False
        Input and output as (batch, seq, feature); the states keep (layers * directions,
        batch, ·).
    dropout : float, default 0.0
        Dropout on each layer's output but the last, in ``train()`` mode only, with masks from
        torch's default generator.
    bidirectional : bool, default False
        Adds a reverse direction per layer (``*_reverse`` parameters).
    proj_size : int, default 0
        When > 0, an LSTM with projections (``weight_hr_l{k}``).
    device : torch.device, optional
        Where the parameters are made; forward runs only on CPU tensors.
    dtype : torch.dtype, optional
        float32 (default) or float64 for forward.

    Raises
    ------
    ValueError, TypeError
        Arguments torch's own module refuses (its constructor runs unchanged). Forward raises
        RuntimeError for parameters or inputs off the CPU and TypeError for other dtypes.

    Attributes
    ----------
    num_threads : int or None
        Threads of fastlstm's kernels per call; None (default) uses ``torch.get_num_threads()``.

    Notes
    -----
    A forward with autograd on (grad mode and something requiring grad) runs fastlstm's training
    kernels and records one autograd node whose backward is fastlstm's; double backward is not
    supported. Otherwise (``torch.no_grad()``, ``torch.inference_mode()``, frozen weights) it runs
    the inference kernels. The kernels read a packed copy of the parameters, rewritten in place on
    every training forward, after optimizer steps and backwards, and when torch reports a
    change; see `repack`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)
        self._fastlstm_init()

    def _fastlstm_names(self) -> List[str]:
        return list(self._flat_weights_names)

    def _fastlstm_params(self) -> List[Tensor]:
        return [getattr(self, n) for n in self._flat_weights_names]

    def flatten_parameters(self) -> None:
        """A no-op, kept because scripts call it: fastlstm keeps its own packed copy of the
        parameters (see `repack`), there is no cuDNN buffer to compact."""

    # NumPy and C inside: torch.compile runs it as is (a graph break at the call)
    @torch.compiler.disable
    def forward(self, input: Union[Tensor, PackedSequence],  # noqa: A002 (torch's name)
                hx: Optional[State] = None
                ) -> Tuple[Union[Tensor, PackedSequence], State]:
        """Run the sequence as ``torch.nn.LSTM.forward`` does.

        Parameters
        ----------
        input : Tensor or PackedSequence
            (seq_len, batch, input_size), (batch, seq_len, input_size) with ``batch_first``,
            (seq_len, input_size) for one unbatched sequence, or a ``PackedSequence`` (run as
            per-sequence lengths: the work done is that of the real steps).
        hx : tuple of Tensor, optional
            (h_0, c_0): (num_layers * num_directions, batch, proj_size or hidden_size) and
            (..., hidden_size), 2-D for unbatched input, in the order of the sequences as given
            (not sorted) for a PackedSequence. None means zeros.

        Returns
        -------
        output : Tensor or PackedSequence
            The last layer's h for every step, in input's layout (a PackedSequence for one).
        (h_n, c_n) : tuple of Tensor
            The final states, shaped like hx; each sequence's own last step for a
            PackedSequence.

        Raises
        ------
        RuntimeError
            A CUDA (or other non-CPU) tensor or parameter.
        TypeError
            A dtype other than the parameters' (float32 or float64), or hx not a pair of tensors.
        ValueError
            Shapes that do not fit the module (the message names the expected shape and why).
        """
        what = "fastlstm.torch.LSTM"
        packed = self._packed_copy(what)
        params = self._fastlstm_params()
        dtype = params[0].dtype
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx, packed, params, what)
        input = self._autocast_up(input, dtype)
        self._check_tensor(what, "input", input, dtype)
        hx = self._check_hx(what, hx, dtype)
        y, h_n, c_n = run(packed, params, input, hx, None, self._threads(), self.dropout,
                          self.training)
        return y, (h_n, c_n)

    def _check_hx(self, what: str, hx: Any, dtype: torch.dtype) -> Optional[State]:
        if hx is None:
            return None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{what}: hx must be a tuple (h_0, c_0) of two tensors; got "
                            f"{type(hx).__name__}"
                            + (" (a GRU-style single state: an LSTM also needs c_0)"
                               if isinstance(hx, Tensor) else ""))
        h0, c0 = (self._autocast_up(t, dtype) for t in hx)
        for name, t in zip(("h_0", "c_0"), (h0, c0)):
            self._check_tensor(what, name, t, dtype)
        return h0, c0

    def _forward_packed(self, seq: PackedSequence, hx: Any, packed: PackedCopy,
                        params: List[Tensor], what: str
                        ) -> Tuple[PackedSequence, State]:
        """A PackedSequence runs as padded input in its sorted order with lengths (fastlstm's
        ragged batches): the output packs back with the same batch_sizes and indices."""
        data, batch_sizes, sorted_indices, unsorted_indices = seq
        data = self._autocast_up(data, params[0].dtype)
        self._check_tensor(what, "input.data", data, params[0].dtype)
        hx = self._check_hx(what, hx, params[0].dtype)
        padded, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes),
                                              batch_first=self.batch_first)
        if hx is not None and sorted_indices is not None:  # hx comes in the caller's order
            hx = hx[0].index_select(1, sorted_indices), hx[1].index_select(1, sorted_indices)
        y, h_n, c_n = run(packed, params, padded, hx, lengths.numpy(), self._threads(),
                          self.dropout, self.training)
        out = pack_padded_sequence(y, lengths, batch_first=self.batch_first)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return PackedSequence(out.data, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)


class LSTMCell(_FastlstmMixin, nn.LSTMCell):
    """``torch.nn.LSTMCell`` run on fastlstm's CPU kernels: one time step.

    Parameters
    ----------
    input_size : int
        Features of x.
    hidden_size : int
        Hidden units.
    bias : bool, default True
        Whether the cell has ``bias_ih`` and ``bias_hh``.
    device : torch.device, optional
        Where the parameters are made; forward runs only on CPU tensors.
    dtype : torch.dtype, optional
        float32 (default) or float64 for forward.

    Raises
    ------
    ValueError, TypeError
        Arguments torch's own module refuses (its constructor runs unchanged). Forward raises
        RuntimeError for parameters or inputs off the CPU and TypeError for other dtypes.

    Attributes
    ----------
    num_threads : int or None
        Threads of fastlstm's kernels per call; None (default) uses ``torch.get_num_threads()``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self._fastlstm_init()

    def _fastlstm_names(self) -> List[str]:
        return [n + "_l0" for n in self._cell_names()]

    def _fastlstm_params(self) -> List[Tensor]:
        # by name, as torch's own forward reads them: a parametrized weight (weight_norm) is its
        # computed tensor, and other Parameters on the module are not the cell's
        return [getattr(self, n) for n in self._cell_names()]

    def _cell_names(self) -> Tuple[str, ...]:
        return ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias else ("weight_ih",
                                                                                  "weight_hh")

    @torch.compiler.disable  # as LSTM.forward
    def forward(self, input: Tensor, hx: Optional[State] = None) -> State:  # noqa: A002
        """One step, as ``torch.nn.LSTMCell.forward``.

        Parameters
        ----------
        input : Tensor
            (batch, input_size), or (input_size,) unbatched.
        hx : tuple of Tensor, optional
            (h, c), each (batch, hidden_size), 1-D for unbatched input; None means zeros.

        Returns
        -------
        (h_1, c_1) : tuple of Tensor
            The next state, shaped like hx.

        Raises
        ------
        RuntimeError
            A CUDA (or other non-CPU) tensor or parameter.
        TypeError
            A dtype other than the parameters' (float32 or float64), or hx not a pair.
        ValueError
            Shapes that do not fit the cell.
        """
        what = "fastlstm.torch.LSTMCell"
        packed = self._packed_copy(what)
        params = self._fastlstm_params()
        dtype = params[0].dtype
        input = self._autocast_up(input, dtype)
        if hx is not None and isinstance(hx, (tuple, list)) and len(hx) == 2:
            hx = (self._autocast_up(hx[0], dtype), self._autocast_up(hx[1], dtype))
        self._check_tensor(what, "input", input, dtype)
        I, H = self.input_size, self.hidden_size
        if input.dim() not in (1, 2) or input.shape[-1] != I:
            raise ValueError(f"{what}: input must be (batch, input_size) = (batch, {I}), or "
                             f"({I},) unbatched; got shape {tuple(input.shape)}"
                             + (". LSTMCell runs one step: for a sequence use "
                                "fastlstm.torch.LSTM" if input.dim() == 3 else ""))
        batched = input.dim() == 2
        B = input.shape[0] if batched else 1
        expected = (B, H) if batched else (H,)
        states: Optional[State] = None
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{what}: hx must be a tuple (h, c) of two tensors; got "
                                f"{type(hx).__name__}")
            for name, t in zip(("h", "c"), hx):
                self._check_tensor(what, name, t, dtype)
                if tuple(t.shape) != expected:
                    raise ValueError(f"{what}: {name} must have shape {expected} "
                                     f"({'(batch, hidden_size)' if batched else '(hidden_size,)'}"
                                     f", batch from input); got {tuple(t.shape)}")
            states = hx[0].reshape(1, B, H), hx[1].reshape(1, B, H)
        _, h, c = run(packed, params, input.reshape(1, B, I), states, None, self._threads(),
                      0.0, self.training)
        return (h[0], c[0]) if batched else (h[0, 0], c[0, 0])
