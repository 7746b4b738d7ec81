"""Actors as the API sees them (Ray's ``ray.actor``): what ``@remote`` makes of a
class, the handle, its methods, ``method`` and ``exit_actor``.

    @remote class C ─► ActorClass ─► C.remote(...) ─► runtime.create_actor ─► ActorHandle
    handle.f.remote(...) ─► ActorMethod ─► runtime.submit_call ─► ObjectRef(s)

A handle is a value: it pickles to its HandleState and the ObjectRef of its actor's
*token*, a tiny object the driver stores for each actor. Reference counting does the
rest: the token lives while a handle to the actor exists in any process, and the
actor ends when it is freed (see _driver.actors). A method is identified on the wire
by `method_id(class id, name)`, computed the same way in every process.
"""
from __future__ import annotations

import os
import pickle
import zlib

from . import _context, _options
from ._arity import MAX_SHAPES, Arity
from ._crecords import ActorHandleBase, ActorMethodBase, MethodCallsBase, set_method_type
from ._function_pickle import pickle_function
from ._object_ref import ObjectRef
from ._records import NamedTuple

_MASK64 = (1 << 64) - 1
# Methods every actor has: queued like the others (see _worker_actor).
TERMINATE, READY = "__ray_terminate__", "__ray_ready__"
_NOT_METHODS = {"__init__", "__new__", "__init_subclass__", "__subclasshook__",
                "__class_getitem__", "__getattr__", "__getattribute__", "__setattr__",
                "__delattr__", "__del__", "__reduce__", "__reduce_ex__", "__getstate__",
                "__setstate__"}


def method_id(class_id: int, name: str) -> int:
    """The function id of method `name` of class `class_id`, the same in every process."""
    return (class_id ^ (zlib.crc32(name.encode()) * 0x9E3779B97F4A7C15)) & _MASK64


class MethodInfo(NamedTuple):
    name: str
    fn_id: int
    num_returns: int
    is_async: bool
    is_generator: bool
    max_task_retries: int | None = None  # None: the actor's
    retry_exceptions: object = False
    backpressure: int = -1      # a generator's _generator_backpressure_num_objects


class HandleState(NamedTuple):
    """What a handle is, as it travels (a plain tuple on the wire)."""
    actor_id: int               # the id of the actor's token object
    class_id: int
    class_name: str
    methods: tuple              # MethodInfo tuples
    is_async: bool
    name: str | None
    namespace: str | None


class ActorID:
    """Ray's ActorID, as far as users read it."""

    def __init__(self, value: int):
        self._value = value

    def hex(self) -> str:
        return f"{self._value:032x}"

    def binary(self) -> bytes:
        return self._value.to_bytes(16, "big")

    def __eq__(self, other):
        return isinstance(other, ActorID) and other._value == self._value

    def __hash__(self):
        return hash(self._value)

    def __repr__(self):
        return f"ActorID({self.hex()})"


def method(*args, **options):
    """``@shmray.method(num_returns=N, max_task_retries=.., retry_exceptions=..)`` on an
    actor's method (Ray's ``ray.method``): the defaults of that method's calls."""
    if args or not options or "name" in options:
        raise ValueError("The @shmray.method decorator must be applied with at least one of "
                         f"the keyword arguments {sorted(set(_options.METHOD_OPTIONS) - {'name'})}"
                         ", for example '@shmray.method(num_returns=2)'.")
    _options.validate_method(options)

    def annotate(fn):
        fn.__ray_method_options__ = options
        return fn
    return annotate


def _methods_of(cls, class_id: int) -> tuple:
    import inspect  # (here, as in _method_arity: a program without actors never needs it)

    infos = []
    for name, member in inspect.getmembers(cls):
        if name in _NOT_METHODS or not (inspect.isfunction(member) or inspect.ismethod(member)):
            continue
        raw = inspect.unwrap(member)
        given = getattr(member, "__ray_method_options__", {})
        is_generator = inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw)
        infos.append(MethodInfo(name, method_id(class_id, name),
                                given.get("num_returns", "streaming" if is_generator else 1),
                                inspect.iscoroutinefunction(raw) or inspect.isasyncgenfunction(raw),
                                is_generator,
                                given.get("max_task_retries"),
                                _portable(given.get("retry_exceptions") or False),
                                given.get("_generator_backpressure_num_objects", -1)))
    for name in (TERMINATE, READY):  # (terminate's ref raises the actor's ActorDiedError)
        infos.append(MethodInfo(name, method_id(class_id, name), 1, False, False))
    return tuple(infos)


