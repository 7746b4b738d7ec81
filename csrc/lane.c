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
#include <structmember.h>

PyObject *s_values, *s_pending, *s_local, *s_request, *s_num_returns, *s_workers,
    *s_uncharge, *s_charge, *s_recent_mean, *s_finished, *s_backpressure, *s_place_or_queue,
    *s_send_batch, *one, *zero_seconds, *deque_append, *deque_popleft;

/* obj.a.b (a new reference), or NULL */
static PyObject *get_path(PyObject *obj, const char *a, const char *b) {
    PyObject *mid = PyObject_GetAttrString(obj, a);
    PyObject *end = mid ? PyObject_GetAttrString(mid, b) : NULL;
    Py_XDECREF(mid);
    return end;
}
static PyObject *Lane_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"store", "task_table", "scheduler", "pool", "ledger", "dispatch",
                             "common", "spec_type", "ref_type", "none_stored",
                             "pipeline_seconds", "pipeline_max", "smoothing", "eps", "pop_any",
                             "burst_gap", "task_batch", "serializers", "session", "sections",
                             "main_thread", "no_args", "drain_batch", "wake_batch",
                             "actor_spec_type", "alive", NULL};
    PyObject *store, *task_table, *scheduler, *pool, *ledger, *dispatch, *common, *spec_type,
        *ref_type, *none_stored, *pop_any, *serializers, *session, *sections, *no_args,
        *drain_batch, *actor_spec_type, *alive;
    unsigned long main_thread;
    double pipeline_seconds, smoothing, eps, burst_gap;
    long pipeline_max, task_batch, wake_batch;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "$OOOOOOO!O!O!OdlddOdlOOOkOOlO!O", kwlist, &store,
                                     &task_table, &scheduler, &pool, &ledger, &dispatch,
                                     &PyDict_Type, &common, &PyType_Type, &spec_type,
                                     &PyType_Type, &ref_type, &none_stored, &pipeline_seconds,
                                     &pipeline_max, &smoothing, &eps, &pop_any, &burst_gap,
                                     &task_batch, &serializers, &session, &sections,
                                     &main_thread, &no_args, &drain_batch, &wake_batch,
                                     &PyType_Type, &actor_spec_type, &alive))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)spec_type, &SpecType) ||
        !PyType_IsSubtype((PyTypeObject *)actor_spec_type, &ActorSpecType) ||
        !PyType_IsSubtype((PyTypeObject *)ref_type, &RefType)) {
        PyErr_SetString(PyExc_TypeError,
                        "spec_type, actor_spec_type and ref_type must subclass TaskSpecBase, "
                        "ActorSpecBase and RefBase");
        return NULL;
    }
    LaneObject *self = (LaneObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    PyObject *lock = NULL, *raw = NULL;
#define KEEP(f) Py_INCREF(f); self->f = f;
    KEEP(store) KEEP(task_table) KEEP(scheduler) KEEP(pool) KEEP(ledger) KEEP(dispatch)
    KEEP(common) KEEP(spec_type) KEEP(ref_type) KEEP(none_stored) KEEP(pop_any)
    KEEP(serializers) KEEP(session) KEEP(sections) KEEP(no_args) KEEP(drain_batch)
    KEEP(actor_spec_type) KEEP(alive)
#undef KEEP
    self->main_thread = main_thread;
    self->burst_gap = burst_gap;
    self->task_batch = task_batch;
    self->wake_batch = wake_batch;
    self->pipeline_seconds = pipeline_seconds;
    self->pipeline_max = pipeline_max;
    self->smoothing = smoothing;
    self->eps = eps;
    if (!(self->tasks = PyObject_GetAttrString(task_table, "tasks")) ||
        !(self->ready = PyObject_GetAttrString(scheduler, "ready")) ||
        !(self->fn_mean = PyObject_GetAttrString(scheduler, "fn_mean")) ||
        !(self->available = PyObject_GetAttrString(ledger, "available")) ||
        !(self->callbacks = PyObject_GetAttrString(store, "_callbacks")) ||
        !(self->batched = PyObject_GetAttrString(dispatch, "batched")) ||
        !(self->unwoken = PyObject_GetAttrString(dispatch, "unwoken")) ||
        !(self->functions = PyObject_GetAttrString(session, "functions")) ||
        !(self->actors_by_id = get_path(session, "actors", "by_id")) ||
        !(self->streams = get_path(session, "generators", "streams")) ||
        !(lock = PyObject_GetAttrString(session, "lock")) ||
        !(raw = PyObject_GetAttrString(lock, "raw")) ||
        !(self->raw_lock = Py_NewRef(raw)) ||
        !(self->created_queue = PyObject_GetAttrString(store, "created_queue")) ||
        !(self->drop_queue = PyObject_GetAttrString(store, "drop_queue")) ||
        !(self->needed = PyObject_GetAttrString(store, "_needed")) ||
        !(self->borrowed = PyObject_GetAttrString(store, "_borrowed")) ||
        !(self->contained = PyObject_GetAttrString(store, "_contained")) ||
        !(self->escaped = PyObject_GetAttrString(store, "escaped")) ||
        !(self->inner = PyObject_GetAttrString(store, "_inner")) ||
        !(self->tokens = PyObject_GetAttrString(store, "tokens")) ||
        !(self->generators = PyObject_GetAttrString(store, "generators")) ||
        !(self->gpu_producers = PyObject_GetAttrString(store, "gpu_producers")))
        goto fail;
    if (!PyObject_TypeCheck(self->raw_lock, &LockType) ||
        !PyObject_TypeCheck(self->sections, &SectionsType)) {
        PyErr_SetString(PyExc_TypeError, "session.lock.raw must be a _crecords.Lock and "
                        "sections a SectionsBase");
        goto fail;
    }
    if (!PySet_CheckExact(self->batched) || !PySet_CheckExact(self->generators) ||
        !PyDict_CheckExact(self->inner)) {
        PyErr_SetString(PyExc_TypeError, "the components' tables are not of their types");
        goto fail;
    }
    if (!PyDict_CheckExact(self->tasks) || !PyDict_CheckExact(self->ready) ||
        !PyDict_CheckExact(self->fn_mean) || !PyDict_CheckExact(self->available) ||
        !PyDict_CheckExact(self->callbacks) || !PyDict_CheckExact(self->functions) ||
        !PyDict_CheckExact(self->unwoken) || !PyDict_CheckExact(self->actors_by_id) ||
        !PyDict_CheckExact(self->streams)) {
        PyErr_SetString(PyExc_TypeError, "the components' tables must be dicts");
        goto fail;
    }
    Py_DECREF(lock);
    Py_DECREF(raw);
    return (PyObject *)self;
fail:
    Py_XDECREF(lock);
    Py_XDECREF(raw);
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

/* A .remote() call: is it inside a burst (less than burst_gap after the last one, no
 * get or wait between)? Then results are drained every 16th call only; else at once. */
int note_submit(LaneObject *self) {
    double now = monotonic_seconds();
    int burst = now - self->last_submit < self->burst_gap && !self->waited;
    self->last_submit = now;
    self->waited = 0;
    self->burst = (char)burst;
    self->submits++;
    self->drain_due = !burst || !(self->submits & 15);
    return burst;
}

static PyObject *Lane_note_submit(LaneObject *self, PyObject *unused) {
    return PyBool_FromLong(note_submit(self));
}

/* Verdicts.common: are `options` plain (the lane takes their tasks)? 1, 0, or -1 */
int plain_options(LaneObject *self, PyObject *options) {
    PyObject *key = PyLong_FromVoidPtr(options);
    if (!key) return -1;
    PyObject *known = PyDict_GetItemWithError(self->common, key);
    Py_DECREF(key);
    return known == options ? 1 : PyErr_Occurred() ? -1 : 0;
}

/* A new spec of `type` (the defaults: see recordsmodule.c), never visited by the
 * garbage collector: a million queued specs would make every full collection walk
 * them all. Its one cycle, with its worker's inflight or batch, ends when its task
 * does, or when the worker is removed or stopped. */
SpecObject *new_spec(PyTypeObject *type) {
    SpecObject *spec = (SpecObject *)type->tp_new(type, NULL, NULL);
    if (spec) PyObject_GC_UnTrack(spec);
    return spec;
}

/* The fields of a new task with no dependencies whose options read_options read:
 * a fresh id, (fn_id, name, options, args_stored) given, submitted by the driver */
int fill_spec(LaneObject *self, SpecObject *spec, PyObject *fn_id, PyObject *name,
              PyObject *options, PyObject *args_stored) {
    PyObject *task_id = records_new_base_id();
    if (!task_id) return -1;
#define TAKE(field, value) Py_SETREF(spec->field, value)
#define SHARE(field, value) Py_SETREF(spec->field, Py_NewRef(value))
    TAKE(task_id, task_id);
    SHARE(fn_id, fn_id);
    SHARE(name, name);
    SHARE(options, options);
    SHARE(queue, self->last_request);
    SHARE(request, self->last_request);
    SHARE(num_returns, self->last_num_returns);
    SHARE(args_stored, args_stored);
    SHARE(owned, Py_True);
#undef TAKE
#undef SHARE
    return 0;
}

/* TaskTable.add's part for a task of the driver with one return: the task, its
 * return expected, the driver's ref to it counted */
int enter_task(LaneObject *self, SpecObject *spec) {
    PyObject *pending = PyObject_GetAttr(self->store, s_pending);
    PyObject *local = PyObject_GetAttr(self->store, s_local);
    int bad = !pending || !local ||
              PyDict_SetItem(self->tasks, spec->task_id, (PyObject *)spec) < 0 ||
              PySet_Add(pending, spec->task_id) < 0 ||
              PyDict_SetItem(local, spec->task_id, one) < 0;
    Py_XDECREF(pending);
    Py_XDECREF(local);
    return bad ? -1 : 0;
}

/* What .remote() returns: an ObjectRef, counted already (ObjectRef(task_id, True)) */
PyObject *new_ref(LaneObject *self, SpecObject *spec) {
    PyTypeObject *ref_type = (PyTypeObject *)self->ref_type;
    RefObject *ref = (RefObject *)ref_type->tp_new(ref_type, NULL, NULL);
    if (ref) ref->id = Py_NewRef(spec->task_id);
    return (PyObject *)ref;
}

/* Dispatcher.send_task's end, `spec` batched for `w`: the batch sent now out of a
 * burst (the worker woken), or in one once it holds TASK_BATCH tasks */
int send_if_due(LaneObject *self, PyObject *w, int burst) {
    if (!burst || PyList_GET_SIZE(((WorkerObject *)w)->batch) >= self->task_batch)
        return lane_send_batch(self, w, !burst);
    return 0;
}

/* Lane.submit(fn_id, name, options, args_stored) -> ObjectRef, or None (not the common
 * case: nothing was done) */
PyObject *lane_submit(LaneObject *self, PyObject *fn_id, PyObject *name, PyObject *options,
                      PyObject *args_stored) {
    int plain = plain_options(self, options);
    if (plain <= 0) return plain < 0 ? NULL : Py_NewRef(Py_None);
    SpecObject *spec = new_spec((PyTypeObject *)self->spec_type);
    if (!spec) return NULL;
    if (read_options(self, options) < 0 ||
        fill_spec(self, spec, fn_id, name, options, args_stored) < 0)
        goto fail;
    Py_SETREF(spec->simple, Py_NewRef(Py_True));
    if (enter_task(self, spec) < 0) goto fail;
    int burst = note_submit(self);
    /* Dispatcher.place_or_queue: placed here (place_here) if nothing is queued ahead
     * of it, else queued; a worker to start or a function to ship: that Python's */
    int queued = PyDict_Contains(self->ready, spec->request);
    PyObject *w = NULL, *res = NULL;
    int placed = queued ? (queued < 0 ? -1 : 0) : place_here(self, spec, &w);
    if (placed < 0) goto fail;
    if (placed == 1) {
        res = send_if_due(self, w, burst) < 0 ? NULL : Py_NewRef(Py_None);
    } else if (placed == 0) {  /* the queue; then the queued ones, if resources came free */
        int done = queue_spec(self, spec) < 0 ? -1 : dispatch_queued_if_freed(self, burst);
        res = done < 0 ? NULL : Py_NewRef(Py_None);
    } else {
        res = PyObject_CallMethodObjArgs(self->dispatch, s_place_or_queue, spec,
                                         burst ? Py_True : Py_False, NULL);
    }
    if (!res) goto fail;
    Py_DECREF(res);
    PyObject *ref = new_ref(self, spec);
    Py_DECREF(spec);
    return ref;
fail:
    Py_DECREF(spec);
    return NULL;
}

static PyObject *Lane_submit(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "submit(fn_id, name, options, args_stored)");
        return NULL;
    }
    return lane_submit(self, args[0], args[1], args[2], args[3]);
}

