/* done_form.c - a simple task's Done in its compact form on the wire (its handling in
 * the driver, the short way, is lane_done.c's).
 *
 * A worker sends most Dones as a pickled Done record. One of a task whose single
 * result is a small inline value (no out-of-band buffers, no refs inside, no GPU
 * arrays, not a retryable error) travels in this form instead, which neither side
 * pickles:
 *
 *     byte 0       DONE_MARK (a pickle begins with 0x80, never this)
 *     bytes 1-16   the task id, unsigned, little-endian
 *     bytes 17-32  start and end (CLOCK_MONOTONIC ns), signed 64-bit, little-endian
 *     bytes 33-    the result's pickle (its INLINE stored form's bytes)
 *
 * _ring.decode turns it back into the Done record's tuple (unpack_done), so every
 * reader that is not the lane sees the record as before. */
#include "lane.h"
#include <string.h>

#define DONE_MARK 0x01
#define HEAD 33

static void put_le(unsigned char *p, unsigned long long v) {
    for (int i = 0; i < 8; i++, v >>= 8) p[i] = (unsigned char)v;
}

static unsigned long long get_le(const unsigned char *p) {
    unsigned long long v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int is_kind(PyObject *obj, long kind) {
    return PyLong_CheckExact(obj) && PyLong_AsLong(obj) == kind;
}

/* pack_done(task_id, outcome, start, end, inner, gpu, retryable, limit) -> bytes, or
 * None when the Done does not have the compact form (or it would exceed `limit`). */
PyObject *pack_done(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "pack_done(task_id, outcome, start, end, inner, gpu, retryable, limit)");
        return NULL;
    }
    PyObject *task_id = args[0], *outcome = args[1];
    if (args[4] != Py_None || args[5] != Py_None || PyObject_IsTrue(args[6]) != 0 ||
        !PyLong_CheckExact(task_id) || !PyTuple_CheckExact(outcome) ||
        PyTuple_GET_SIZE(outcome) != 1)
        goto no;
    PyObject *stored = PyTuple_GET_ITEM(outcome, 0);
    if (!PyTuple_CheckExact(stored) || PyTuple_GET_SIZE(stored) != 3 ||
        !is_kind(PyTuple_GET_ITEM(stored, 0), INLINE_KIND) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(stored, 1)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(stored, 2)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(stored, 2)) != 0)
        goto no;
    PyObject *pickle = PyTuple_GET_ITEM(stored, 1);
    Py_ssize_t size = HEAD + PyBytes_GET_SIZE(pickle);
    Py_ssize_t limit = PyLong_AsSsize_t(args[7]);
    long long start = PyLong_AsLongLong(args[2]), end = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (size > limit) goto no;
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (!data) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(data);
    p[0] = DONE_MARK;
    if (_PyLong_AsByteArray((PyLongObject *)task_id, p + 1, 16, 1, 0) < 0) {
        Py_DECREF(data);  /* negative, or beyond 128 bits: not an id of ours */
        PyErr_Clear();
        goto no;
    }
    put_le(p + 17, (unsigned long long)start);
    put_le(p + 25, (unsigned long long)end);
    memcpy(p + HEAD, PyBytes_AS_STRING(pickle), PyBytes_GET_SIZE(pickle));
    return data;
no:
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* (see lane.h) */
int read_done(PyObject *data, DoneForm *form) {
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < HEAD) return 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (p[0] != DONE_MARK) return 0;
    form->start = (long long)get_le(p + 17);
    form->end = (long long)get_le(p + 25);
    form->pickle = p + HEAD;
    form->pickle_size = PyBytes_GET_SIZE(data) - HEAD;
    return 1;
}

PyObject *task_id_of(PyObject *data) {
    return _PyLong_FromByteArray((const unsigned char *)PyBytes_AS_STRING(data) + 1, 16, 1, 0);
}

/* The result's INLINE stored form: `none_stored` itself when it is None's. */
PyObject *stored_form(const DoneForm *form, PyObject *none_stored) {
    PyObject *none_pickle = PyTuple_GET_ITEM(none_stored, 1);
    if (PyBytes_GET_SIZE(none_pickle) == form->pickle_size &&
        !memcmp(PyBytes_AS_STRING(none_pickle), form->pickle, form->pickle_size)) {
        Py_INCREF(none_stored);
        return none_stored;
    }
    PyObject *pickle = PyBytes_FromStringAndSize((const char *)form->pickle, form->pickle_size);
    if (!pickle) return NULL;
    PyObject *stored = PyTuple_Pack(3, PyTuple_GET_ITEM(none_stored, 0), pickle,
                                    PyTuple_GET_ITEM(none_stored, 2));
    Py_DECREF(pickle);
    return stored;
}

PyObject *none_stored_form;  /* unpack_done's and inline_values': set_none_stored */

/* unpack_done(data) -> the Done record's tuple, or None when `data` is not one */
PyObject *unpack_done(PyObject *mod, PyObject *data) {
    DoneForm form;
    if (!read_done(data, &form) || !none_stored_form) Py_RETURN_NONE;
    PyObject *task_id = task_id_of(data);
    PyObject *stored = task_id ? stored_form(&form, none_stored_form) : NULL;
    PyObject *outcome = stored ? PyTuple_Pack(1, stored) : NULL;
    PyObject *kind = PyLong_FromLong(DONE_KIND), *start = PyLong_FromLongLong(form.start),
             *end = PyLong_FromLongLong(form.end);
    PyObject *msg = NULL;
    if (outcome && kind && start && end)
        msg = PyTuple_Pack(8, kind, task_id, outcome, start, end, Py_None, Py_None, Py_False);
    Py_XDECREF(task_id); Py_XDECREF(stored); Py_XDECREF(outcome);
    Py_XDECREF(kind); Py_XDECREF(start); Py_XDECREF(end);
    return msg;
}

PyObject *set_none_stored(PyObject *mod, PyObject *stored) {
    if (!PyTuple_CheckExact(stored) || PyTuple_GET_SIZE(stored) != 3 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(stored, 1))) {
        PyErr_SetString(PyExc_TypeError, "the stored form of None: (INLINE, pickle, ())");
        return NULL;
    }
    Py_INCREF(stored);
    Py_XSETREF(none_stored_form, stored);
    Py_RETURN_NONE;
}