def _portable(retry_exceptions):
    """A method's retry_exceptions as its handles carry it: a list of exception types
    is cloudpickled (they may be local classes; the driver's pickle could not send them)."""
    if isinstance(retry_exceptions, bool):
        return retry_exceptions
    import cloudpickle  # (here: cloudpickle is imported when first needed)

    return cloudpickle.dumps(tuple(retry_exceptions))


def _method_arity(cls, name):
    """What `name`'s calls accept, without self (None: unknown, any call goes)."""
    import inspect

    static = inspect.getattr_static(cls, name, None)
    try:
        sig = inspect.signature(getattr(cls, name))
    except (TypeError, ValueError, AttributeError):  # (AttributeError: a builtin method)
        return None
    params = list(sig.parameters.values())
    if not isinstance(static, (staticmethod, classmethod)) and params:
        params = params[1:]  # self
    return Arity(sig.replace(parameters=params))


class ActorClass:
    """What ``@remote`` makes of a class: ``C.remote(...)`` creates an actor."""

    def __init__(self, cls, options: _options.ActorOptions, _shared=None):
        self._cls = cls
        self._options = options
        self._shared = _shared if _shared is not None else {}
        if "class_id" not in self._shared:
            class_id = int.from_bytes(os.urandom(8), "little")
            self._shared.update(class_id=class_id, methods=_methods_of(cls, class_id),
                                arity=_method_arity(cls, "__init__"))
        self._class_id = self._shared["class_id"]
        self._methods = self._shared["methods"]
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError("Actors cannot be instantiated directly. Instead of "
                        f"'{self.__name__}()', use '{self.__name__}.remote()'.")

    def remote(self, *args, **kwargs) -> ActorHandle:
        arity = self._shared["arity"]
        if arity is not None and not arity.accepts(args, kwargs):
            try:
                arity.signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{self.__qualname__}.remote(): {e}") from None
        return _context.get_runtime().create_actor(self, args, kwargs, self._options)

    def options(self, **options) -> ActorClass:
        """A variant of this class with some actor options overridden."""
        _options.validate_actor(options)
        return ActorClass(self._cls, _options.merge(self._options, options), self._shared)

    def bind(self, *args, **kwargs):
        raise NotImplementedError("shmray does not support Ray's DAG API (bind)")

    def _pickled(self) -> bytes:
        data = self._shared.get("bytes")
        if data is None:
            data = self._shared["bytes"] = pickle_function(self._cls)
        return data

    def _handle_state(self, actor_id: int, options) -> HandleState:
        is_async = any(m.is_async for m in self._methods)
        return HandleState(actor_id, self._class_id, self.__qualname__, self._methods,
                           is_async, options.name, options.namespace)

    def __repr__(self):
        return f"<shmray.actor.ActorClass {self.__module__}.{self.__qualname__}>"


class _MethodCalls(MethodCallsBase):
    """What every handle's calls of one method share: the call's options, and the
    argument checker (computed at the first call with arguments). Its fields are in C
    (csrc/actor_method.c reads them): info, options, arity, shapes, and
        fn_id, name     the method's id, and its calls' name (info.fn_id, options.name)
        no_args         a call without arguments passed the check (the C may take it)
    """

    __slots__ = ()

    def __init__(self, info: MethodInfo, options):
        self.info = info
        self.options = options
        self.arity = False  # not computed yet (None: unknown, any call goes)
        self.shapes = set()  # call shapes (count, *keyword names) found acceptable
        self.fn_id = info.fn_id
        self.name = options.name
        self.no_args = False


