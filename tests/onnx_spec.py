"""The ONNX LSTM operator (opset 14) written from its specification in float64 NumPy, for what
onnxruntime cannot run (it rejects layout=1). Tested against onnxruntime for layout=0.

Gate row blocks of W, R and B are i, o, f, c; P = [Pi | Po | Pf]; default activations only.
"""
import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm(X, W, R, B=None, initial_h=None, initial_c=None, P=None, *, direction="forward",
         layout=0):
    """Y, Y_h, Y_c of one ONNX LSTM node.

    layout=0: X [T, B, I], states [D, B, H] -> Y [T, D, B, H], Y_h / Y_c [D, B, H].
    layout=1: X [B, T, I], states [B, D, H] -> Y [B, T, D, H], Y_h / Y_c [B, D, H].
    """
    X = np.asarray(X, np.float64)
    if layout == 1:
        X = X.transpose(1, 0, 2)
        initial_h = None if initial_h is None else np.asarray(initial_h).transpose(1, 0, 2)
        initial_c = None if initial_c is None else np.asarray(initial_c).transpose(1, 0, 2)
    T, batch, _ = X.shape
    D, H = W.shape[0], R.shape[-1]
    names = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    assert len(names) == D
    Y = np.zeros((T, D, batch, H))
    Y_h, Y_c = np.zeros((D, batch, H)), np.zeros((D, batch, H))
    for d, name in enumerate(names):
        w, r = np.asarray(W[d], np.float64), np.asarray(R[d], np.float64)
        b = np.zeros(4 * H) if B is None else np.asarray(B[d, :4 * H] + B[d, 4 * H:], np.float64)
        p = np.zeros(3 * H) if P is None else np.asarray(P[d], np.float64)
        p_i, p_o, p_f = p[:H], p[H:2 * H], p[2 * H:]
        h = np.zeros((batch, H)) if initial_h is None else np.asarray(initial_h[d], np.float64)
        c = np.zeros((batch, H)) if initial_c is None else np.asarray(initial_c[d], np.float64)
        for t in (range(T) if name == "forward" else range(T - 1, -1, -1)):
            gates = X[t] @ w.T + h @ r.T + b
            i, o, f, g = np.split(gates, 4, axis=-1)
            i = _sigmoid(i + p_i * c)
            f = _sigmoid(f + p_f * c)
            c = f * c + i * np.tanh(g)
            o = _sigmoid(o + p_o * c)  # the new cell state, per the spec
            h = o * np.tanh(c)
            Y[t, d] = h
        Y_h[d], Y_c[d] = h, c
    if layout == 1:
        return Y.transpose(2, 0, 1, 3), Y_h.transpose(1, 0, 2), Y_c.transpose(1, 0, 2)
    return Y, Y_h, Y_c
