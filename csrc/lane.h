/* lane.h - the Lane's record and names, shared by the files of the lane (lane*.c and
 * the rest of _crecords: see setup.py). */
#ifndef SHMRAY_LANE_H
#define SHMRAY_LANE_H
#include "records.h"
#include "pythread.h"

/* section_lock.c: interrupts.Sections' fields, and the session's lock */
typedef struct {
    PyObject_HEAD
    long depth;
    char pending;
} SectionsObject;

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char locked;
} LockObject;

extern PyTypeObject SectionsType, LockType;
int lock_take(LockObject *self, PY_TIMEOUT_T timeout_us);  /* 1, 0 (timed out), -1 */
int lock_give(LockObject *self);

typedef struct {
    PyObject_HEAD
    /* The components, and the tables of theirs that are never replaced (the store's
     * are: ObjectStore.compact rebuilds them, so they are read at each call). */
    PyObject *store, *task_table, *tasks, *scheduler, *ready, *fn_mean, *pool, *ledger,
        *dispatch, *available, *batched, *common, *callbacks, *spec_type, *ref_type,
        *none_stored, *pop_any, *serializers;
    /* for Lane.remote (lane_remote.c): the session, its lock's methods, interrupts'
     * sections, NO_ARGS, DRAIN_BATCH; the loop's parts, taken at the first call */
    PyObject *session, *raw_lock, *sections, *no_args, *drain_batch,
        *pump_acquire, *pump_release, *drain, *deferred, *run_deferred;
    PyObject *functions;  /* the session's functions shipped: fn_id -> (pickle, name) */
    PyObject *actors_by_id, *actor_spec_type, *alive;  /* ActorTable.by_id, ActorCallSpec,
                                                         * the ALIVE state */
    PyObject *streams;    /* GeneratorTable.streams: task id -> Stream */
    PyObject *unwoken;    /* the Dispatcher's: worker -> tasks pushed to it without a wake */
    /* the options object last submitted, and what its tasks read of it (options are
     * frozen: read once per object, not per task) */
    PyObject *last_options, *last_request, *last_num_returns, *last_backpressure;
    unsigned long main_thread;
    /* the store's tables that are never replaced, for process_refs (lane_refs.c) */
    PyObject *created_queue, *drop_queue, *needed, *borrowed, *contained, *escaped, *inner,
        *tokens, *generators, *gpu_producers;
    double pipeline_seconds, smoothing, eps, burst_gap;
    long pipeline_max, task_batch, wake_batch;
    long rr;  /* the result ring drain looks at first (round robin): `rr` in Python */
    /* bursts of .remote() calls (see _driver/dispatch.py), as Python reads them */
    double last_submit;
    long submits;
    char waited, burst, drain_due;
} LaneObject;

#define LANE_FIELDS(X)                                                                     \
    X(store) X(task_table) X(tasks) X(scheduler) X(ready) X(fn_mean) X(pool) X(ledger)     \
    X(dispatch) X(available) X(batched) X(common) X(callbacks) X(spec_type) X(ref_type)    \
    X(none_stored) X(pop_any) X(serializers) X(session) X(raw_lock)      \
    X(sections) X(no_args) X(drain_batch) X(pump_acquire) X(pump_release) X(drain)          \
    X(deferred) X(run_deferred) X(created_queue) X(drop_queue) X(needed) X(borrowed)         \
    X(contained) X(escaped) X(inner) X(tokens) X(generators) X(gpu_producers) X(functions) \
    X(unwoken) X(actors_by_id) X(actor_spec_type) X(alive) X(streams) X(last_options) X(last_request)   \
    X(last_num_returns) X(last_backpressure)

extern PyObject *s_values, *s_pending, *s_local, *s_request, *s_num_returns, *s_workers,
    *s_uncharge, *s_charge, *s_recent_mean, *s_finished, *s_backpressure, *s_place_or_queue,
    *s_send_batch, *one, *zero_seconds, *deque_append, *deque_popleft;

/* CLOCK_MONOTONIC in seconds: what time.monotonic() returns */
double monotonic_seconds(void);


#define DONE_KIND 10   /* _protocol.DONE (tests/test_lane.py checks both) */
#define INLINE_KIND 0  /* _protocol.INLINE */

