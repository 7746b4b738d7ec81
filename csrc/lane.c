/* lane.c - the common task's way through the driver, in C (shmray._crecords.Lane).
 *
 * The common task: the driver's, with one return, arguments holding no refs, and
 * options the driver found plain (Verdicts.common: no runtime_env, no retried
 * exception types, the default strategy, no GPU, no max_calls). For a small one,
 * most of the driver's cost was the bytecode of a dozen functions. The Lane does
 * their work for it, one call each way:
 *
 *   submit(fn_id, name, options, args_stored) -> spec, or None (not the common case)
 *       Session._submit → TaskTable.add → Dispatcher.place_or_queue → Scheduler.place,
 *       when every worker is busy (the request does not fit what is free) → _pipeline
 *       → Dispatcher.send_task: the TaskSpec made and entered (the task table; the
 *       store expects its return and counts the driver's ref), and its task record
 *       batched for the least loaded worker under the pipeline depth (spec.worker
 *       set). Any other placement (an idle worker, a queue, a function not shipped
 *       yet) is Python's: spec.worker is None, and the caller places it.
 *   done(w, msg) -> bool
 *       MessageLoop.on_done's short way (read it there): the Done of a simple task,
 *       first in line on a plain worker, with an inline result. False: nothing was
 *       done, the message goes the Python way.
 *
 * The Python is the reference: this file does what that code does, step for step,
 * for these cases only (tests/test_lane.py holds the two to the same outcomes).
 * Both run under the session's lock, as the code they stand for; nothing here runs
 * user code (a store callback is the driver's own). */
#include "lane.h"
#include <math.h>
#include <structmember.h>

PyObject *s_values, *s_pending, *s_local, *s_request, *s_num_returns, *s_workers,
    *s_inflight, *s_charge, *s_rpcs, *s_retiring, *s_env, *s_fns, *s_batch, *s_append,
    *s_popleft, *s_gone, *s_actor, *s_tasks_done, *s_idle_since, *s_uncharge, *s_recent_mean,
    *s_finished, *s_backpressure, *one, *zero_seconds;

