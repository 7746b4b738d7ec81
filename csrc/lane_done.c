/* lane_done.c - a simple task's Done handled in the driver the short way, in C
 * (Lane.done, Lane.drain): what MessageLoop.on_done's short way did, in its order.
 * (The compact form it reads is done_form.c's.)
 *
 * Within one call, what the Python reads only between calls is kept here and written
 * back at its end (Stats): the count of finished tasks, the scheduler's running means
 * of task durations. So is which of the store's tables each Done writes (Tables):
 * ObjectStore.compact may replace them, between calls. Both are written back, and the
 * tables read again, around the one thing here that runs Python: a store callback. */
#include "lane.h"
#include <time.h>

double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* What one call of Lane.done or Lane.drain keeps, and writes back (flush) at its end
 * or before a store callback. (ledger.uncharge, the driver's own Python it calls too,
 * reads none of it.) */
typedef struct {
    long finished;                /* tasks finished, not yet in TaskTable.finished */
    int have_recent;              /* Scheduler.recent_mean read into `recent` */
    double recent;
    PyObject *fn;                 /* Scheduler.fn_mean[fn] is `fn_mean` (fn_known: */
    double fn_mean;               /* there was one), not written yet */
    int fn_known;
    PyObject *local, *values, *pending;  /* the store's tables, read at first need */
} Batch;

static int write_fn_mean(LaneObject *self, Batch *b) {
    if (!b->fn) return 0;
    PyObject *v = PyFloat_FromDouble(b->fn_mean);
    int r = v ? PyDict_SetItem(self->fn_mean, b->fn, v) : -1;
    Py_XDECREF(v);
    Py_CLEAR(b->fn);
    return r;
}

/* Everything kept written back, the tables let go; with an error in flight too (what
 * was handled was handled). 0, or -1 with an error set. */
static int flush(LaneObject *self, Batch *b) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int r = write_fn_mean(self, b);
    if (b->have_recent) {
        PyObject *v = PyFloat_FromDouble(b->recent);
        if (!v || PyObject_SetAttr(self->scheduler, s_recent_mean, v) < 0) r = -1;
        Py_XDECREF(v);
        b->have_recent = 0;
    }
    if (b->finished) {
        PyObject *was = PyObject_GetAttr(self->task_table, s_finished);
        PyObject *n = was ? PyLong_FromLong(b->finished) : NULL;
        PyObject *sum = n ? PyNumber_Add(was, n) : NULL;
        if (!sum || PyObject_SetAttr(self->task_table, s_finished, sum) < 0) r = -1;
        Py_XDECREF(was); Py_XDECREF(n); Py_XDECREF(sum);
        b->finished = 0;
    }
    Py_CLEAR(b->local); Py_CLEAR(b->values); Py_CLEAR(b->pending);
    if (type) {
        PyErr_Clear();  /* (the first error is the one that tells) */
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return r;
}

static int read_tables(LaneObject *self, Batch *b) {
    if (b->local) return 0;
    b->local = PyObject_GetAttr(self->store, s_local);
    b->values = b->local ? PyObject_GetAttr(self->store, s_values) : NULL;
    b->pending = b->values ? PyObject_GetAttr(self->store, s_pending) : NULL;
    if (b->pending) return 0;
    Py_CLEAR(b->local); Py_CLEAR(b->values);
    return -1;
}

/* Scheduler.record_duration */
static int record_duration(LaneObject *self, Batch *b, PyObject *fn_id, double seconds) {
    double a = self->smoothing;
    if (b->fn != fn_id) {  /* (the lane's specs share their function's id object) */
        if (write_fn_mean(self, b) < 0) return -1;
        PyObject *m = PyDict_GetItemWithError(self->fn_mean, fn_id);
        if (!m && PyErr_Occurred()) return -1;
        b->fn_known = m != NULL;
        b->fn_mean = m ? PyFloat_AsDouble(m) : 0.0;
        if (m && b->fn_mean == -1.0 && PyErr_Occurred()) return -1;
        b->fn = Py_NewRef(fn_id);
    }
    b->fn_mean = b->fn_known ? (1 - a) * b->fn_mean + a * seconds : seconds;
    b->fn_known = 1;
    if (!b->have_recent) {
        PyObject *recent = PyObject_GetAttr(self->scheduler, s_recent_mean);
        b->recent = recent ? PyFloat_AsDouble(recent) : -1.0;
        Py_XDECREF(recent);
        if (b->recent == -1.0 && PyErr_Occurred()) return -1;
        b->have_recent = 1;
    }
    b->recent = (1 - a) * b->recent + a * seconds;
    return 0;
}