/* done_form.c: the compact Done, and the module's pack_done / unpack_done */
typedef struct {
    const unsigned char *pickle;
    Py_ssize_t pickle_size;
    long long start, end;
} DoneForm;
int read_done(PyObject *data, DoneForm *form);  /* its fields; 0 if `data` is not one */
PyObject *task_id_of(PyObject *data);
/* the result's INLINE stored form: `none_stored` itself when it is None's */
PyObject *stored_form(const DoneForm *form, PyObject *none_stored);
PyObject *pack_done(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *unpack_done(PyObject *mod, PyObject *data);
PyObject *set_none_stored(PyObject *mod, PyObject *stored);

/* item_form.c: a generator's item, compact, and its handling (lane_item) */
int item_form_init_strings(void);
PyObject *pack_item(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *unpack_item(PyObject *mod, PyObject *data);
int lane_item(LaneObject *self, PyObject *w, PyObject *data, PyObject *values,
              PyObject *pending, PyObject **stored_oid);
extern PyObject *none_stored_form;  /* (done_form.c: set_none_stored's) */
/* ids.c: the id of item `index` of generator task `task_id` */
PyObject *item_id(PyObject *task_id, unsigned long long index);

/* lane_done.c: Lane.done, Lane.drain */
PyObject *Lane_done(LaneObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Lane_drain(LaneObject *self, PyObject *const *args, Py_ssize_t nargs);

/* lane.c: placement, as Scheduler.place and Dispatcher.send_task do it for a plain task */
int fits(LaneObject *self, PyObject *request);
PyObject *pipeline_worker(LaneObject *self, PyObject *fn_id, PyObject *request, int *error);
PyObject *idle_worker(LaneObject *self, int *error);
int charge(LaneObject *self, PyObject *w, PyObject *request);
int batch_task(LaneObject *self, PyObject *w, SpecObject *spec);
int place_here(LaneObject *self, SpecObject *spec, PyObject **w);
int lane_place_init_strings(void);
int has_serializers(LaneObject *self, PyObject *w);  /* 1, 0, or -1 */
int read_options(LaneObject *self, PyObject *options);  /* the last_* fields: 0, or -1 */

PyObject *lane_submit(LaneObject *self, PyObject *fn_id, PyObject *name, PyObject *options,
                      PyObject *args_stored);
/* lane.c: the parts of a submission that Lane.submit and Lane.call share */
int note_submit(LaneObject *self);                           /* the call's burst: 1 or 0 */
int plain_options(LaneObject *self, PyObject *options);      /* Verdicts.common: 1, 0, -1 */
SpecObject *new_spec(PyTypeObject *type);                    /* untracked by the GC */
int fill_spec(LaneObject *self, SpecObject *spec, PyObject *fn_id, PyObject *name,
              PyObject *options, PyObject *args_stored);     /* after read_options */
int enter_task(LaneObject *self, SpecObject *spec);          /* TaskTable.add's part */
PyObject *new_ref(LaneObject *self, SpecObject *spec);       /* ObjectRef(task_id, True) */
int send_if_due(LaneObject *self, PyObject *w, int burst);   /* send_task's end */

/* actor_call.c: an actor's common call (ActorSpecBase, Lane.call, its Done) */
typedef struct {
    SpecObject base;
    PyObject *actor, *creates, *runnable, *caller, *sent;
} ActorSpecObject;
#define ACTOR_SPEC_FIELDS(X) X(actor) X(creates) X(runnable) X(caller) X(sent)
extern PyTypeObject ActorSpecType;
/* the fields of _driver.actors.ActorState that a call's way reads (ActorStateBase) */
typedef struct {
    PyObject_HEAD
    PyObject *state, *worker, *waiting, *ending, *calls_done, *max_pending_calls;
} ActorStateObject;
#define ACTOR_STATE_FIELDS(X) X(state) X(worker) X(waiting) X(ending) X(calls_done)         \
    X(max_pending_calls)
extern PyTypeObject ActorStateType;
int actor_call_init_strings(void);
PyObject *lane_call(LaneObject *self, PyObject *actor_id, PyObject *fn_id, PyObject *name,
                    PyObject *options);
PyObject *Lane_call(LaneObject *self, PyObject *const *args, Py_ssize_t nargs);
int actor_done_ok(LaneObject *self, PyObject *actor);         /* 1, 0, or -1 */
int call_done_ok(LaneObject *self, SpecObject *spec);         /* 1, 0, or -1 */
int call_finished(LaneObject *self, WorkerObject *w, SpecObject *spec, int called);

/* lane_remote.c */
int lane_remote_init_strings(void);
PyObject *Lane_remote(LaneObject *self, PyObject *const *args, Py_ssize_t nargs);
/* f.remote() (actor_id NULL) or an actor's method's .remote() (see lane_call) */
PyObject *lane_remote(LaneObject *self, PyObject *actor_id, PyObject *fn_id, PyObject *name,
                      PyObject *options);

/* remote_call.c: RemoteFunction's base, and the lane its .remote() takes */
extern PyTypeObject RemoteType;
int remote_call_init_strings(void);
PyObject *set_lane(PyObject *mod, PyObject *lane);
/* The lane set, if its session is the process's runtime (borrowed), or NULL (-1 in
 * *error on an error) */
LaneObject *driver_lane(int *error);
/* self._remote(*args, **kwargs): a .remote() call the C does not take, the Python's */
PyObject *python_remote(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames);

/* status_words.c: a worker's status words and task records */
extern PyTypeObject StatusWordsType;

/* actor_method.c: ActorHandleBase, ActorMethodBase, MethodCalls */
extern PyTypeObject HandleType, MethodType, CallsType;
int actor_method_init_strings(void);
PyObject *set_method_type(PyObject *mod, PyObject *type);

/* lane_queue.c: the scheduler's queues */
int lane_queue_init_strings(void);
int queue_spec(LaneObject *self, SpecObject *spec);
int dispatch_queued_if_freed(LaneObject *self, int burst);
PyObject *Lane_dispatch_queued(LaneObject *self, PyObject *burst);

/* lane_send.c: Dispatcher.send_batch and push_batches, for compact Tasks messages */
int lane_send_init_strings(void);
int lane_send_batch(LaneObject *self, PyObject *w, int wake);
int lane_push_batches(LaneObject *self, int burst);
PyObject *Lane_push_batches(LaneObject *self, PyObject *burst);

/* lane_refs.c */
int lane_refs_init_strings(void);
PyObject *Lane_process_refs(LaneObject *self, PyObject *unused);

/* task_form.c */
PyObject *pack_tasks(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *unpack_tasks(PyObject *mod, PyObject *data);

/* inline_values.c */
PyObject *inline_values(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *not_stored(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *first_other(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

#endif
