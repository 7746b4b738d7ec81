"""Runtime environments of a session: which one a task runs in, and setting them up.

    task's options ─► key_for / child_key (merged with the job's or the parent's)
    first task of an env ─► admit: waits ─► setup thread ─► event (ready / failed)
    message loop ─► take_events ─► the waiting tasks run (TaskTable.env_settled) or fail

A task with a runtime_env (its own, or the job's) runs on workers started for that
environment. Setting one up (copies, a pip venv: seconds to minutes) happens on a
thread that touches nothing of the session: it reports an event, which the message
loop takes at its next housekeeping round. Everything but the thread runs under
the session's lock.
"""
from __future__ import annotations

import sys
import threading
from collections import deque

from .. import _runtime_env
from ..exceptions import RuntimeEnvSetupError


class EnvState:
    """A runtime_env of this session: set up once, on a thread."""

    __slots__ = ("env", "thread", "prepared", "error", "waiting")

    def __init__(self, env):
        self.env = env              # the merged, normalized runtime_env
        self.thread = None          # setting it up
        self.prepared = None        # _runtime_env.Prepared, once set up
        self.error = None           # RuntimeEnvSetupError, if that failed
        self.waiting = []           # TaskSpecs ready but for the environment


class Environments:
    def __init__(self, job_env, session_root):
        self.job_env = job_env      # init(runtime_env=...), normalized: tasks inherit it
        self.session_root = session_root
        self.states = {}            # key -> EnvState
        self.prepared = {}          # key -> _runtime_env.Prepared, once set up (workers
                                    # are started from these)
        self.stop = _runtime_env.SetupStop()  # shutdown: this session's setups end
        self.events = deque()       # (key, prepared, error) from setup threads
        self._children = {}         # (id(TaskOptions), parent's key) -> (options, key)
        self.job_key = self._register(job_env)

    def base_env(self):
        """The job's runtime_env, set up now unless it needs pip (seconds to minutes:
        that one is set up on a thread, and the base workers start plain and are
        replaced once it is ready). Returns what the base workers start in (None:
        plain). RuntimeEnvSetupError if it cannot be set up (nothing is left behind)."""
        key = self.job_key
        if key is None or "pip" in self.job_env:
            return None
        state = self.states[key]
        try:
            state.prepared = _runtime_env.prepare(state.env, self.session_root, log, self.stop)
        except BaseException as e:
            import shutil  # (here: start-up does not need it)

            shutil.rmtree(self.session_root, ignore_errors=True)
            if isinstance(e, RuntimeEnvSetupError) or not isinstance(e, Exception):
                raise
            raise RuntimeEnvSetupError(f"Failed to set up runtime environment "
                                       f"{state.env}: {type(e).__name__}: {e}") from e
        self.prepared[key] = state.prepared
        return state.prepared

    def start_eager(self):
        """As Ray: the job's pip packages are installed at init (eager_install)."""
        key = self.job_key
        if key is not None and self.states[key].prepared is None and \
                self.job_env.get("config", {}).get("eager_install", True):
            self._start_setup(key)

    def _register(self, env):
        if not env or not any(k in env for k in _runtime_env.EFFECTIVE):
            return None
        key = _runtime_env.key(env)
        if key not in self.states:
            self.states[key] = EnvState(env)
        return key

    def key_for(self, options):
        """The key of the environment tasks with these options run in, or None."""
        return self._register(_runtime_env.merge(self.job_env, options.runtime_env))

    def child_key(self, options, parent, own):
        """The key of a task submitted inside a task: its options' environment merged
        with its parent's (Ray's inheritance). `own`: key_for(options)."""
        if parent is None or parent == self.job_key:
            return own
        cache_key = (id(options), parent)
        cached = self._children.get(cache_key)
        if cached is None or cached[0] is not options:
            env = _runtime_env.merge(self.states[parent].env, options.runtime_env)
            cached = self._children[cache_key] = (options, self._register(env))
        return cached[1]

    def admit(self, spec):
        """True if the task's environment is set up; False if the task waits for it
        (set up now, on a thread); the RuntimeEnvSetupError if setting it up failed."""
        state = self.states[spec.env]
        if state.prepared is not None:
            return True
        if state.error is not None:
            return state.error
        state.waiting.append(spec)
        self._start_setup(spec.env)
        return False

    def _start_setup(self, key):
        state = self.states[key]
        if state.thread is None:
            state.thread = threading.Thread(target=self._set_up, args=(key, state.env),
                                            daemon=True, name=f"shmray-runtime-env-{key}")
            state.thread.start()

    def _set_up(self, key, env):
        """(A thread.) Prepare the environment and report how it went."""
        try:
            prepared, error = _runtime_env.prepare(env, self.session_root, log, self.stop), None
        except RuntimeEnvSetupError as e:
            prepared, error = None, e
        except Exception as e:  # a copy that failed, a full disk...
            prepared, error = None, RuntimeEnvSetupError(
                f"Failed to set up runtime environment {env}: {type(e).__name__}: {e}")
        self.events.append((key, prepared, error))

    def take_events(self):
        """The setups that ended since the last call, as (key, prepared, error, the
        tasks that waited for it); their states record the outcome."""
        settled = []
        while self.events:
            key, prepared, error = self.events.popleft()
            state = self.states[key]
            state.prepared, state.error = prepared, error
            if prepared is not None:
                self.prepared[key] = prepared
            waiting, state.waiting = state.waiting, []
            settled.append((key, prepared, error, waiting))
        return settled

    def waiting_count(self) -> int:
        return sum(len(state.waiting) for state in self.states.values())

    def shutdown(self):
        """Running setups stop (pip killed, copies abandoned at the next directory)."""
        self.stop.set()
        for state in self.states.values():
            if state.thread is not None:
                state.thread.join(timeout=2.0)


def log(text):
    print(f"shmray: {text}", file=sys.stderr, flush=True)
