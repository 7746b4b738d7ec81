/* cringmodule.c - wraps ring.c as shmray._cring: Doorbell, Ring, the module (and
 * ring_any.c, its waits on many rings; cring.h, what the two share).
 *
 * Ring and Doorbell objects hold a Py_buffer on the memory Python gave them, so
 * the mapping cannot be closed while a ring object (or a wait on it in another
 * thread) still uses it. Every wait releases the GIL and sleeps in slices of at
 * most SLICE_NS so that Ctrl-C reaches Python's handlers promptly.
 */
#include "cring.h"

/* (see cring.h) */
int timeout_arg(PyObject *obj, int64_t *out) {
    if (obj == NULL || obj == Py_None) { *out = -1; return 0; }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds or None, not NaN");
        return -1;
    }
    if (t < 0) t = 0;
    *out = t >= 9e9 ? -1 : (int64_t)(t * 1e9); /* beyond ~285 years: forever (also inf) */
    return 0;
}

int wait_sliced(slice_fn fn, void *arg, int64_t timeout_ns, int64_t spin_ns) {
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : shmray_now_ns() + timeout_ns;
    for (;;) {
        int64_t now = shmray_now_ns();
        int64_t slice = deadline - now;
        if (slice < 0) slice = 0;
        if (slice > SLICE_NS) slice = SLICE_NS;
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = fn(arg, slice, spin_ns);
        Py_END_ALLOW_THREADS
        if (r == SHMRAY_READY) return r;
        if (PyErr_CheckSignals() < 0) return -2;
        if (shmray_now_ns() >= deadline) return SHMRAY_TIMEOUT;
        spin_ns = 0; /* spin only at the start */
    }
}

/* ---------------------------------------------------------------- Doorbell */

static int Doorbell_init(DoorbellObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buffer", "create", NULL};
    PyObject *buf;
    int create = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &buf, &create)) return -1;
    if (self->bell) { PyErr_SetString(PyExc_RuntimeError, "Doorbell already initialised"); return -1; }
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_WRITABLE) < 0) return -1;
    int r = create ? shmray_doorbell_format(self->view.buf, self->view.len)
                   : shmray_doorbell_check(self->view.buf, self->view.len);
    if (r != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "buffer does not hold a shmray doorbell of this version");
        return -1;
    }
    self->bell = (shmray_doorbell *)self->view.buf;
    return 0;
}

static void Doorbell_dealloc(DoorbellObject *self) {
    if (self->bell) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject DoorbellType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._cring.Doorbell",
    .tp_basicsize = sizeof(DoorbellObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Doorbell(buffer, create=False): one futex word that lets a consumer sleep on many rings.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Doorbell_init,
    .tp_dealloc = (destructor)Doorbell_dealloc,
};

/* -------------------------------------------------------------------- Ring */

static int Ring_init(RingObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buffer", "create", "doorbell", NULL};
    PyObject *buf, *bell = Py_None;
    int create = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pO", kwlist, &buf, &create, &bell)) return -1;
    if (self->ring.hdr) { PyErr_SetString(PyExc_RuntimeError, "Ring already initialised"); return -1; }
    if (bell != Py_None && !PyObject_TypeCheck(bell, &DoorbellType)) {
        PyErr_SetString(PyExc_TypeError, "doorbell must be a shmray._cring.Doorbell or None");
        return -1;
    }
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_WRITABLE) < 0) return -1;
    if (create && shmray_ring_format(self->view.buf, self->view.len) != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "buffer too small for a ring");
        return -1;
    }
    int r = shmray_ring_attach(&self->ring, self->view.buf, self->view.len);
    if (r != 0) {
        PyBuffer_Release(&self->view);
        self->ring.hdr = NULL;
        PyErr_SetString(PyExc_ValueError,
                        r == -1 ? "buffer does not hold a shmray ring (bad magic)"
                        : r == -2 ? "shmray ring version mismatch"
                                  : "shmray ring capacity does not match the buffer");
        return -1;
    }
    if (bell != Py_None) {
        Py_INCREF(bell);
        self->doorbell = bell;
        self->ring.doorbell = ((DoorbellObject *)bell)->bell;
    }
    return 0;
}

