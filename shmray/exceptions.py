"""Public exceptions, with Ray's names, hierarchy and messages (``ray.exceptions``)."""
from __future__ import annotations

import os


class RayError(Exception):
    """Base class of every shmray error."""


class RayTaskError(RayError):
    """A task raised an exception.

    ``get`` raises ``as_instanceof_cause()``: an object that is both a RayTaskError
    and an instance of the user's exception class, so ``except ValueError`` works.
    ``str()`` gives the remote traceback under a ``ray::name()`` header, as Ray does.
    """

    def __init__(self, function_name, traceback_str, cause, proctitle=None, pid=None, ip=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"ray::{function_name}"
        self.pid = pid or os.getpid()
        self.ip = ip or _node_ip()
        self.args = (function_name, traceback_str, cause, self.proctitle, self.pid, self.ip)

    def __str__(self):
        out = []
        for line in self.traceback_str.strip().split("\n"):
            if line.startswith("Traceback "):
                out.append(f"{self.proctitle}() (pid={self.pid}, ip={self.ip})")
            else:
                out.append(line)
        return "\n".join(out)

    def as_instanceof_cause(self):
        """An exception that is an instance of both RayTaskError and the cause's class."""
        cause_cls = type(self.cause)
        if issubclass(RayTaskError, cause_cls):
            return self
        try:
            dual = _dual_class(cause_cls)
            err = dual.__new__(dual)
            RayTaskError.__init__(err, self.function_name, self.traceback_str, self.cause,
                                  self.proctitle, self.pid, self.ip)
            return err
        except Exception:  # the user's class cannot be subclassed or built this way
            return self


_dual_classes: dict = {}


def _dual_class(cause_cls):
    cls = _dual_classes.get(cause_cls)
    if cls is None:
        def __getattr__(self, name):
            if name == "cause":
                raise AttributeError(name)
            return getattr(self.cause, name)

        def __reduce__(self):
            return (_rebuild_task_error, self.args)

        name = f"RayTaskError({cause_cls.__name__})"
        cls = type(name, (RayTaskError, cause_cls), {
            "__getattr__": __getattr__, "__reduce__": __reduce__,
            "__str__": RayTaskError.__str__, "__init__": RayTaskError.__init__,
            "__module__": __name__,
        })
        cls.__qualname__ = name
        _dual_classes[cause_cls] = cls
    return cls


def _rebuild_task_error(*args):
    return RayTaskError(*args).as_instanceof_cause()


def _node_ip():
    import socket  # (here: an error's message only)

    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class GetTimeoutError(RayError, TimeoutError):
    """``get`` (or ``wait`` inside a task) ran out of time."""


class WorkerCrashedError(RayError):
    """The worker process died while running the task."""

    def __init__(self, message: str | None = None):
        self.message = message or ("The worker died unexpectedly while executing this task.")
        super().__init__(self.message)

    def __str__(self):
        return self.message


class TaskCancelledError(RayError):
    """The task was cancelled with ``cancel``."""

    def __init__(self, task_id=None, error_message=None):
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(task_id, error_message)

    def __str__(self):
        msg = f"Task: {self.task_id} was cancelled. " if self.task_id else ""
        return msg + (self.error_message or "")


class ObjectLostError(RayError):
    """The object's value is gone (its memory was released or its segment vanished)."""

    def __init__(self, object_ref_hex: str, message: str | None = None):
        self.object_ref_hex = object_ref_hex
        self.message = message
        super().__init__(object_ref_hex, message)

    def __str__(self):
        base = f"Failed to retrieve object {self.object_ref_hex}."
        return f"{base} {self.message}" if self.message else base


class ObjectStoreFullError(RayError):
    """The object store is full even after spilling."""

    def __str__(self):
        return super().__str__() + (
            "\nThe local object store is full of objects that are still in scope and cannot be "
            "evicted. Tip: drop the refs you no longer need, or raise init(object_store_memory=).")


class OutOfMemoryError(RayError):
    """The machine is running out of memory."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class RuntimeEnvSetupError(RayError):
    """A task's runtime environment could not be set up."""

    def __init__(self, error_message: str | None = None):
        self.error_message = error_message
        super().__init__(error_message)

    def __str__(self):
        msgs = ["Failed to set up runtime environment."]
        if self.error_message:
            msgs.append(self.error_message)
        return "\n".join(msgs)


class TaskUnschedulableError(RayError):
    """The task asks for something this machine can never provide."""

    def __init__(self, error_message: str):
        self.error_message = error_message
        super().__init__(error_message)

    def __str__(self):
        return f"The task is not schedulable: {self.error_message}"


class RaySystemError(RayError):
    """The session itself failed, or was shut down while this call waited on it."""


class RayActorError(RayError):
    """The actor of a call could not finish it (Ray's base of the two below)."""

    BASE_ERROR_MSG = "The actor experienced an error before finishing this task."

    def __init__(self, actor_id=None, error_msg=BASE_ERROR_MSG, actor_init_failed=False,
                 preempted=False):
        self.actor_id = actor_id
        self.error_msg = error_msg
        self._actor_init_failed = actor_init_failed
        self._preempted = preempted
        super().__init__(actor_id, error_msg, actor_init_failed, preempted)

    def __str__(self):
        return self.error_msg

    @property
    def actor_init_failed(self) -> bool:
        return self._actor_init_failed

    @property
    def preempted(self) -> bool:
        return self._preempted


class ActorDiedError(RayActorError):
    """The actor is dead: its process died or exited, it was killed, or its __init__
    raised (`cause`: that RayTaskError). Every later call raises it too."""

    BASE_ERROR_MSG = "The actor died unexpectedly before finishing this task."

    def __init__(self, cause=None, actor_id=None):
        if isinstance(cause, RayTaskError):
            msg = ("The actor died because of an error raised in its creation task, "
                   f"{cause}")
            super().__init__(actor_id, msg, actor_init_failed=True)
        else:  # (a text: what ended it, from the driver; None: not known)
            msg = self.BASE_ERROR_MSG + (f"\n{cause}" if cause else "")
            super().__init__(actor_id, msg)
        self.cause = cause
        self.args = (cause, actor_id)

    def __reduce__(self):
        return (ActorDiedError, (self.cause, self.actor_id))


class ActorUnavailableError(RayActorError):
    """The actor was restarting when this call would have run: the call may or may not
    have run (Ray's words); later calls go to the restarted actor."""

    def __init__(self, error_message: str, actor_id=None):
        msg = (f"The actor {actor_id} is unavailable: {error_message}. The task may or may "
               f"not have been executed on the actor.")
        super().__init__(actor_id, msg)
        self.error_message = error_message
        self.args = (error_message, actor_id)

    def __reduce__(self):
        return (ActorUnavailableError, (self.error_message, self.actor_id))


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor of that name exists in that namespace (a ValueError too, as in Ray)."""


class PendingCallsLimitExceeded(RayError):
    """The actor has `max_pending_calls` calls pending already (Ray's name)."""


PendingCallsLimitExceededError = PendingCallsLimitExceeded


class TaskPlacementGroupRemoved(RayError):
    """The placement group this task was to run in was removed before it could run."""

    def __str__(self):
        return "The placement group of this task was removed before the task could run."


class ActorPlacementGroupRemoved(RayError):
    """The placement group this actor ran (or was to run) in was removed."""

    def __str__(self):
        return "The placement group of this actor was removed."


__all__ = [
    "RayError", "RayTaskError", "GetTimeoutError", "WorkerCrashedError", "TaskCancelledError",
    "ObjectLostError", "ObjectStoreFullError", "OutOfMemoryError", "RuntimeEnvSetupError",
    "TaskUnschedulableError", "RaySystemError", "RayActorError", "ActorDiedError",
    "ActorUnavailableError", "ActorAlreadyExistsError", "PendingCallsLimitExceeded",
    "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved",
]
