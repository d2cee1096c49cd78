"""The soft timeout: an exception raised inside the thread running an overdue task.

Python offers no way to stop a thread from outside except an asynchronous exception, which
fires at the thread's next bytecode (the approach dramatiq's time limits take). A task blocked
in C code does not see it; the manager's hard timeout, which kills the process, covers that.
"""

from __future__ import annotations

import ctypes


class SoftTimeout(Exception):
    """The job ran past its timeout_seconds: make the task faster, or give the job a longer
    timeout_seconds."""


def raise_in_thread(thread_ident: int, exception: type[BaseException]) -> bool:
    """Schedule `exception` in the thread; False if no such thread exists any more."""
    affected = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_ident), ctypes.py_object(exception)
    )
    if affected > 1:  # cannot happen for a real ident; undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), None)
        return False
    return bool(affected == 1)
