/* lane_refs.c - ObjectStore.process_refs for the common case, in C (Lane.process_refs).
 *
 * Each ObjectRef the driver makes or drops is queued by its hook (the store's
 * created_queue, drop_queue) and counted here, in the store's own order (creations
 * first: each drop has its creation queued before it; drops up to a length read
 * first). A drop that lets go of a small inline value nothing else holds, nobody's
 * token, generator or GPU object, is the common case (a result fetched and dropped):
 * done here. Every other end is the store's Python (_free: a value with refs inside;
 * _release: a segment, a spilled file, a token, a generator, a GPU object;
 * _generator_unheld), called from here at the same point. */
#include "lane.h"

static PyObject *s_free, *s_release, *s_held, *s_generator_unheld;

int lane_refs_init_strings(void) {
    return (s_free = PyUnicode_InternFromString("_free")) &&
           (s_release = PyUnicode_InternFromString("_release")) &&
           (s_held = PyUnicode_InternFromString("_held")) &&
           (s_generator_unheld = PyUnicode_InternFromString("_generator_unheld")) ? 0 : -1;
}

static int call_store(LaneObject *self, PyObject *method, PyObject *oid, PyObject *stored) {
    PyObject *res = stored ? PyObject_CallMethodObjArgs(self->store, method, oid, stored, NULL)
                           : PyObject_CallMethodOneArg(self->store, method, oid);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

/* In none of these tables (0), in one (1), or -1 on an error. */
static int in_any(PyObject *oid, PyObject **tables, int n) {
    for (int i = 0; i < n; i++) {
        int r = PySequence_Contains(tables[i], oid);
        if (r) return r;
    }
    return 0;
}

/* One drop of the driver's ref to `oid`. */
static int drop(LaneObject *self, PyObject *local, PyObject *values, PyObject *oid) {
    PyObject *count = PyDict_GetItemWithError(local, oid);
    if (!count && PyErr_Occurred()) return -1;
    long left = (count ? PyLong_AsLong(count) : 0) - 1;
    if (left == -2 && PyErr_Occurred()) return -1;
    if (left > 0) {
        PyObject *v = PyLong_FromLong(left);
        int r = v ? PyDict_SetItem(local, oid, v) : -1;
        Py_XDECREF(v);
        return r;
    }
    if (count && PyDict_DelItem(local, oid) < 0) return -1;
    PyObject *holders[] = {self->needed, self->borrowed, self->contained, self->escaped};
    PyObject *stored = PyDict_GetItemWithError(values, oid);
    if (!stored && PyErr_Occurred()) return -1;
    int held = stored ? in_any(oid, holders, 4) : 1;
    if (held < 0) return -1;
    if (!held) {
        int inner = PyDict_Contains(self->inner, oid);
        if (inner) return inner < 0 ? -1 : call_store(self, s_free, oid, NULL);
        Py_INCREF(stored);
        PyObject *watched[] = {self->tokens, self->generators, self->gpu_producers};
        int r = PyDict_DelItem(values, oid) < 0 ? -1 : in_any(oid, watched, 3);
        int small = PyTuple_Check(stored) && PyTuple_GET_SIZE(stored) &&
                    PyLong_CheckExact(PyTuple_GET_ITEM(stored, 0)) &&
                    PyLong_AsLong(PyTuple_GET_ITEM(stored, 0)) == INLINE_KIND;
        if (r == 0 && !small) r = 1;
        if (r > 0) r = call_store(self, s_release, oid, stored);  /* (the store's own) */
        Py_DECREF(stored);
        return r;
    }
    int generator = PySet_Contains(self->generators, oid);
    if (generator <= 0) return generator;
    PyObject *res = PyObject_CallMethodOneArg(self->store, s_held, oid);
    if (!res) return -1;
    int still = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (still < 0) return -1;
    return still ? 0 : call_store(self, s_generator_unheld, oid, NULL);
}

/* Lane.process_refs() -> None */
PyObject *Lane_process_refs(LaneObject *self, PyObject *unused) {
    PyObject *local = PyObject_GetAttr(self->store, s_local);
    PyObject *values = local ? PyObject_GetAttr(self->store, s_values) : NULL;
    if (!values) { Py_XDECREF(local); return NULL; }
    Py_ssize_t n = PyObject_Size(self->drop_queue);
    int r = n < 0 ? -1 : 0;
    while (r == 0 && PyObject_Size(self->created_queue) > 0) {  /* ObjectStore.count_created */
        PyObject *oid = PyObject_Vectorcall(deque_popleft, &self->created_queue, 1, NULL);
        if (!oid) { r = -1; break; }
        PyObject *count = PyDict_GetItemWithError(local, oid);
        PyObject *v;
        if (count) {
            v = PyNumber_Add(count, one);
        } else if (PyErr_Occurred()) {
            v = NULL;
        } else {
            v = one;
            Py_INCREF(v);
        }
        r = v ? PyDict_SetItem(local, oid, v) : -1;
        Py_XDECREF(v);
        Py_DECREF(oid);
    }
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
        PyObject *oid = PyObject_Vectorcall(deque_popleft, &self->drop_queue, 1, NULL);
        if (!oid) { r = -1; break; }
        r = drop(self, local, values, oid);
        Py_DECREF(oid);
    }
    Py_DECREF(local);
    Py_DECREF(values);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}
