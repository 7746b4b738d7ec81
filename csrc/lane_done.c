/* lane_done.c - a simple task's Done: its compact form on the wire, and its handling
 * in the driver the short way (Lane.done).
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
#include <time.h>

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

/* The fields of a compact Done; 0 if `data` is not one. */
typedef struct {
    const unsigned char *pickle;
    Py_ssize_t pickle_size;
    long long start, end;
} DoneForm;

static int read_done(PyObject *data, DoneForm *form) {
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < HEAD) return 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (p[0] != DONE_MARK) return 0;
    form->start = (long long)get_le(p + 17);
    form->end = (long long)get_le(p + 25);
    form->pickle = p + HEAD;
    form->pickle_size = PyBytes_GET_SIZE(data) - HEAD;
    return 1;
}

static PyObject *task_id_of(PyObject *data) {
    return _PyLong_FromByteArray((const unsigned char *)PyBytes_AS_STRING(data) + 1, 16, 1, 0);
}

/* The result's INLINE stored form: `none_stored` itself when it is None's. */
static PyObject *stored_form(const DoneForm *form, PyObject *none_stored) {
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

static int add_to_int_attr(PyObject *obj, PyObject *name) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v) return -1;
    PyObject *sum = PyNumber_Add(v, one);
    Py_DECREF(v);
    if (!sum) return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Scheduler.record_duration */
static int record_duration(LaneObject *self, PyObject *fn_id, double seconds) {
    double a = self->smoothing;
    PyObject *m = PyDict_GetItemWithError(self->fn_mean, fn_id);
    if (!m && PyErr_Occurred()) return -1;
    double mean = m ? (1 - a) * PyFloat_AsDouble(m) + a * seconds : seconds;
    PyObject *v = PyFloat_FromDouble(mean);
    if (!v || PyDict_SetItem(self->fn_mean, fn_id, v) < 0) { Py_XDECREF(v); return -1; }
    Py_DECREF(v);
    PyObject *recent = PyObject_GetAttr(self->scheduler, s_recent_mean);
    if (!recent) return -1;
    double r = (1 - a) * PyFloat_AsDouble(recent) + a * seconds;
    Py_DECREF(recent);
    if (!(v = PyFloat_FromDouble(r))) return -1;
    int e = PyObject_SetAttr(self->scheduler, s_recent_mean, v);
    Py_DECREF(v);
    return e;
}

/* A message popped from w's result ring: 1 if it was a compact Done that
 * MessageLoop.on_done would take the short way, handled here; 0 if not (nothing was
 * done: decode it and handle it in Python); -1 on an error. */
