/* section_lock.c - the driver's lock and its Ctrl-C sections, as C types the lane
 * (lane_remote.c) uses without a call into Python.
 *
 * SectionsBase: the fields of _driver/interrupts.Sections, `depth` (the main thread's
 * nesting of Ctrl-C-safe sections) and `pending` (a Ctrl-C held until it is back to
 * 0); the Python subclass has the methods. Lock: what threading.Lock() is to the
 * session (SafeLock.raw): acquire(blocking=True, timeout=-1), release(), locked(), a
 * context manager. As a builtin lock's acquire, a wait is interrupted by a signal,
 * whose handler runs (and may raise) before the wait goes on. Before these, taking
 * the lock and counting the section were two calls and four attribute lookups per
 * f.remote(). */
#include "lane.h"
#include <string.h>
#include <structmember.h>

/* ---------------------------------------------------------------- SectionsBase */

static PyMemberDef Sections_members[] = {
    {"depth", T_LONG, offsetof(SectionsObject, depth), 0, "the main thread's section depth"},
    {"pending", T_BOOL, offsetof(SectionsObject, pending), 0, "a Ctrl-C is held"},
    {NULL}
};

PyTypeObject SectionsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.SectionsBase",
    .tp_basicsize = sizeof(SectionsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The fields of interrupts.Sections (see csrc/section_lock.c).",
    .tp_new = PyType_GenericNew,
    .tp_members = Sections_members,
};

/* ------------------------------------------------------------------------ Lock */

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if ((args && PyTuple_GET_SIZE(args)) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "Lock() takes no arguments");
        return NULL;
    }
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self && !(self->lock = PyThread_allocate_lock())) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void Lock_dealloc(LockObject *self) {
    if (self->lock) {
        if (self->locked) PyThread_release_lock(self->lock);
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 1 taken, 0 not within timeout_us (-1: no limit), -1 a signal handler raised */
int lock_take(LockObject *self, PY_TIMEOUT_T timeout_us) {
    if (PyThread_acquire_lock_timed(self->lock, 0, 0) == PY_LOCK_ACQUIRED) {
        self->locked = 1;
        return 1;
    }
    if (timeout_us == 0) return 0;
    double deadline = timeout_us > 0 ? monotonic_seconds() + timeout_us * 1e-6 : 0.0;
    for (;;) {
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(self->lock, timeout_us, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_ACQUIRED) {
            self->locked = 1;
            return 1;
        }
        if (r == PY_LOCK_FAILURE) return 0;
        if (PyErr_CheckSignals() < 0) return -1;  /* PY_LOCK_INTR: its handler ran */
        if (timeout_us > 0) {
            timeout_us = (PY_TIMEOUT_T)((deadline - monotonic_seconds()) * 1e6);
            if (timeout_us <= 0) return 0;
        }
    }
}

/* 0, or -1 with a RuntimeError: it was not held */
int lock_give(LockObject *self) {
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    self->locked = 0;
    PyThread_release_lock(self->lock);
    return 0;
}

static PyObject *Lock_acquire(LockObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    static const char *const names[] = {"blocking", "timeout"};
    PyObject *arg[2] = {NULL, NULL};
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "acquire() takes at most 2 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) arg[i] = args[i];
    for (Py_ssize_t k = 0; kwnames && k < PyTuple_GET_SIZE(kwnames); k++) {
        const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        int i = key && !strcmp(key, names[0]) ? 0 : key && !strcmp(key, names[1]) ? 1 : -1;
        if (i < 0 || arg[i]) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "acquire() got an unexpected or repeated "
                             "keyword argument '%s'", key);
            return NULL;
        }
        arg[i] = args[nargs + k];
    }
    int blocking = arg[0] ? PyObject_IsTrue(arg[0]) : 1;
    double timeout = arg[1] ? PyFloat_AsDouble(arg[1]) : -1.0;
    if (blocking < 0 || (timeout == -1.0 && PyErr_Occurred())) return NULL;
    if (!blocking && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    PY_TIMEOUT_T us = !blocking ? 0 : timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
    if (timeout > 0 && timeout * 1e6 >= (double)PY_TIMEOUT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return NULL;
    }
    int r = lock_take(self, us);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *Lock_release(LockObject *self, PyObject *unused) {
    if (lock_give(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lock_exit(LockObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return Lock_release(self, NULL);
}

static PyObject *Lock_enter(LockObject *self, PyObject *unused) {
    int r = lock_take(self, -1);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *Lock_locked(LockObject *self, PyObject *unused) {
    return PyBool_FromLong(self->locked);
}

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Lock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool, as threading.Lock's"},
    {"release", (PyCFunction)Lock_release, METH_NOARGS, "release()"},
    {"locked", (PyCFunction)Lock_locked, METH_NOARGS, "locked() -> bool"},
    {"__enter__", (PyCFunction)Lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Lock_exit, METH_FASTCALL, NULL},
    {NULL}
};

PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The session's lock, as threading.Lock (see csrc/section_lock.c).",
    .tp_new = Lock_new,
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_methods = Lock_methods,
};
