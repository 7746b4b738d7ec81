/* actor_call.c - an actor's common call in C: ActorSpecBase (the fields of
 * _driver.actors.ActorCallSpec), its submission (lane_call, under the session's
 * lock: see Lane.call in lane_remote.c) and what its Done does that a task's does not
 * (lane_done.c calls the parts here).
 *
 * The common call: the driver's, with no arguments and plain options (Verdicts.common),
 * to an actor that is ALIVE, still has a handle, has no call waiting in its line and
 * no max_pending_calls, and whose worker has the method and the user's serializers.
 * The call goes at once, as ActorTable.flush's first case sends it. The Python is the
 * reference, step for step:
 *
 *   Session._submit_in_python → ActorFacade.admit_call → TaskTable.add
 *   → ActorTable.enqueue → TaskTable.ready → ActorTable.ready → ActorTable.flush
 *   → Dispatcher.send_task
 *
 * and for its Done (a compact one, first in line on the actor's worker):
 *
 *   MessageLoop.on_done → RpcTable.resume → TaskTable.on_done → TaskTable.finish
 *   → ActorTable.call_finished (a call that was sent: calls_done + 1)
 *
 * Anything else (a dead, restarting or ending actor, a call with arguments, a creation)
 * is the Python's; tests/test_actor_lane.py holds the two to the same outcomes. */
#include "lane.h"
#include <structmember.h>

static PyObject *s_life, *s_end_if_done;

int actor_call_init_strings(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(s_life, "life") S(s_end_if_done, "end_if_done")
#undef S
    return 0;
}

/* ---------------------------------------------------------------- ActorSpecBase */

static PyObject *ActorSpec_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    ActorSpecObject *self = (ActorSpecObject *)SpecType.tp_new(type, args, kw);
    if (!self) return NULL;
    self->actor = Py_NewRef(Py_None);
    self->creates = Py_NewRef(Py_False);   /* runs __init__ (its worker's first) */
    self->runnable = Py_NewRef(Py_False);  /* its inputs are there */
    self->caller = Py_NewRef(Py_None);     /* None: the driver; else a worker's index */
    self->sent = Py_NewRef(Py_False);      /* pushed to its actor's worker (this attempt) */
    return (PyObject *)self;
}

static int ActorSpec_traverse(ActorSpecObject *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    ACTOR_SPEC_FIELDS(VISIT)
#undef VISIT
    return SpecType.tp_traverse((PyObject *)self, visit, arg);
}

static int ActorSpec_clear(ActorSpecObject *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    ACTOR_SPEC_FIELDS(CLEAR)
#undef CLEAR
    return SpecType.tp_clear((PyObject *)self);
}

static void ActorSpec_dealloc(ActorSpecObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ActorSpec_clear(self);
    type->tp_free((PyObject *)self);
}

static PyMemberDef ActorSpec_members[] = {
#define MEMBER(f) {#f, T_OBJECT_EX, offsetof(ActorSpecObject, f), 0, NULL},
    ACTOR_SPEC_FIELDS(MEMBER)
#undef MEMBER
    {NULL}
};

PyTypeObject ActorSpecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.ActorSpecBase",
    .tp_basicsize = sizeof(ActorSpecObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of an ActorCallSpec (see shmray/_driver/actors.py).",
    .tp_base = &SpecType,
    .tp_new = ActorSpec_new,
    .tp_traverse = (traverseproc)ActorSpec_traverse,
    .tp_clear = (inquiry)ActorSpec_clear,
    .tp_dealloc = (destructor)ActorSpec_dealloc,
    .tp_members = ActorSpec_members,
};

/* ---------------------------------------------------------------- ActorStateBase */

static PyObject *ActorState_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    ActorStateObject *self = (ActorStateObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
#define NONE(f) self->f = Py_NewRef(Py_None);
    ACTOR_STATE_FIELDS(NONE)
#undef NONE
    return (PyObject *)self;
}

