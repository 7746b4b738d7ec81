/* ring_any.c - the waits on many rings of shmray._cring: pop_any and wait_stalled.
 *
 * pop_any is the driver's per-message call (its pump, and the lane's drain once per
 * Done), so its arguments are taken as a vector (METH_FASTCALL), without the
 * argument parser's format strings, and up to STACK_RINGS rings need no allocation. */
#include "cring.h"

#define STACK_RINGS 64

/* Borrow the C rings of a tuple of Ring objects (the tuple keeps them alive) into
 * `stack`, or for more than STACK_RINGS into an array the caller frees with PyMem_Free
 * (a session may run more than 256 workers). Returns the count, or -1 with an
 * exception set. */
static int collect_rings(PyObject *tuple, shmray_ring **stack, shmray_ring ***out) {
    *out = stack;
    if (!PyTuple_Check(tuple)) { PyErr_SetString(PyExc_TypeError, "rings must be a tuple"); return -1; }
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (n > INT_MAX) { PyErr_SetString(PyExc_ValueError, "too many rings"); return -1; }
    shmray_ring **rings = stack;
    if (n > STACK_RINGS && !(rings = PyMem_Malloc(n * sizeof *rings))) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyTuple_GET_ITEM(tuple, i);
        if (!PyObject_TypeCheck(o, &RingType) || !((RingObject *)o)->ring.hdr) {
            PyErr_SetString(PyExc_TypeError, "rings must hold initialised Ring objects");
            if (rings != stack) PyMem_Free(rings);
            return -1;
        }
        rings[i] = &((RingObject *)o)->ring;
    }
    *out = rings;
    return (int)n;
}

/* Match a call's arguments to `names` (positional first, then keywords) into `out`
 * (NULL where not given); `required` of them must be. 0, or -1 with a TypeError. */
static int take_args(const char *fn, const char *const *names, int count, int required,
                     PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out) {
    if (nargs > count) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, count, nargs);
        return -1;
    }
    for (int i = 0; i < count; i++) out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        if (!key) return -1;
        int i = 0;
        while (i < count && strcmp(key, names[i]) != 0) i++;
        if (i == count) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'", fn, key);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn, key);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < required; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return -1;
        }
    return 0;
}

typedef struct { shmray_ring **rings; int n; int start; shmray_doorbell *bell; int index; } any_wait_arg;

static int any_wait_slice(void *arg, int64_t timeout_ns, int64_t spin_ns) {
    any_wait_arg *a = (any_wait_arg *)arg;
    return shmray_wait_any(a->rings, a->n, a->start, a->bell, timeout_ns, spin_ns, &a->index);
}

/* pop_any(rings, doorbell, timeout=0.0, spin=0.0, start=0) */
static PyObject *pop_any(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    static const char *const names[] = {"rings", "doorbell", "timeout", "spin", "start"};
    PyObject *arg[5];
    if (take_args("pop_any", names, 5, 2, args, nargs, kwnames, arg) < 0) return NULL;
    if (!PyObject_TypeCheck(arg[1], &DoorbellType)) {
        PyErr_SetString(PyExc_TypeError, "doorbell must be a shmray._cring.Doorbell");
        return NULL;
    }
    int64_t timeout_ns = 0;
    if (arg[2] && timeout_arg(arg[2], &timeout_ns) < 0) return NULL;
    double spin = arg[3] ? PyFloat_AsDouble(arg[3]) : 0.0;
    if (spin == -1.0 && PyErr_Occurred()) return NULL;
    long start = arg[4] ? PyLong_AsLong(arg[4]) : 0;
    if (start == -1 && PyErr_Occurred()) return NULL;
    shmray_ring *stack[STACK_RINGS], **rings;
    int n = collect_rings(arg[0], stack, &rings);
    if (n < 0) return NULL;
    any_wait_arg a = {rings, n, start < 0 || start > INT_MAX ? 0 : (int)start,
                      ((DoorbellObject *)arg[1])->bell, -1};
    int r = timeout_ns == 0 ? any_wait_slice(&a, 0, 0)
                            : wait_sliced(any_wait_slice, &a, timeout_ns, (int64_t)(spin * 1e9));
    PyObject *msg = (r == SHMRAY_READY && a.index >= 0) ? pop_now(rings[a.index]) : NULL;
    if (rings != stack) PyMem_Free(rings);
    if (r == -2) return NULL;
    if (r != SHMRAY_READY || a.index < 0) Py_RETURN_NONE;
    if (!msg || msg == Py_None) return msg;
    PyObject *index = PyLong_FromLong(a.index);
    PyObject *res = index ? PyTuple_New(2) : NULL;
    if (!res) { Py_XDECREF(index); Py_DECREF(msg); return NULL; }
    PyTuple_SET_ITEM(res, 0, index);
    PyTuple_SET_ITEM(res, 1, msg);
    return res;
}

