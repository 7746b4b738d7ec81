/* records.h - the C records of shmray._crecords, shared by its two files:
 * recordsmodule.c (the types: TaskSpecBase, RefBase; ids) and lane.c (the common
 * task's submission and ending, which fill and read those records directly). */
#ifndef SHMRAY_RECORDS_H
#define SHMRAY_RECORDS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000  /* (Python 3.9: Py_NewRef came in 3.10) */
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#endif

typedef struct {
    PyObject_HEAD
    PyObject *task_id, *fn_id, *name, *options, *request, *args_stored, *deps, *unresolved,
        *attempt, *worker, *num_returns, *owned, *helping, *queued, *lent, *held, *parent,
        *cancelled, *pinned, *pipelinable, *env, *queue, *retry_exceptions, *simple;
} SpecObject;

/* Every field, in order: traverse, clear and the member table walk this one list. */
#define SPEC_FIELDS(X)                                                                       \
    X(task_id) X(fn_id) X(name) X(options) X(request) X(args_stored) X(deps) X(unresolved)   \
    X(attempt) X(worker) X(num_returns) X(owned) X(helping) X(queued) X(lent) X(held)       \
    X(parent) X(cancelled) X(pinned) X(pipelinable) X(env) X(queue) X(retry_exceptions)      \
    X(simple)

typedef struct {
    PyObject_HEAD
    PyObject *id;
    PyObject *weakrefs;
} RefObject;

/* The fields of the driver's WorkerHandle (shmray/_worker_pool.py documents them)
 * that a task's way through the lane reads and writes. */
typedef struct {
    PyObject_HEAD
    PyObject *inflight, *charge, *fns, *rpcs, *batch, *retiring, *gone, *env, *actor,
        *tasks_done, *gpus;
    double idle_since;
} WorkerObject;

#define WORKER_FIELDS(X)                                                                     \
    X(inflight) X(charge) X(fns) X(rpcs) X(batch) X(retiring) X(gone) X(env) X(actor)        \
    X(tasks_done) X(gpus)

extern PyTypeObject SpecType, RefType, LaneType, WorkerType;

/* ids.c: the next task or put id, as _object_ref documents them; the module's
 * new_base_id, reset_ids, stream_item_id */
PyObject *records_new_base_id(void);
PyObject *new_base_id(PyObject *mod, PyObject *unused);
PyObject *reset_ids(PyObject *mod, PyObject *prefix);
PyObject *stream_item_id(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

/* lane.c's names, made once at import. */
int lane_init_strings(void);

#endif
