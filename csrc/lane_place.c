/* lane_place.c - where the lane puts a plain task: Scheduler.place and
 * Dispatcher.send_task, for the tasks Lane.submit and Lane.dispatch_queued take.
 *
 * The warmest idle worker when the request fits what is free (charged, as
 * ResourceLedger.charge does), else, every worker busy, the least loaded one under the
 * pipeline depth (Scheduler._pipeline); its task record batched for it. Anything
 * else (a worker to start, a function or the user's serializers to ship, GPUs, a
 * runtime_env) is the Python's. */
#include "lane.h"
#include <math.h>

static PyObject *s_shipment, *s_key;

int lane_place_init_strings(void) {
    s_shipment = PyUnicode_InternFromString("shipment");
    s_key = PyUnicode_InternFromString("key");
    return s_shipment && s_key ? 0 : -1;
}

/* Has `w` the user's serializers in force now (_custom_serializers.shipment), if any?
 * (Dispatcher.send_task ships them first to a worker that lacks them: the Python's.) */
int has_serializers(LaneObject *self, PyObject *w) {
    PyObject *shipment = PyObject_GetAttr(self->serializers, s_shipment);
    if (!shipment) return -1;
    int r = 1;
    if (shipment != Py_None) {
        PyObject *key = PyObject_GetAttr(shipment, s_key);
        r = key ? PySet_Contains(((WorkerObject *)w)->fns, key) : -1;
        Py_XDECREF(key);
    }
    Py_DECREF(shipment);
    return r;
}

/* ResourceLedger.fits: every (name, amount) of the request is free: 1, or 0; 2 when
 * the request is not (name, amount) pairs (Python's to place); -1 on an error. */
int fits(LaneObject *self, PyObject *request) {
    if (!PyTuple_Check(request)) return 2;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(request); i++) {
        PyObject *pair = PyTuple_GET_ITEM(request, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) return 2;
        PyObject *free = PyDict_GetItemWithError(self->available, PyTuple_GET_ITEM(pair, 0));
        if (!free && PyErr_Occurred()) return -1;
        double have = free ? PyFloat_AsDouble(free) : 0.0;
        double want = PyFloat_AsDouble(PyTuple_GET_ITEM(pair, 1));
        if (PyErr_Occurred()) return -1;
        if (have + self->eps < want) return 0;
    }
    return 1;
}

/* Scheduler._pipeline for a plain task: the least loaded worker below the depth that
 * holds this request (borrowed from the pool's list), or NULL (none; -1 on error). */
PyObject *pipeline_worker(LaneObject *self, PyObject *fn_id, PyObject *request,
                                 int *error) {
    PyObject *mean = PyDict_GetItemWithError(self->fn_mean, fn_id);
    if (!mean) { *error = PyErr_Occurred() != NULL; return NULL; }
    double m = PyFloat_AsDouble(mean);
    if (m == -1.0 && PyErr_Occurred()) { *error = 1; return NULL; }
    long depth = self->pipeline_max;
    if (m > 0 && floor(self->pipeline_seconds / m) < depth)
        depth = (long)floor(self->pipeline_seconds / m);
    if (depth < 2) return NULL;
    PyObject *workers = PyObject_GetAttr(self->pool, s_workers);
    if (!workers) { *error = 1; return NULL; }
    PyObject *best = NULL;
    for (Py_ssize_t i = 0; PyList_Check(workers) && i < PyList_GET_SIZE(workers); i++) {
        WorkerObject *w = (WorkerObject *)PyList_GET_ITEM(workers, i);
        if (!PyObject_TypeCheck(w, &WorkerType)) continue;  /* (never: WorkerHandles) */
        Py_ssize_t n = PyObject_Size(w->inflight);
        if (n < 0) goto fail;
        if (n >= depth) continue;
        int same = PyObject_RichCompareBool(w->charge, request, Py_EQ);
        if (same <= 0) { if (same < 0) goto fail; continue; }
        int blocked = PyObject_IsTrue(w->rpcs), retiring = PyObject_IsTrue(w->retiring);
        if (blocked < 0 || retiring < 0) goto fail;
        if (blocked || retiring || w->env != Py_None) continue;
        best = (PyObject *)w;
        depth = (long)n;
    }
    Py_DECREF(workers);
    return best;
fail:
    Py_DECREF(workers);
    *error = 1;
    return NULL;
}

/* Scheduler.place when the request fits what is free: the warmest idle plain worker
 * (no GPU devices, no runtime_env), borrowed from the pool's list; NULL if none (or
 * -1 in *error): Python starts one, or pipelines. */