static int ActorState_traverse(ActorStateObject *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    ACTOR_STATE_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int ActorState_clear(ActorStateObject *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    ACTOR_STATE_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void ActorState_dealloc(ActorStateObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ActorState_clear(self);
    type->tp_free((PyObject *)self);
}

static PyMemberDef ActorState_members[] = {
#define MEMBER(f) {#f, T_OBJECT_EX, offsetof(ActorStateObject, f), 0, NULL},
    ACTOR_STATE_FIELDS(MEMBER)
#undef MEMBER
    {NULL}
};

PyTypeObject ActorStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.ActorStateBase",
    .tp_basicsize = sizeof(ActorStateObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of an ActorState that its calls' way reads (see "
              "shmray/_driver/actors.py).",
    .tp_new = ActorState_new,
    .tp_traverse = (traverseproc)ActorState_traverse,
    .tp_clear = (inquiry)ActorState_clear,
    .tp_dealloc = (destructor)ActorState_dealloc,
    .tp_members = ActorState_members,
};

/* ---------------------------------------------------------------- the call */

/* actor.state == ALIVE and not actor.ending: 1, 0, or -1 */
int actor_done_ok(LaneObject *self, PyObject *actor) {
    if (!PyObject_TypeCheck(actor, &ActorStateType)) return 0;
    ActorStateObject *a = (ActorStateObject *)actor;
    if (a->ending != Py_False) return 0;
    if (a->state == self->alive) return 1;
    return PyObject_RichCompareBool(a->state, self->alive, Py_EQ);
}

/* Does `actor` take a call at once, by ActorTable.flush's first case? Its worker
 * (a new reference) in *w if so: 1; 0 if not; -1 on an error. */
static int takes_call_now(LaneObject *self, PyObject *actor, PyObject *fn_id, PyObject **w) {
    int r = actor_done_ok(self, actor);
    if (r <= 0) return r;
    ActorStateObject *a = (ActorStateObject *)actor;
    Py_ssize_t n = PyObject_Size(a->waiting);
    if (n) return n < 0 ? -1 : 0;
    if (a->max_pending_calls != Py_None) {  /* ActorFacade.admit_call's limit */
        long most = PyLong_AsLong(a->max_pending_calls);
        if (most == -1 && PyErr_Occurred()) return -1;
        if (most > 0) return 0;
    }
    if (!PyObject_TypeCheck(a->worker, &WorkerType)) return 0;
    WorkerObject *x = (WorkerObject *)a->worker;
    r = x->gone == Py_False && x->retiring == Py_False && PyList_CheckExact(x->batch)
        ? PySet_Contains(x->fns, fn_id) : 0;
    if (r > 0) r = has_serializers(self, a->worker);
    if (r <= 0) return r;
    *w = Py_NewRef(a->worker);
    return 1;
}

/* Lane.call's part under the lock: actor `actor_id`'s method `fn_id` called with no
 * arguments. Its ObjectRef, or None (not the common call: nothing was done). */
PyObject *lane_call(LaneObject *self, PyObject *actor_id, PyObject *fn_id, PyObject *name,
                    PyObject *options) {
    int plain = plain_options(self, options);
    if (plain <= 0) return plain < 0 ? NULL : Py_NewRef(Py_None);
    if (read_options(self, options) < 0) return NULL;
    if (!PyTuple_CheckExact(self->last_request) || PyTuple_GET_SIZE(self->last_request))
        Py_RETURN_NONE;  /* (a call holds nothing: its actor does) */
    PyObject *actor = PyDict_GetItemWithError(self->actors_by_id, actor_id);
    if (!actor) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(actor);
    PyObject *w = NULL, *ref = NULL;
    int now = takes_call_now(self, actor, fn_id, &w);
    if (now <= 0) {
        Py_DECREF(actor);
        return now < 0 ? NULL : Py_NewRef(Py_None);
    }
    /* (untracked by the GC, as the lane's tasks: its cycles, through its worker's
     * inflight and its actor's line, end when it does, when the worker is removed, when
     * the actor dies, or at shutdown: ActorTable.drop_all) */
    ActorSpecObject *spec = (ActorSpecObject *)new_spec((PyTypeObject *)self->actor_spec_type);
    SpecObject *base = (SpecObject *)spec;
    if (!spec || fill_spec(self, base, fn_id, name, options, self->no_args) < 0) goto end;
    Py_SETREF(spec->actor, Py_NewRef(actor));
    Py_SETREF(spec->runnable, Py_NewRef(Py_True));  /* (no inputs) */
    if (enter_task(self, base) < 0) goto end;
    int burst = note_submit(self);
    Py_SETREF(spec->sent, Py_NewRef(Py_True));      /* ActorTable.flush */
    if (batch_task(self, w, base) < 0 || send_if_due(self, w, burst) < 0) goto end;
    ref = new_ref(self, base);
end:
    Py_XDECREF(spec);
    Py_DECREF(w);
    Py_DECREF(actor);
    return ref;
}

/* ---------------------------------------------------------------- its Done */

/* May done_here take `spec`'s Done, first in line on its actor's worker? A call the
 * driver made and sent, one return, nothing to let go of when it ends (no inputs,
 * no arguments in a segment), not cancelled: 1, 0, or -1. */
int call_done_ok(LaneObject *self, SpecObject *spec) {
    if (!PyObject_TypeCheck(spec, &ActorSpecType)) return 0;
    ActorSpecObject *call = (ActorSpecObject *)spec;
    if (call->sent != Py_True || call->creates != Py_False || spec->cancelled != Py_False ||
        spec->deps != Py_None || spec->held != Py_None || spec->pinned != Py_None ||
        spec->parent != Py_None || spec->num_returns != one)
        return 0;
    PyObject *args = spec->args_stored;  /* (SHM: its segment goes when it ends) */
    return args == self->no_args ||
           (PyTuple_Check(args) && PyTuple_GET_SIZE(args) &&
            PyLong_CheckExact(PyTuple_GET_ITEM(args, 0)) &&
            PyLong_AsLong(PyTuple_GET_ITEM(args, 0)) == INLINE_KIND);
}

/* ActorTable.call_finished for a call that was sent: its actor's count of calls done.
 * Then MessageLoop.on_done's end: an actor that began to end (or died) meanwhile, in
 * a store callback (`called`: some ran), ends once idle. */
int call_finished(LaneObject *self, WorkerObject *w, SpecObject *spec, int called) {
    PyObject *actor = ((ActorSpecObject *)spec)->actor;
    if (!PyObject_TypeCheck(actor, &ActorStateType)) {  /* (never: checked by done_here) */
        PyErr_SetString(PyExc_TypeError, "an actor's call without its ActorState");
        return -1;
    }
    ActorStateObject *a = (ActorStateObject *)actor;
    PyObject *more = PyNumber_Add(a->calls_done, one);
    if (!more) return -1;
    Py_SETREF(a->calls_done, more);
    if (!called || w->actor != actor) return 0;
    int ok = actor_done_ok(self, actor);
    if (ok != 0) return ok < 0 ? -1 : 0;
    PyObject *life = PyObject_GetAttr(self->session, s_life);
    PyObject *res = life ? PyObject_CallMethodOneArg(life, s_end_if_done, actor) : NULL;
    Py_XDECREF(life);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

/* Lane.call(actor_id, fn_id, name, options) -> ObjectRef, or None (nothing done) */
PyObject *Lane_call(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "call(actor_id, fn_id, name, options)");
        return NULL;
    }
    return lane_remote(self, args[0], args[1], args[2], args[3]);
}