class ActorMethod(ActorMethodBase):
    """``handle.f``: ``.remote(...)`` calls it; ``.options(num_returns=.., name=..)``.
    Made at each attribute access: a handle never holds its methods (a cycle would keep
    the handle, and so the actor, alive until the garbage collector ran). Its fields
    (_handle, _calls) and `.remote` are in C (csrc/actor_method.c): a call without
    arguments goes from there to the driver's lane; every other one comes to _remote."""

    __slots__ = ()

    def __init__(self, handle, calls: _MethodCalls):
        self._handle = handle
        self._calls = calls

    def __call__(self, *args, **kwargs):
        name = self._calls.info.name
        raise TypeError("Actor methods cannot be called directly. Instead of running "
                        f"'object.{name}()', try 'object.{name}.remote()'.")

    def _remote(self, *args, **kwargs):
        calls = self._calls
        shape = (len(args), *kwargs)
        if shape not in calls.shapes:
            self._check(args, kwargs, shape)
        return _context.get_runtime().submit_call(self._handle, calls.fn_id, args, kwargs,
                                                  calls.options)

    def _check(self, args, kwargs, shape):
        calls = self._calls
        if calls.arity is False:
            cls = _context.actor_classes.get(self._handle._state.class_id)
            calls.arity = _method_arity(cls, calls.info.name) if cls is not None else None
        arity = calls.arity
        if arity is not None and not arity.accepts(args, kwargs):
            try:
                arity.signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{calls.options.name}.remote(): {e}") from None
        if len(calls.shapes) < MAX_SHAPES:
            calls.shapes.add(shape)
        if shape == (0,):
            calls.no_args = True

    def options(self, **options):
        """A variant of this call: num_returns, name, max_task_retries,
        retry_exceptions (enable_task_events and concurrency_group are accepted)."""
        _options.validate_method(options)
        calls = self._calls
        given = {k: v for k, v in options.items()
                 if v is not None and k in _options.CALL_FIELDS}
        key = (calls.info.fn_id, *sorted(given.items(), key=lambda kv: kv[0]))
        try:
            variant = _variants.get(key)  # (one per distinct options: the driver keeps
        except TypeError:                 # a verdict per TaskOptions it sees)
            key = variant = None          # (a list of exception types: not hashable)
        if variant is None:
            variant = _MethodCalls(calls.info, _options.merge(calls.options, given))
            variant.arity = calls.arity
            if key is not None and len(_variants) < MAX_VARIANTS:
                _variants[key] = variant
        return ActorMethod(self._handle, variant)

    def bind(self, *args, **kwargs):
        raise NotImplementedError("shmray does not support Ray's DAG API (bind)")


set_method_type(ActorMethod)
_method_calls = {}  # class id -> {method name -> _MethodCalls}
_variants = {}      # (method's fn id, *options given) -> _MethodCalls of .options()
MAX_VARIANTS = 4096


class ActorHandle(ActorHandleBase):
    """A handle to an actor: its methods as attributes, ``h.f.remote(...)``. Its fields
    (_state, _ray_token, _methods: its class's _MethodCalls by name) and the lookup of
    a method are in C (csrc/actor_method.c); a method not called before comes to
    _missing."""

    def __init__(self, state: HandleState, token: ObjectRef):
        self._state = state
        self._ray_token = token  # holds the actor (see the module's docstring)
        self._methods = _method_calls.setdefault(state.class_id, {})

    def _missing(self, name):
        """`self.name`, for a name that is neither an attribute nor a method seen yet."""
        state = self._state
        info = next((MethodInfo(*m) for m in state.methods if m[0] == name), None)
        if info is None:
            raise AttributeError(f"'{state.class_name}' object has no attribute '{name}'")
        calls = self._methods.get(name)
        if calls is None:
            retry = info.retry_exceptions
            calls = self._methods[name] = _MethodCalls(info, _options.call_options(
                f"{state.class_name}.{name}", info.num_returns, info.max_task_retries,
                pickle.loads(retry) if isinstance(retry, bytes) else retry,
                info.backpressure))
        return ActorMethod(self, calls)

    @property
    def _actor_id(self) -> ActorID:
        return ActorID(self._state.actor_id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._state.actor_id == self._state.actor_id

    def __hash__(self):
        return hash(self._state.actor_id)

    def __repr__(self):
        return f"Actor({self._state.class_name}, {self._state.actor_id:032x})"

    def __reduce__(self):
        return (_rebuild_handle, (plain_state(self._state), self._ray_token))


def plain_state(state: HandleState) -> tuple:
    """The state as the wire carries it: plain tuples (a NamedTuple pickles its class)."""
    return (*state[:3], tuple(tuple(m) for m in state.methods), *state[4:])


def _rebuild_handle(state: tuple, token: ObjectRef) -> ActorHandle:
    return ActorHandle(HandleState(*state), token)


def handle_from(state: tuple, counted: bool = False) -> ActorHandle:
    """A handle made from a HandleState this process was given (not unpickled)."""
    state = HandleState(*state)
    return ActorHandle(state, ObjectRef(state.actor_id, counted))


def make(cls, options: dict) -> ActorClass:
    _options.validate_actor(options)
    actor_class = ActorClass(cls, _options.merge(_options.ACTOR_DEFAULT, options))
    _context.actor_classes[actor_class._class_id] = cls
    return actor_class


def exit_actor():
    """End the current actor on purpose, from inside it (Ray's ``exit_actor``): the
    call that runs this ends, the calls queued behind it fail with ActorDiedError, and
    the actor is not restarted."""
    rt = _context.get_runtime()
    host = getattr(rt, "actor_host", None)
    if host is None:
        raise TypeError("exit_actor API is called on a non-actor worker, "
                        f"{'the driver' if rt.is_driver else 'a task'}. Call this API "
                        "inside an actor methods if you'd like to exit the actor gracefully.")
    host.exit("exit_actor() was called")