PyObject *idle_worker(LaneObject *self, int *error) {
    PyObject *workers = PyObject_GetAttr(self->pool, s_workers);
    if (!workers) { *error = 1; return NULL; }
    WorkerObject *best = NULL;
    for (Py_ssize_t i = 0; PyList_Check(workers) && i < PyList_GET_SIZE(workers); i++) {
        WorkerObject *x = (WorkerObject *)PyList_GET_ITEM(workers, i);
        if (!PyObject_TypeCheck(x, &WorkerType) || !PyTuple_Check(x->gpus) ||
            PyTuple_GET_SIZE(x->gpus) || x->env != Py_None)
            continue;
        Py_ssize_t n = PyObject_Size(x->inflight);
        int blocked = PyObject_IsTrue(x->rpcs), retiring = PyObject_IsTrue(x->retiring);
        if (n < 0 || blocked < 0 || retiring < 0) { Py_DECREF(workers); *error = 1; return NULL; }
        if (!n && !blocked && !retiring && (!best || x->idle_since > best->idle_since)) best = x;
    }
    Py_DECREF(workers);
    return (PyObject *)best;
}

/* ResourceLedger.charge(w, request), for a worker with no GPU devices: w holds the
 * request, taken from what is free. */
int charge(LaneObject *self, PyObject *w, PyObject *request) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(request); i++) {
        PyObject *pair = PyTuple_GET_ITEM(request, i), *name = PyTuple_GET_ITEM(pair, 0);
        PyObject *free = PyDict_GetItemWithError(self->available, name);
        if (!free && PyErr_Occurred()) return -1;
        double left = (free ? PyFloat_AsDouble(free) : 0.0)
                      - PyFloat_AsDouble(PyTuple_GET_ITEM(pair, 1));
        PyObject *v = PyErr_Occurred() ? NULL : PyFloat_FromDouble(left);
        if (!v || PyDict_SetItem(self->available, name, v) < 0) { Py_XDECREF(v); return -1; }
        Py_DECREF(v);
    }
    Py_INCREF(request);
    Py_SETREF(((WorkerObject *)w)->charge, request);
    return 0;
}

/* Dispatcher.send_task's part for a plain task on a worker that has its function:
 * the task record into w.batch, the spec into w.inflight, w among the batched. */
/* (see lane.h) */
int read_options(LaneObject *self, PyObject *options) {
    if (options == self->last_options) return 0;
    PyObject *request = PyObject_GetAttr(options, s_request);
    PyObject *num_returns = request ? PyObject_GetAttr(options, s_num_returns) : NULL;
    PyObject *backpressure = num_returns ? PyObject_GetAttr(options, s_backpressure) : NULL;
    if (!backpressure) {
        Py_XDECREF(request); Py_XDECREF(num_returns);
        return -1;
    }
    Py_XSETREF(self->last_request, request);
    Py_XSETREF(self->last_num_returns, num_returns);
    Py_XSETREF(self->last_backpressure, backpressure);
    Py_XSETREF(self->last_options, Py_NewRef(options));
    return 0;
}

int batch_task(LaneObject *self, PyObject *w, SpecObject *spec) {
    if (read_options(self, spec->options) < 0) return -1;
    /* a _protocol.Task as the plain tuple the wire carries (task_record) */
    PyObject *record = PyTuple_Pack(11, spec->task_id, spec->fn_id, spec->num_returns,
                                    spec->args_stored, Py_None, Py_None, spec->request,
                                    Py_False, spec->attempt, Py_None, self->last_backpressure);
    if (!record) return -1;
    WorkerObject *x = (WorkerObject *)w;
    int r = PyList_Check(x->batch) ? PyList_Append(x->batch, record) : -1;
    Py_DECREF(record);
    if (r < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "w.batch must be a list");
        return -1;
    }
    PyObject *call[2] = {x->inflight, (PyObject *)spec};
    PyObject *res = PyObject_Vectorcall(deque_append, call, 2, NULL);
    if (!res) return -1;
    Py_DECREF(res);
    Py_INCREF(w);
    Py_SETREF(spec->worker, w);
    return PySet_Add(self->batched, w);
}

/* Scheduler.place and Dispatcher.send_task for a plain task, nothing queued ahead of
 * it: 1, batched for *w (the warmest idle worker, charged, or, every worker busy, the
 * least loaded one under the pipeline depth); 0, no worker now (it waits in the
 * queue); 2, the Python's to place (a worker to start, a function to ship, a request
 * that is not (name, amount) pairs); -1 on an error. */
int place_here(LaneObject *self, SpecObject *spec, PyObject **w) {
    int fit = fits(self, spec->request), error = 0;
    if (fit < 0 || fit == 2) return fit;
    *w = fit ? idle_worker(self, &error) : pipeline_worker(self, spec->fn_id, spec->request,
                                                           &error);
    if (error) return -1;
    if (!*w) return fit ? 2 : 0;
    int shipped = PySet_Contains(((WorkerObject *)*w)->fns, spec->fn_id);
    if (shipped > 0) shipped = has_serializers(self, *w);
    if (shipped <= 0) return shipped < 0 ? -1 : 2;
    if ((fit && charge(self, *w, spec->request) < 0) || batch_task(self, *w, spec) < 0)
        return -1;
    return 1;
}