/* ObjectStore.put's end for `oid`, stored: its callbacks (the driver's own), if any,
 * popped and called, what they may read written back first. 1 if some ran, 0 if none,
 * -1 on an error. */
static int run_callbacks(LaneObject *self, Batch *b, PyObject *oid) {
    if (!PyDict_GET_SIZE(self->callbacks)) return 0;
    PyObject *cbs = PyDict_GetItemWithError(self->callbacks, oid);
    if (!cbs) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(cbs);
    if (PyDict_DelItem(self->callbacks, oid) < 0 || flush(self, b) < 0) {
        Py_DECREF(cbs);  /* (Python runs next: what it may read, written back) */
        return -1;
    }
    PyObject *it = PyObject_GetIter(cbs);
    Py_DECREF(cbs);
    if (!it) return -1;
    PyObject *cb;
    while ((cb = PyIter_Next(it))) {
        PyObject *res = PyObject_CallOneArg(cb, oid);
        Py_DECREF(cb);
        if (!res) { Py_DECREF(it); return -1; }
        Py_DECREF(res);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 1;
}

/* A generator's compact item, handled by lane_item (item_form.c), then its callbacks */
static int item_here(LaneObject *self, Batch *b, PyObject *w, PyObject *data) {
    PyObject *oid = NULL;
    if (read_tables(self, b) < 0) return -1;
    int r = lane_item(self, w, data, b->values, b->pending, &oid);
    if (r > 0) {
        r = run_callbacks(self, b, oid) < 0 ? -1 : 1;
        Py_DECREF(oid);
    }
    return r;
}

/* RpcTable.resume's other way: `w` still has tasks and holds nothing, so it holds the
 * next one's request (an actor's call's is empty: nothing taken, as ledger.charge) */
static int charge_next(LaneObject *self, WorkerObject *w) {
    PyObject *next = PySequence_GetItem(w->inflight, 0);
    PyObject *request = next ? PyObject_GetAttr(next, s_request) : NULL;
    Py_XDECREF(next);
    if (!request) return -1;
    int r = 0;
    if (PyTuple_CheckExact(request) && !PyTuple_GET_SIZE(request)) {
        Py_SETREF(w->charge, request);
        return 0;
    }
    PyObject *res = PyObject_CallMethodObjArgs(self->ledger, s_charge, (PyObject *)w, request,
                                               NULL);
    r = res ? 0 : -1;
    Py_XDECREF(res);
    Py_DECREF(request);
    return r;
}

/* A message popped from w's result ring: 1 if it was a compact Done that
 * MessageLoop.on_done would take the short way, handled here; 0 if not (nothing was
 * done: decode it and handle it in Python); -1 on an error. */
static int done_here(LaneObject *self, Batch *b, PyObject *w, PyObject *data) {
    DoneForm form;
    if (!read_done(data, &form)) return 0;
    /* the worker: in the pool, waiting for nothing, a task worker, not retiring */
    if (!PyObject_TypeCheck(w, &WorkerType)) return 0;
    WorkerObject *x = (WorkerObject *)w;
    int gone = PyObject_IsTrue(x->gone), blocked = PyObject_IsTrue(x->rpcs);
    int retiring = PyObject_IsTrue(x->retiring);
    if (gone < 0 || blocked < 0 || retiring < 0) return -1;
    if (gone || blocked || retiring) return 0;
    int actor = x->actor != Py_None;  /* an actor's worker: the actor ALIVE, a handle left */
    if (actor && (actor = actor_done_ok(self, x->actor)) <= 0) return actor;
    /* the task: first in line, simple (or an actor's common call), not cancelled, its
     * ref still there */
    PyObject *inflight = x->inflight;
    Py_INCREF(inflight);
    PyObject *first = PyObject_Size(inflight) > 0 ? PySequence_GetItem(inflight, 0) : NULL;
    PyObject *res = NULL, *stored = NULL;
    PyObject *task_id = task_id_of(data);
    if (!task_id) { Py_XDECREF(first); Py_DECREF(inflight); return -1; }
    SpecObject *spec = (SpecObject *)first;
    int ours = !spec ? 0 : actor ? call_done_ok(self, spec)
               : PyObject_TypeCheck(first, &SpecType) && spec->simple == Py_True
                 && spec->cancelled == Py_False;
    if (ours > 0 && (ours = PyObject_RichCompareBool(spec->task_id, task_id, Py_EQ)) > 0) {
        if (read_tables(self, b) < 0) goto fail;
        ours = PyDict_Contains(b->local, task_id);
    }
    if (ours <= 0) {
        Py_XDECREF(first); Py_DECREF(inflight); Py_DECREF(task_id);
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
    } else if (x->charge == Py_None && charge_next(self, x) < 0) {
        goto fail;
    }
    if (record_duration(self, b, spec->fn_id, (form.end - form.start) * 1e-9) < 0) goto fail;
    if (PyDict_DelItem(self->tasks, task_id) < 0) goto fail;
    Py_INCREF(Py_None);
    Py_SETREF(spec->worker, Py_None);
    b->finished++;
    if (!(stored = stored_form(&form, self->none_stored))) goto fail;  /* (None's: shared) */
    /* the value first, then out of pending (get reads them without the lock) */
    if (PyDict_SetItem(b->values, task_id, stored) < 0 || PySet_Discard(b->pending, task_id) < 0)
        goto fail;
    int called = run_callbacks(self, b, task_id);  /* (1: Python ran, that may change
                                                      * anything) */
    if (called < 0 || (actor && call_finished(self, x, spec, called) < 0)) goto fail;
    Py_DECREF(first); Py_DECREF(inflight); Py_DECREF(task_id); Py_DECREF(stored);
    return 1;
fail:
    Py_XDECREF(first); Py_DECREF(inflight); Py_DECREF(task_id); Py_XDECREF(stored);
    return -1;
}

/* Lane.done(w, data) -> bool: a compact Done or item handled here (1), or not (0) */
PyObject *Lane_done(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "done(w, data)");
        return NULL;
    }
    Batch b = {0};
    int r = done_here(self, &b, args[0], args[1]);
    if (r == 0) r = item_here(self, &b, args[0], args[1]);
    if (flush(self, &b) < 0) r = -1;
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
    PyObject *rings = args[0], *workers = args[2], *out = NULL;
    long limit = PyLong_AsLong(args[3]), handled = 0;
    if (limit == -1 && PyErr_Occurred()) return NULL;
    Batch b = {0};
    while (handled < limit && PyTuple_GET_SIZE(rings)) {
        PyObject *rr = PyLong_FromLong(self->rr);
        if (!rr) goto end;
        PyObject *call[5] = {rings, args[1], zero_seconds, zero_seconds, rr};
        PyObject *got = PyObject_Vectorcall(self->pop_any, call, 5, NULL);
        Py_DECREF(rr);
        if (!got) goto end;
        if (got == Py_None) { Py_DECREF(got); break; }
        Py_ssize_t i = PyTuple_Check(got) && PyTuple_GET_SIZE(got) == 2
                       ? PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0)) : -1;
        if (i < 0 || i >= PyTuple_GET_SIZE(workers)) {
            Py_DECREF(got);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "pop_any: a bad ring index");
            goto end;
        }
        self->rr = (long)i + 1;
        PyObject *data = PyTuple_GET_ITEM(got, 1);
        PyObject *w = PyTuple_GET_ITEM(workers, i);
        int r = done_here(self, &b, w, data);
        if (r == 0) r = item_here(self, &b, w, data);
        if (r <= 0) {
            if (r == 0) out = Py_BuildValue("(lnO)", handled, i, data);
            Py_DECREF(got);
            goto end;
        }
        Py_DECREF(got);
        handled++;
    }
    out = PyLong_FromLong(handled);
end:
    if (flush(self, &b) < 0) Py_CLEAR(out);
    return out;
}
