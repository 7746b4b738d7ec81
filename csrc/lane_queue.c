/* lane_queue.c - the scheduler's queues for plain tasks, in C (Lane.dispatch_queued).
 *
 * In a burst (W1), workers' pipelines fill long before the burst ends: from then on
 * every .remote() queues its task (Scheduler.push), and every batch of results
 * frees room for queued ones (Dispatcher.dispatch_queued). Both run here while the
 * tasks at the queues' heads are plain (`laneable`: what Lane.submit takes); at the
 * first other one, this stops and the Python goes on from there (its loop starts
 * again from the heads: what was placed here is gone from them). */
#include "lane.h"

static PyObject *s_queued, *s_stale, *s_releases, *s_tried_at, *s_dispatch_queued, *deque_type;

int lane_queue_init_strings(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(s_queued, "queued") S(s_stale, "stale") S(s_releases, "releases")
    S(s_tried_at, "tried_at") S(s_dispatch_queued, "dispatch_queued")
#undef S
    PyObject *collections = PyImport_ImportModule("collections");
    deque_type = collections ? PyObject_GetAttrString(collections, "deque") : NULL;
    Py_XDECREF(collections);
    return deque_type ? 0 : -1;
}

/* Scheduler.push(spec): at the end of its request's queue. */
int queue_spec(LaneObject *self, SpecObject *spec) {
    Py_SETREF(spec->queued, Py_NewRef(Py_True));
    PyObject *q = PyDict_GetItemWithError(self->ready, spec->queue);
    if (q) {
        Py_INCREF(q);
    } else {
        if (PyErr_Occurred() || !(q = PyObject_CallNoArgs(deque_type))) return -1;
        if (PyDict_SetItem(self->ready, spec->queue, q) < 0) { Py_DECREF(q); return -1; }
    }
    PyObject *call[2] = {q, (PyObject *)spec};
    PyObject *res = PyObject_Vectorcall(deque_append, call, 2, NULL);
    Py_DECREF(q);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

/* What Lane.submit places (see lane.c): the driver's simple task, plain options. */
static int laneable(LaneObject *self, SpecObject *spec) {
    if ((PyObject *)Py_TYPE(spec) != self->spec_type || spec->simple != Py_True ||
        spec->env != Py_None || spec->deps != Py_None || spec->helping != Py_False ||
        spec->pinned != Py_None)
        return 0;
    PyObject *key = PyLong_FromVoidPtr(spec->options);
    if (!key) return -1;
    PyObject *known = PyDict_GetItemWithError(self->common, key);  /* Verdicts.common */
    Py_DECREF(key);
    return known == spec->options ? 1 : PyErr_Occurred() ? -1 : 0;
}

/* Dispatcher.dispatch_queued: 1, done; 0, the Python's to go on; -1 on an error. */
static int dispatch_queued(LaneObject *self, int burst) {
    PyObject *releases = PyObject_GetAttr(self->ledger, s_releases);
    int r = releases ? PyObject_SetAttr(self->dispatch, s_tried_at, releases) : -1;
    Py_XDECREF(releases);
    if (r < 0) return -1;
    PyObject *requests = PyDict_Keys(self->ready);
    if (!requests) return -1;
    r = 1;
    for (Py_ssize_t i = 0; r == 1 && i < PyList_GET_SIZE(requests); i++) {
        PyObject *request = PyList_GET_ITEM(requests, i);
        PyObject *q = PyDict_GetItemWithError(self->ready, request);
        if (!q) { r = PyErr_Occurred() ? -1 : 1; continue; }
        Py_INCREF(q);
        Py_ssize_t n = 1;
        while (r == 1 && (n = PyObject_Size(q)) > 0) {
            SpecObject *spec = (SpecObject *)PySequence_GetItem(q, 0);
            if (!spec) { r = -1; break; }
            PyObject *w = NULL;
            int placed = 1;
            if (!PyObject_TypeCheck(spec, &SpecType)) {
                r = 0;  /* (never: the queues hold TaskSpecs) */
            } else if (spec->queued != Py_True) {  /* taken out of turn: dropped */
                PyObject *stale = PyObject_GetAttr(self->scheduler, s_stale);
                PyObject *less = stale ? PyNumber_Subtract(stale, one) : NULL;
                Py_XDECREF(stale);
                if (!less || PyObject_SetAttr(self->scheduler, s_stale, less) < 0) r = -1;
                Py_XDECREF(less);
            } else if ((r = laneable(self, spec)) == 1) {
                placed = place_here(self, spec, &w);
                if (placed < 0) r = -1;
                else if (placed == 2) r = 0;
            }
            if (r == 1 && placed == 1) {  /* off the queue (placed, or stale) */
                PyObject *res = PyObject_Vectorcall(deque_popleft, &q, 1, NULL);
                if (!res) r = -1;
                Py_XDECREF(res);
                if (w) {
                    Py_SETREF(spec->queued, Py_NewRef(Py_False));
                    if (PyList_GET_SIZE(((WorkerObject *)w)->batch) >= self->task_batch &&
                        lane_send_batch(self, w, 0) < 0)
                        r = -1;
                }
            }
            Py_DECREF(spec);
            if (placed == 0) break;  /* no worker for this request now */
        }
        if (n < 0) r = -1;
        if (r == 1 && n == 0 && PyDict_DelItem(self->ready, request) < 0) r = -1;
        Py_DECREF(q);
    }
    Py_DECREF(requests);
    if (r == 1 && !burst && PySet_GET_SIZE(self->batched) && lane_push_batches(self, 0) < 0)
        r = -1;
    return r;
}

/* Dispatcher.place_or_queue's end: the queued tasks tried again if resources came free
 * since they last were (ledger.releases), here or by the Python. */
int dispatch_queued_if_freed(LaneObject *self, int burst) {
    PyObject *releases = PyObject_GetAttr(self->ledger, s_releases);
    PyObject *tried = releases ? PyObject_GetAttr(self->dispatch, s_tried_at) : NULL;
    int same = tried ? PyObject_RichCompareBool(releases, tried, Py_EQ) : -1;
    Py_XDECREF(releases);
    Py_XDECREF(tried);
    if (same) return same;
    int r = dispatch_queued(self, burst);
    if (r != 0) return r;
    PyObject *res = PyObject_CallMethodOneArg(self->dispatch, s_dispatch_queued,
                                              burst ? Py_True : Py_False);
    Py_XDECREF(res);
    return res ? 1 : -1;
}

/* Lane.dispatch_queued(burst) -> bool */
PyObject *Lane_dispatch_queued(LaneObject *self, PyObject *burst) {
    int b = PyObject_IsTrue(burst);
    int r = b < 0 ? -1 : dispatch_queued(self, b);
    return r < 0 ? NULL : PyBool_FromLong(r);
}