static void Ring_dealloc(RingObject *self) {
    if (self->ring.hdr) PyBuffer_Release(&self->view);
    Py_XDECREF(self->doorbell);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ring_ready(RingObject *self) {
    if (!self->ring.hdr) { PyErr_SetString(PyExc_ValueError, "ring is not initialised"); return 0; }
    return 1;
}

typedef struct { shmray_ring *ring; uint32_t len; } push_wait_arg;

static int push_wait_slice(void *arg, int64_t timeout_ns, int64_t spin_ns) {
    push_wait_arg *a = (push_wait_arg *)arg;
    return shmray_ring_wait_space(a->ring, a->len, timeout_ns, spin_ns);
}

static PyObject *Ring_push(RingObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"data", "timeout", "spin", "wake", NULL};
    Py_buffer data;
    PyObject *timeout_obj = NULL;
    double spin = 0.0;
    int wake = 1;
    if (!ring_ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|Odp", kwlist, &data, &timeout_obj, &spin, &wake))
        return NULL;
    int64_t timeout_ns = 0;
    if (timeout_obj && timeout_arg(timeout_obj, &timeout_ns) < 0) goto fail;
    if ((uint64_t)data.len > shmray_ring_max_payload(&self->ring)) {
        PyErr_Format(PyExc_ValueError, "message of %zd bytes exceeds the ring's limit of %u bytes",
                     data.len, shmray_ring_max_payload(&self->ring));
        goto fail;
    }
    for (;;) {
        if (shmray_ring_try_push(&self->ring, data.buf, (uint32_t)data.len, wake) == 0) {
            PyBuffer_Release(&data);
            Py_RETURN_TRUE;
        }
        if (timeout_ns == 0) break;
        push_wait_arg a = {&self->ring, (uint32_t)data.len};
        int r = wait_sliced(push_wait_slice, &a, timeout_ns, (int64_t)(spin * 1e9));
        if (r == -2) goto fail;
        if (r == SHMRAY_TIMEOUT) break;
    }
    PyBuffer_Release(&data);
    Py_RETURN_FALSE;
fail:
    PyBuffer_Release(&data);
    return NULL;
}

PyObject *pop_now(shmray_ring *ring) {
    const uint8_t *p;
    int64_t n = shmray_ring_peek(ring, &p);
    if (n == -2) {
        PyErr_SetString(PyExc_RuntimeError, "shmray ring corrupted: impossible record length");
        return NULL;
    }
    if (n < 0) Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize((const char *)p, n);
    if (out) shmray_ring_release(ring, (uint32_t)n);
    return out;
}

static int pop_wait_slice(void *arg, int64_t timeout_ns, int64_t spin_ns) {
    return shmray_ring_wait_data((shmray_ring *)arg, timeout_ns, spin_ns);
}

typedef struct { shmray_ring *ring; uint32_t since; } pop_since_arg;

static int pop_since_slice(void *arg, int64_t timeout_ns, int64_t spin_ns) {
    pop_since_arg *a = (pop_since_arg *)arg;
    return shmray_ring_wait_data_since(a->ring, a->since, timeout_ns, spin_ns);
}

static PyObject *Ring_pop(RingObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"timeout", "spin", "since", NULL};
    PyObject *timeout_obj = NULL, *since_obj = NULL;
    double spin = 0.0;
    if (!ring_ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OdO", kwlist, &timeout_obj, &spin, &since_obj))
        return NULL;
    int64_t timeout_ns = 0;
    if (timeout_obj && timeout_arg(timeout_obj, &timeout_ns) < 0) return NULL;
    pop_since_arg since = {&self->ring, 0};
    if (since_obj && since_obj != Py_None) {
        unsigned long v = PyLong_AsUnsignedLong(since_obj);
        if (v == (unsigned long)-1 && PyErr_Occurred()) return NULL;
        since.since = (uint32_t)v;
    }
    if (shmray_ring_nonempty(&self->ring) || timeout_ns == 0) return pop_now(&self->ring);
    int r = (since_obj && since_obj != Py_None)
        ? wait_sliced(pop_since_slice, &since, timeout_ns, (int64_t)(spin * 1e9))
        : wait_sliced(pop_wait_slice, &self->ring, timeout_ns, (int64_t)(spin * 1e9));
    if (r == -2) return NULL;
    if (r == SHMRAY_TIMEOUT) Py_RETURN_NONE;
    return pop_now(&self->ring);
}

static PyObject *Ring_wake(RingObject *self, PyObject *unused) {
    if (!ring_ready(self)) return NULL;
    return PyBool_FromLong(shmray_ring_wake(&self->ring));
}

static PyObject *Ring_interrupt(RingObject *self, PyObject *unused) {
    if (!ring_ready(self)) return NULL;
    shmray_ring_interrupt(&self->ring);
    Py_RETURN_NONE;
}

static PyObject *Ring_wake_count(RingObject *self, void *closure) {
    if (!ring_ready(self)) return NULL;
    return PyLong_FromUnsignedLong(shmray_ring_wake_count(&self->ring));
}

static PyObject *Ring_sleeping(RingObject *self, void *closure) {
    if (!ring_ready(self)) return NULL;
    return PyBool_FromLong(__atomic_load_n(&self->ring.hdr->consumer_waiting, __ATOMIC_ACQUIRE));
}

static PyObject *Ring_used(RingObject *self, void *closure) {
    if (!ring_ready(self)) return NULL;
    return PyLong_FromUnsignedLongLong(shmray_ring_used(&self->ring));
}

static PyObject *Ring_capacity(RingObject *self, void *closure) {
    if (!ring_ready(self)) return NULL;
    return PyLong_FromUnsignedLongLong(self->ring.mask + 1);
}

static PyObject *Ring_max_message(RingObject *self, void *closure) {
    if (!ring_ready(self)) return NULL;
    return PyLong_FromUnsignedLong(shmray_ring_max_payload(&self->ring));
}

static PyMethodDef Ring_methods[] = {
    {"push", (PyCFunction)(void (*)(void))Ring_push, METH_VARARGS | METH_KEYWORDS,
     "push(data, timeout=0.0, spin=0.0, wake=True) -> bool: append one message; wait up to "
     "timeout seconds (None: forever) for space. False if there was no room in time. "
     "wake=False leaves a sleeping consumer asleep (call wake() after a batch)."},
    {"wake", (PyCFunction)Ring_wake, METH_NOARGS,
     "wake() -> bool: wake the consumer if it sleeps (True if it did)."},
    {"pop", (PyCFunction)(void (*)(void))Ring_pop, METH_VARARGS | METH_KEYWORDS,
     "pop(timeout=0.0, spin=0.0, since=None) -> bytes | None: take the next message, spinning "
     "for spin seconds and then sleeping up to timeout seconds (None: forever). With since "
     "(a wake_count read earlier), also None as soon as the wake count moves from it "
     "(interrupt() from another thread) with the ring still empty."},
    {"interrupt", (PyCFunction)Ring_interrupt, METH_NOARGS,
     "interrupt(): end the consumer's pop(since=...) (from another thread of its process); "
     "one coming before that pop sleeps ends it too."},
    {NULL}};

static PyGetSetDef Ring_getset[] = {
    {"used", (getter)Ring_used, NULL, "bytes currently queued", NULL},
    {"sleeping", (getter)Ring_sleeping, NULL, "the consumer sleeps on the futex", NULL},
    {"wake_count", (getter)Ring_wake_count, NULL,
     "the consumer's wake counter (see pop's since)", NULL},
    {"capacity", (getter)Ring_capacity, NULL, "bytes of record space", NULL},
    {"max_message", (getter)Ring_max_message, NULL, "largest message accepted", NULL},
    {NULL}};

PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._cring.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ring(buffer, create=False, doorbell=None): an SPSC message ring in a shared buffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
};

static struct PyModuleDef cring_module = {
    PyModuleDef_HEAD_INIT, "shmray._cring",
    "Lock-free shared-memory message rings with futex sleep/wake (see csrc/ring.h).", -1,
    ring_any_methods};

PyMODINIT_FUNC PyInit__cring(void) {
    if (PyType_Ready(&RingType) < 0 || PyType_Ready(&DoorbellType) < 0) return NULL;
    PyObject *m = PyModule_Create(&cring_module);
    if (!m) return NULL;
    Py_INCREF(&RingType);
    Py_INCREF(&DoorbellType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObject(m, "Doorbell", (PyObject *)&DoorbellType) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_SIZE", SHMRAY_RING_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "DOORBELL_SIZE", SHMRAY_DOORBELL_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "VERSION", SHMRAY_RING_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