typedef struct { shmray_ring **rings; int n; shmray_ring **nudge; int m; int64_t poll_ns; } stalled_arg;

static int stalled_slice(void *arg, int64_t timeout_ns, int64_t spin_ns) {
    stalled_arg *a = (stalled_arg *)arg;
    (void)spin_ns;
    return shmray_wait_stalled(a->rings, a->n, a->nudge, a->m, a->poll_ns, timeout_ns);
}

/* wait_stalled(rings, poll, timeout=None, nudge=()) */
static PyObject *wait_stalled(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    static const char *const names[] = {"rings", "poll", "timeout", "nudge"};
    PyObject *arg[4];
    if (take_args("wait_stalled", names, 4, 2, args, nargs, kwnames, arg) < 0) return NULL;
    double poll = PyFloat_AsDouble(arg[1]);
    if (poll == -1.0 && PyErr_Occurred()) return NULL;
    int64_t timeout_ns = -1;
    if (timeout_arg(arg[2], &timeout_ns) < 0) return NULL;
    if (poll != poll || poll <= 0) {
        PyErr_SetString(PyExc_ValueError, "poll must be a positive number of seconds");
        return NULL;
    }
    shmray_ring *stack[STACK_RINGS], *nudge_stack[STACK_RINGS], **rings, **nudge = nudge_stack;
    int n = collect_rings(arg[0], stack, &rings);
    if (n < 0) return NULL;
    int m = 0;
    if (arg[3] && (m = collect_rings(arg[3], nudge_stack, &nudge)) < 0) {
        if (rings != stack) PyMem_Free(rings);
        return NULL;
    }
    stalled_arg a = {rings, n, nudge, m, (int64_t)(poll * 1e9)};
    if (a.poll_ns < 1000) a.poll_ns = 1000;
    int r = wait_sliced(stalled_slice, &a, timeout_ns, 0);
    if (rings != stack) PyMem_Free(rings);
    if (nudge != nudge_stack) PyMem_Free(nudge);
    if (r == -2) return NULL;
    return PyBool_FromLong(r == SHMRAY_READY);
}

PyMethodDef ring_any_methods[] = {
    {"pop_any", (PyCFunction)(void (*)(void))pop_any, METH_FASTCALL | METH_KEYWORDS,
     "pop_any(rings, doorbell, timeout=0.0, spin=0.0, start=0) -> (index, bytes) | None: "
     "take one message from the first nonempty ring, scanning from start; sleep on the "
     "doorbell the rings ring when all are empty."},
    {"wait_stalled", (PyCFunction)(void (*)(void))wait_stalled, METH_FASTCALL | METH_KEYWORDS,
     "wait_stalled(rings, poll, timeout=None, nudge=()) -> bool: poll every poll seconds until "
     "some ring holds data nobody popped for a whole interval. Costs producers nothing. Each "
     "poll also wakes the sleeping consumer of any nudge ring that holds data."},
    {NULL}};
