"""Single-thread GEMM speed: the int8 kernels (every variant this CPU runs) against the float32
packed GEMM of the active float variant, on the same shapes (issue 19). Not a test.

    python bench/int8_gemm.py                  # M=1 and M=64, K=512, N=2048
    python bench/int8_gemm.py 1,1024,4096 16,512,2048 --rounds 31

Each shape runs every kernel in interleaved rounds (so a moment of load on a shared machine hits
them alike), each round a timed loop of calls inside C on the same operands (weights warm in
cache as far as they fit); the best round counts. GOPS = 2*M*K*N / seconds / 1e9 (an int8
multiply-add or a float32 FMA counts as 2 operations).
"""
import argparse

from fastlstm import _kernels


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shapes", nargs="*", default=["1,512,2048", "64,512,2048"],
                   help="M,K,N (default: 1,512,2048 64,512,2048)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--seconds", type=float, default=0.02, help="per timed loop")
    args = p.parse_args()
    kernels = [("float32", None)] + [("int8", isa) for isa in _kernels.int8_isas()]
    print(f"float32: {_kernels.isa()} variant; int8 default: {_kernels.isa_int8()}; 1 thread")
    for shape in args.shapes:
        M, K, N = map(int, shape.split(","))
        ops = 2.0 * M * K * N
        reps = {}
        for kind, isa in kernels:  # calls per timed loop: about args.seconds each
            t = _kernels._time_gemm(kind, M, K, N, 1, isa)
            reps[kind, isa] = max(1, int(args.seconds / max(t, 1e-7)))
        best = {key: float("inf") for key in kernels}
        for _ in range(args.rounds):
            for kind, isa in kernels:
                best[kind, isa] = min(best[kind, isa],
                                      _kernels._time_gemm(kind, M, K, N, reps[kind, isa], isa))
        base = best["float32", None]
        print(f"M={M} K={K} N={N}:")
        for (kind, isa), t in best.items():
            name = kind if isa is None else f"{kind} {isa}"
            print(f"  {name:16s} {t * 1e6:10.1f} us {ops / t / 1e9:8.1f} GOPS"
                  f"  {base / t:5.2f}x float32")


if __name__ == "__main__":
    main()