static int done_here(LaneObject *self, PyObject *w, PyObject *data) {
    DoneForm form;
    if (!read_done(data, &form)) return 0;
    /* the worker: in the pool, waiting for nothing, a task worker, not retiring */
    if (!PyObject_TypeCheck(w, &WorkerType)) return 0;
    WorkerObject *x = (WorkerObject *)w;
    int gone = PyObject_IsTrue(x->gone), blocked = PyObject_IsTrue(x->rpcs);
    int retiring = PyObject_IsTrue(x->retiring);
    if (gone < 0 || blocked < 0 || retiring < 0) return -1;
    if (gone || blocked || retiring || x->actor != Py_None) return 0;
    /* the task: first in line, simple, not cancelled, its ref still there */
    PyObject *inflight = x->inflight;
    Py_INCREF(inflight);
    PyObject *first = PyObject_Size(inflight) > 0 ? PySequence_GetItem(inflight, 0) : NULL;
    PyObject *local = NULL, *values = NULL, *pending = NULL, *res = NULL, *stored = NULL;
    PyObject *task_id = task_id_of(data);
    if (!task_id) { Py_XDECREF(first); Py_DECREF(inflight); return -1; }
    SpecObject *spec = (SpecObject *)first;
    int ours = spec && PyObject_TypeCheck(first, &SpecType) && spec->simple == Py_True
               && spec->cancelled == Py_False;
    if (ours && (ours = PyObject_RichCompareBool(spec->task_id, task_id, Py_EQ)) > 0) {
        if (!(local = PyObject_GetAttr(self->store, s_local))) goto fail;
        ours = PyDict_Contains(local, task_id);
    }
    if (ours <= 0) {
        Py_XDECREF(first); Py_XDECREF(local); Py_DECREF(inflight); Py_DECREF(task_id);
        return ours < 0 || PyErr_Occurred() ? -1 : 0;
    }
    /* MessageLoop.on_done's short way, in its order */
    if (!(res = PyObject_Vectorcall(deque_popleft, &inflight, 1, NULL))) goto fail;
    Py_DECREF(res);
    if (!(res = PyNumber_Add(x->tasks_done, one))) goto fail;
    Py_SETREF(x->tasks_done, res);
    if (PyObject_Size(inflight) == 0) {  /* (rpcs.resume) */
        if (!(res = PyObject_CallMethodOneArg(self->ledger, s_uncharge, w))) goto fail;
        Py_DECREF(res);
        x->idle_since = monotonic_seconds();
    }
    if (record_duration(self, spec->fn_id, (form.end - form.start) * 1e-9) < 0) goto fail;
    if (PyDict_DelItem(self->tasks, task_id) < 0) goto fail;
    Py_INCREF(Py_None);
    Py_SETREF(spec->worker, Py_None);
    if (add_to_int_attr(self->task_table, s_finished) < 0) goto fail;
    if (!(stored = stored_form(&form, self->none_stored))) goto fail;  /* (None's: shared) */
    /* the value first, then out of pending (get reads them without the lock) */
    if (!(values = PyObject_GetAttr(self->store, s_values)) ||
        PyDict_SetItem(values, task_id, stored) < 0 ||
        !(pending = PyObject_GetAttr(self->store, s_pending)) ||
        PySet_Discard(pending, task_id) < 0)
        goto fail;
    if (PyDict_GET_SIZE(self->callbacks)) {
        PyObject *cbs = PyDict_GetItemWithError(self->callbacks, task_id);
        if (cbs) {
            Py_INCREF(cbs);
            if (PyDict_DelItem(self->callbacks, task_id) < 0) { Py_DECREF(cbs); goto fail; }
            PyObject *it = PyObject_GetIter(cbs);
            Py_DECREF(cbs);
            if (!it) goto fail;
            PyObject *cb;
            while ((cb = PyIter_Next(it))) {
                res = PyObject_CallOneArg(cb, task_id);
                Py_DECREF(cb);
                if (!res) { Py_DECREF(it); goto fail; }
                Py_DECREF(res);
            }
            Py_DECREF(it);
        }
        if (PyErr_Occurred()) goto fail;
    }
    Py_DECREF(first); Py_DECREF(local); Py_DECREF(values); Py_DECREF(pending);
    Py_DECREF(inflight); Py_DECREF(task_id); Py_DECREF(stored);
    return 1;
fail:
    Py_XDECREF(first); Py_XDECREF(local); Py_XDECREF(values); Py_XDECREF(pending);
    Py_DECREF(inflight); Py_DECREF(task_id); Py_XDECREF(stored);
    return -1;
}

/* Lane.done(w, data) -> bool: done_here's 1 or 0 */
PyObject *Lane_done(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "done(w, data)");
        return NULL;
    }
    int r = done_here(self, args[0], args[1]);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* Lane.drain(rings, doorbell, workers, limit) -> int, or (handled, i, data)
 * MessageLoop.drain's loop: messages already waiting, popped round robin from `rings`
 * (pop_any, from lane.rr on) while compact Dones handled here, up to `limit`. Returns
 * how many it handled; or, at the first other message, that count with the message's
 * ring index and bytes (popped: the caller handles it, then calls again). */
PyObject *Lane_drain(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "drain(rings: tuple, doorbell, workers: tuple, limit)");
        return NULL;
    }
    PyObject *rings = args[0], *workers = args[2];
    long limit = PyLong_AsLong(args[3]), handled = 0;
    if (limit == -1 && PyErr_Occurred()) return NULL;
    while (handled < limit && PyTuple_GET_SIZE(rings)) {
        PyObject *rr = PyLong_FromLong(self->rr);
        if (!rr) return NULL;
        PyObject *call[5] = {rings, args[1], zero_seconds, zero_seconds, rr};
        PyObject *got = PyObject_Vectorcall(self->pop_any, call, 5, NULL);
        Py_DECREF(rr);
        if (!got) return NULL;
        if (got == Py_None) { Py_DECREF(got); break; }
        Py_ssize_t i = PyTuple_Check(got) && PyTuple_GET_SIZE(got) == 2
                       ? PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0)) : -1;
        if (i < 0 || i >= PyTuple_GET_SIZE(workers)) {
            Py_DECREF(got);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "pop_any: a bad ring index");
            return NULL;
        }
        self->rr = (long)i + 1;
        PyObject *data = PyTuple_GET_ITEM(got, 1);
        int r = done_here(self, PyTuple_GET_ITEM(workers, i), data);
        if (r <= 0) {
            PyObject *out = r < 0 ? NULL : Py_BuildValue("(lnO)", handled, i, data);
            Py_DECREF(got);
            return out;
        }
        Py_DECREF(got);
        handled++;
    }
    return PyLong_FromLong(handled);
}

