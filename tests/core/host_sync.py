"""A CPU stand-in for torch.cuda.set_sync_debug_mode("error"): records every operation that
would make the host wait for the device (a tensor read on the host, or an op whose output shape
depends on the data) while it is active."""
from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# ops whose result is read on the host, or whose output size depends on the values
_SYNCING_OPS = {
    aten._local_scalar_dense.default,  # .item(), bool(), int(), float(), `if tensor:`
    aten.nonzero.default, aten.nonzero_static.default if False else aten.nonzero.default,
    aten.masked_select.default,
    aten._unique.default, aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
    aten.equal.default,  # torch.equal returns a Python bool
    aten.is_nonzero.default,
}
# host reads that never reach the dispatcher as an op
_HOST_METHODS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__}


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


class _Dispatch(TorchDispatchMode):
    def __init__(self, found):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SYNCING_OPS or (func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default)
                                    and _bool_index(args)):
            self.found.append((str(func), "".join(traceback.format_stack(limit=14)[:-2])))
        elif func is aten._to_copy.default and kwargs.get("device") is not None and \
                torch.device(kwargs["device"]).type == "cpu" and args[0].device.type != "cpu":
            self.found.append((str(func), "".join(traceback.format_stack(limit=14)[:-2])))
        return func(*args, **kwargs)


class _Function(TorchFunctionMode):
    def __init__(self, found):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_METHODS:
            self.found.append((getattr(func, "__name__", str(func)), "".join(traceback.format_stack(limit=14)[:-2])))
        return func(*args, **(kwargs or {}))


class HostSyncs:
    """with HostSyncs() as syncs: ... ; syncs.found is a list of (op, stack) pairs."""

    def __init__(self):
        self.found: list[tuple[str, str]] = []

    def __enter__(self):
        self._modes = [_Function(self.found), _Dispatch(self.found)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        return False