static PyObject *Lane_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"store", "task_table", "scheduler", "pool", "ledger", "batched",
                             "common", "spec_type", "none_stored", "pipeline_seconds",
                             "pipeline_max", "smoothing", "eps", "pop_any", NULL};
    PyObject *store, *task_table, *scheduler, *pool, *ledger, *batched, *common, *spec_type,
        *none_stored, *pop_any;
    double pipeline_seconds, smoothing, eps;
    long pipeline_max;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "$OOOOOO!O!O!OdlddO", kwlist, &store,
                                     &task_table, &scheduler, &pool, &ledger, &PySet_Type,
                                     &batched, &PyDict_Type, &common, &PyType_Type, &spec_type,
                                     &none_stored, &pipeline_seconds, &pipeline_max,
                                     &smoothing, &eps, &pop_any))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)spec_type, &SpecType)) {
        PyErr_SetString(PyExc_TypeError, "spec_type must be a TaskSpecBase subclass");
        return NULL;
    }
    LaneObject *self = (LaneObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
#define KEEP(f) Py_INCREF(f); self->f = f;
    KEEP(store) KEEP(task_table) KEEP(scheduler) KEEP(pool) KEEP(ledger) KEEP(batched)
    KEEP(common) KEEP(spec_type) KEEP(none_stored) KEEP(pop_any)
#undef KEEP
    self->pipeline_seconds = pipeline_seconds;
    self->pipeline_max = pipeline_max;
    self->smoothing = smoothing;
    self->eps = eps;
    if (!(self->tasks = PyObject_GetAttrString(task_table, "tasks")) ||
        !(self->ready = PyObject_GetAttrString(scheduler, "ready")) ||
        !(self->fn_mean = PyObject_GetAttrString(scheduler, "fn_mean")) ||
        !(self->available = PyObject_GetAttrString(ledger, "available")) ||
        !(self->callbacks = PyObject_GetAttrString(store, "_callbacks")))
        goto fail;
    if (!PyDict_CheckExact(self->tasks) || !PyDict_CheckExact(self->ready) ||
        !PyDict_CheckExact(self->fn_mean) || !PyDict_CheckExact(self->available) ||
        !PyDict_CheckExact(self->callbacks)) {
        PyErr_SetString(PyExc_TypeError, "the components' tables must be dicts");
        goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int Lane_traverse(LaneObject *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    LANE_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int Lane_clear(LaneObject *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    LANE_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void Lane_dealloc(LaneObject *self) {
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* An attribute that must be a truth value: 1, 0, or -1 (an error set). */
int attr_true(PyObject *obj, PyObject *name) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v) return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* ResourceLedger.fits: every (name, amount) of the request is free. */
static int fits(LaneObject *self, PyObject *request) {
    if (!PyTuple_Check(request)) return 1; /* (not a plain request: Python's to place) */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(request); i++) {
        PyObject *pair = PyTuple_GET_ITEM(request, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) return 1;
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
static PyObject *pipeline_worker(LaneObject *self, PyObject *fn_id, PyObject *request,
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
        PyObject *w = PyList_GET_ITEM(workers, i);
        PyObject *inflight = PyObject_GetAttr(w, s_inflight);
        if (!inflight) goto fail;
        Py_ssize_t n = PyObject_Size(inflight);
        Py_DECREF(inflight);
        if (n < 0) goto fail;
        if (n >= depth) continue;
        PyObject *charge = PyObject_GetAttr(w, s_charge);
        if (!charge) goto fail;
        int same = PyObject_RichCompareBool(charge, request, Py_EQ);
        Py_DECREF(charge);
        if (same <= 0) { if (same < 0) goto fail; continue; }
        int blocked = attr_true(w, s_rpcs), retiring = attr_true(w, s_retiring);
        if (blocked < 0 || retiring < 0) goto fail;
        PyObject *env = PyObject_GetAttr(w, s_env);
        if (!env) goto fail;
        Py_DECREF(env);
        if (blocked || retiring || env != Py_None) continue;
        best = w;
        depth = (long)n;
    }
    Py_DECREF(workers);
    return best;
fail:
    Py_DECREF(workers);
    *error = 1;
    return NULL;
}

/* Dispatcher.send_task's part for a plain task on a worker that has its function:
 * the task record into w.batch, the spec into w.inflight, w among the batched. */
static int batch_task(LaneObject *self, PyObject *w, SpecObject *spec) {
    PyObject *backpressure = PyObject_GetAttr(spec->options, s_backpressure);
    if (!backpressure) return -1;
    /* a _protocol.Task as the plain tuple the wire carries (task_record) */
    PyObject *record = PyTuple_Pack(11, spec->task_id, spec->fn_id, spec->num_returns,
                                    spec->args_stored, Py_None, Py_None, spec->request,
                                    Py_False, spec->attempt, Py_None, backpressure);
    Py_DECREF(backpressure);
    if (!record) return -1;
    PyObject *batch = PyObject_GetAttr(w, s_batch);
    int r = batch ? PyList_Append(batch, record) : -1;
    Py_XDECREF(batch);
    Py_DECREF(record);
    if (r < 0) return -1;
    PyObject *inflight = PyObject_GetAttr(w, s_inflight);
    PyObject *res = inflight ? PyObject_CallMethodOneArg(inflight, s_append, (PyObject *)spec)
                             : NULL;
    Py_XDECREF(inflight);
    if (!res) return -1;
    Py_DECREF(res);
    Py_INCREF(w);
    Py_SETREF(spec->worker, w);
    return PySet_Add(self->batched, w);
}

/* Lane.submit(fn_id, name, options, args_stored) -> spec or None */
static PyObject *Lane_submit(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "submit(fn_id, name, options, args_stored)");
        return NULL;
    }
    PyObject *fn_id = args[0], *options = args[2];
    PyObject *key = PyLong_FromVoidPtr(options);
    if (!key) return NULL;
    PyObject *known = PyDict_GetItemWithError(self->common, key);  /* Verdicts.common */
    Py_DECREF(key);
    if (known != options) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyTypeObject *type = (PyTypeObject *)self->spec_type;
    SpecObject *spec = (SpecObject *)type->tp_new(type, NULL, NULL);  /* the defaults */
    if (!spec) return NULL;
    PyObject *task_id = records_new_base_id();
    PyObject *request = PyObject_GetAttr(options, s_request);
    PyObject *num_returns = PyObject_GetAttr(options, s_num_returns);
    if (!task_id || !request || !num_returns) {
        Py_XDECREF(task_id); Py_XDECREF(request); Py_XDECREF(num_returns);
        Py_DECREF(spec);
        return NULL;
    }
#define TAKE(field, value) Py_SETREF(spec->field, value)
#define SHARE(field, value) do { Py_INCREF(value); Py_SETREF(spec->field, value); } while (0)
    TAKE(task_id, task_id);
    SHARE(fn_id, fn_id);
    SHARE(name, args[1]);
    SHARE(options, options);
    SHARE(queue, request);
    TAKE(request, request);
    TAKE(num_returns, num_returns);
    SHARE(args_stored, args[3]);
    SHARE(owned, Py_True);
    SHARE(simple, Py_True);
#undef TAKE
#undef SHARE
    /* TaskTable.add: the task, its return expected, the driver's ref to it counted */
    PyObject *pending = PyObject_GetAttr(self->store, s_pending);
    PyObject *local = PyObject_GetAttr(self->store, s_local);
    int bad = !pending || !local || PyDict_SetItem(self->tasks, task_id, (PyObject *)spec) < 0
              || PySet_Add(pending, task_id) < 0 || PyDict_SetItem(local, task_id, one) < 0;
    Py_XDECREF(pending);
    Py_XDECREF(local);
    if (bad) goto fail;
    /* Dispatcher.place_or_queue → Scheduler.place: nothing queued ahead of it, the
     * request does not fit (every worker busy), a worker under the pipeline depth */
    int queued = PyDict_Contains(self->ready, spec->request);
    int fit = queued ? 1 : fits(self, spec->request);
    if (queued < 0 || fit < 0) goto fail;
    if (queued || fit) return (PyObject *)spec;
    int error = 0;
    PyObject *w = pipeline_worker(self, fn_id, spec->request, &error);
    if (error) goto fail;
    if (!w) return (PyObject *)spec;
    PyObject *fns = PyObject_GetAttr(w, s_fns);
    int shipped = fns ? PySet_Contains(fns, fn_id) : -1;
    Py_XDECREF(fns);
    if (shipped < 0) goto fail;
    if (shipped && batch_task(self, w, spec) < 0) goto fail;
    return (PyObject *)spec;
fail:
    Py_DECREF(spec);
    return NULL;
}

static PyMethodDef Lane_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))Lane_submit, METH_FASTCALL,
     "submit(fn_id, name, options, args_stored) -> TaskSpec or None: a common task made, "
     "entered, and batched for a busy worker when one can queue it (spec.worker)"},
    {"drain", (PyCFunction)(void (*)(void))Lane_drain, METH_FASTCALL,
     "drain(rings, doorbell, workers, limit) -> handled, or (handled, i, data): waiting "
     "messages popped while they are compact Dones handled here; the first other one"},
    {"done", (PyCFunction)(void (*)(void))Lane_done, METH_FASTCALL,
     "done(w, msg) -> bool: a simple task's Done handled the short way; False: not one"},
    {NULL}
};