static PyMethodDef Lane_methods[] = {
    {"remote", (PyCFunction)(void (*)(void))Lane_remote, METH_FASTCALL,
     "remote(fn_id, name, options) -> ObjectRef or None: f.remote() without arguments, "
     "the common task, whole (Session._submit's part too; None: nothing done)"},
    {"call", (PyCFunction)(void (*)(void))Lane_call, METH_FASTCALL,
     "call(actor_id, fn_id, name, options) -> ObjectRef or None: an actor's method called "
     "with no arguments, the common call, whole (None: nothing done)"},
    {"note_submit", (PyCFunction)Lane_note_submit, METH_NOARGS,
     "note_submit() -> burst: a .remote() that submit() did not take (Session._submit)"},
    {"submit", (PyCFunction)(void (*)(void))Lane_submit, METH_FASTCALL,
     "submit(fn_id, name, options, args_stored) -> ObjectRef or None: a common task "
     "submitted (None: not one, nothing done)"},
    {"process_refs", (PyCFunction)Lane_process_refs, METH_NOARGS,
     "process_refs(): ObjectStore.process_refs, the common drops here"},
    {"dispatch_queued", (PyCFunction)Lane_dispatch_queued, METH_O,
     "dispatch_queued(burst) -> bool: Dispatcher.dispatch_queued while the queues' heads "
     "are plain tasks; False: the Python's to go on"},
    {"push_batches", (PyCFunction)Lane_push_batches, METH_O,
     "push_batches(burst): Dispatcher.push_batches, each compact batch sent here"},
    {"drain", (PyCFunction)(void (*)(void))Lane_drain, METH_FASTCALL,
     "drain(rings, doorbell, workers, limit) -> handled, or (handled, i, data): waiting "
     "messages popped while they are compact Dones handled here; the first other one"},
    {"done", (PyCFunction)(void (*)(void))Lane_done, METH_FASTCALL,
     "done(w, msg) -> bool: a simple task's Done handled the short way; False: not one"},
    {NULL}
};

