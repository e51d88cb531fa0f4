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
import importlib.machinery
import importlib.util
import sys
from types import ModuleType


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
    return module