static PyMemberDef Lane_members[] = {
    {"rr", T_LONG, offsetof(LaneObject, rr), 0, "the result ring to look at first"},
    {NULL}
};

PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.Lane",
    .tp_basicsize = sizeof(LaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The common task's submission and ending, in C (see csrc/lane.c).",
    .tp_new = Lane_new,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_methods = Lane_methods,
    .tp_members = Lane_members,
};

int lane_init_strings(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(s_values, "values") S(s_pending, "pending") S(s_local, "_local")
    S(s_request, "request") S(s_num_returns, "num_returns") S(s_workers, "workers")
    S(s_inflight, "inflight") S(s_charge, "charge") S(s_rpcs, "rpcs")
    S(s_retiring, "retiring") S(s_env, "env") S(s_fns, "fns") S(s_batch, "batch")
    S(s_append, "append") S(s_popleft, "popleft") S(s_gone, "gone") S(s_actor, "actor")
    S(s_tasks_done, "tasks_done") S(s_idle_since, "idle_since") S(s_uncharge, "uncharge")
    S(s_recent_mean, "recent_mean") S(s_finished, "finished")
    S(s_backpressure, "_generator_backpressure_num_objects")
#undef S
    one = PyLong_FromLong(1);
    zero_seconds = PyFloat_FromDouble(0.0);
    return one && zero_seconds ? 0 : -1;
}
