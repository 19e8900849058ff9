"""The peers' packages: each imported only when it runs (Unavailable when it is not installed),
and every thread pool pinned to a cell's thread count."""
import contextlib
import importlib
import sys


class Unavailable(Exception):
    """A system that cannot run here (a package is missing); the message is the note."""


class Peers:
    """Imports each peer the first time it is needed, and pins every thread pool per cell."""

    def __init__(self):
        self._modules = {}
        self._controller = None
        self.threads = None
        # torch's thread count to restore after the run, when the caller had imported torch
        # (measured now, before any limit; a torch imported here is left at its default)
        torch = sys.modules.get("torch")
        self._torch_threads_before = torch.get_num_threads() if torch is not None else None

    def module(self, name, pip_name=None):
        if name not in self._modules:
            try:
                self._modules[name] = importlib.import_module(name)
            except ImportError as exc:
                self._modules[name] = Unavailable(
                    f"{pip_name or name} is not installed (pip install {pip_name or name}): {exc}")
            if name == "torch" and self.threads and \
                    not isinstance(self._modules[name], Exception):
                self._modules[name].set_num_threads(self.threads)
        mod = self._modules[name]
        if isinstance(mod, Exception):
            raise mod
        return mod

    def controller(self):
        """threadpoolctl's controller (made once: scanning the loaded libraries takes ms), or
        None when threadpoolctl is not installed."""
        if self._controller is None:
            try:
                tpc = self.module("threadpoolctl")
            except Unavailable:
                self._controller = False
            else:
                self._controller = tpc.ThreadpoolController()
        return self._controller or None

    @contextlib.contextmanager
    def pinned(self, threads):
        """Every thread pool threadpoolctl sees and torch's (when imported) at `threads`."""
        self.threads = threads
        ctl = self.controller()
        torch = self._modules.get("torch")
        torch = None if isinstance(torch, Exception) else torch
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            with ctl.limit(limits=threads) if ctl is not None else contextlib.nullcontext():
                yield
        finally:
            self.threads = None

    def restore(self):
        torch = self._modules.get("torch")
        if torch is not None and not isinstance(torch, Exception) and \
                self._torch_threads_before is not None:
            torch.set_num_threads(self._torch_threads_before)

    def threadpool_info(self):
        ctl = self.controller()
        if ctl is None:
            return "threadpoolctl not installed"
        ctl = self.module("threadpoolctl").ThreadpoolController()  # what is loaded now
        return [{k: d.get(k) for k in ("internal_api", "prefix", "version", "num_threads",
                                        "architecture")} for d in ctl.info()]
