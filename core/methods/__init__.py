"""Self-supervised methods: one file each, registered by name. `build(name, ...)` makes one."""
from core.methods.base import Method
from core.methods.registry import METHODS, MethodInfo, build, build_resolved, method_info, method_names, register

__all__ = ["METHODS", "Method", "MethodInfo", "build", "build_resolved", "method_info", "method_names", "register"]