static PyMemberDef Lane_members[] = {
    {"rr", T_LONG, offsetof(LaneObject, rr), 0, "the result ring to look at first"},
    {"last_submit", T_DOUBLE, offsetof(LaneObject, last_submit), 0,
     "when the latest .remote() ran (time.monotonic())"},
    {"waited", T_BOOL, offsetof(LaneObject, waited), 0,
     "a get or wait ran since then (the next .remote() is not in a burst)"},
    {"burst", T_BOOL, offsetof(LaneObject, burst), READONLY,
     "the latest .remote() was inside a burst"},
    {"drain_due", T_BOOL, offsetof(LaneObject, drain_due), READONLY,
     "its caller drains the result rings (not in a burst, or every 16th call of one)"},
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
    S(s_uncharge, "uncharge") S(s_charge, "charge") S(s_recent_mean, "recent_mean") S(s_finished, "finished")
    S(s_backpressure, "_generator_backpressure_num_objects")
    S(s_place_or_queue, "place_or_queue") S(s_send_batch, "send_batch")
#undef S
    PyObject *collections = PyImport_ImportModule("collections");
    PyObject *deque = collections ? PyObject_GetAttrString(collections, "deque") : NULL;
    Py_XDECREF(collections);
    if (!deque) return -1;
    deque_append = PyObject_GetAttrString(deque, "append");    /* (unbound: a descriptor */
    deque_popleft = PyObject_GetAttrString(deque, "popleft");  /* called without binding) */
    Py_DECREF(deque);
    if (!deque_append || !deque_popleft) return -1;
    if (lane_refs_init_strings() < 0 || lane_queue_init_strings() < 0 ||
        lane_remote_init_strings() < 0 || lane_place_init_strings() < 0 ||
        remote_call_init_strings() < 0 || lane_send_init_strings() < 0 ||
        actor_call_init_strings() < 0 || actor_method_init_strings() < 0 ||
        item_form_init_strings() < 0)
        return -1;
    one = PyLong_FromLong(1);
    zero_seconds = PyFloat_FromDouble(0.0);
    return one && zero_seconds ? 0 : -1;
}
