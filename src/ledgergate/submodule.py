"""Loading one module of a third-party package without running the package's `__init__`.

Some packages import far more in `__init__` than the gateway uses: the MCP SDK loads its whole client
and server (about 23 MB resident) around the request validation the gateway needs, and the CEL
binding loads its interactive shell (prompt_toolkit, pygments: about 7 MB) around the interpreter.
`serve` would carry that memory for nothing. The module is found in the package's directory and
registered under its real name, so a later ordinary `import` of the package (the CLI's other verbs,
the demo, tests) uses this same module object and its classes stay the same classes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType


class _Attach(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """When a package above a module loaded early is imported after all, the module is set as the
    package's attribute, as an ordinary import would have done (`import mcp.shared.inbound` then
    `mcp.shared.inbound.X` must work in a process that later loads the whole SDK)."""

    def __init__(self) -> None:
        self.children: dict[str, str] = {}  # package → the full name of a module loaded before it
        self._loaders: dict[str, importlib.abc.Loader] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.children:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        self._loaders[fullname] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loaders[spec.name].create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        self._loaders.pop(name).exec_module(module)
        child = self.children.pop(name)
        setattr(module, child.rpartition(".")[2], sys.modules[child])


_attach = _Attach()


def load_submodule(name: str) -> ModuleType:
    """`importlib.import_module(name)`, except that the packages above `name` are not run if they have
    not been imported yet (`name` then must not need them: a leaf module with its own imports)."""
    if name in sys.modules:
        return sys.modules[name]
    top = name.partition(".")[0]
    parent = name.rpartition(".")[0]
    if top in sys.modules:
        return importlib.import_module(name)
    package = importlib.util.find_spec(top)  # a top-level spec is found without running the package
    if package is None or not package.submodule_search_locations:
        return importlib.import_module(name)
    search = list(package.submodule_search_locations)
    for part in parent.split(".")[1:]:
        search = [f"{location}/{part}" for location in search]
    spec = importlib.machinery.PathFinder.find_spec(name, search)
    if spec is None or spec.loader is None:
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before it runs, as the import system does
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if _attach not in sys.meta_path:
        sys.meta_path.insert(0, _attach)
    _attach.children[parent] = name
    return module
