"""The one way vidclip starts worker processes: spawned, never forked.

Forking copies a process with only the forking thread: any lock another thread held at that
moment (Ray's, a logging handler's, an allocator's) stays held in the child, which then waits on
it forever. A training run started after Ray, a notebook with a server thread or the test suite
are all threaded, so every process pool (``ProcessPoolExecutor(mp_context=...)``,
``DataLoader(multiprocessing_context=...)``) takes :func:`worker_context`. Spawned workers pay
their imports once at start; that is the price of never hanging.

A leaf module: imports only the standard library.
"""

from __future__ import annotations

import multiprocessing.context
import sys
import types

__all__ = ["worker_context"]


class _NoMainSpawnContext(multiprocessing.context.SpawnContext):
    """Spawned workers that do not re-import the main module: worker jobs are vidclip functions,
    so a plain script without ``if __name__ == "__main__"``, a notebook and ``python -`` all
    work (multiprocessing's spawn/forkserver would re-run the script, or open '<stdin>')."""

    class Process(multiprocessing.context.SpawnProcess):
        @staticmethod
        def _Popen(process_obj):
            from multiprocessing.popen_spawn_posix import Popen

            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")  # nothing to prepare
            try:
                return Popen(process_obj)
            finally:
                if main is not None:
                    sys.modules["__main__"] = main


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for every vidclip worker pool: spawn, without re-running the
    caller's main module. What the workers run must be importable (vidclip functions and
    module-level classes); pass it as ``mp_context=`` / ``multiprocessing_context=``."""
    if sys.platform == "win32":  # spawn is Windows' only method; its Popen is not the posix one
        return multiprocessing.get_context("spawn")
    return _NoMainSpawnContext()
