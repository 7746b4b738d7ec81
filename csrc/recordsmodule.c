/* recordsmodule.c - shmray._crecords: the objects made once per task, in C.
 *
 * TaskSpecBase: the fields of the driver's TaskSpec. RefBase: an ObjectRef's id and
 * the counting of its instances. Both are made and dropped once per task on the
 * driver's hot path, where each Python frame costs as much as a dict operation.
 *
 * The driver makes one TaskSpec per task. As a Python class with __slots__, its
 * __init__ ran 23 attribute stores in bytecode, about 5% of the driver's work per
 * small task; here construction is one C call. The fields are plain object slots,
 * read and written from Python exactly as __slots__ were (shmray/_driver/spec.py
 * documents them and adds the methods). The type is garbage-collected: a spec and
 * its worker handle refer to each other while it runs.
 */
#include "lane.h"
#include <structmember.h>

static PyObject *str_request, *str_num_returns, *zero;

#define SET(field, value) do { PyObject *old_ = self->field; Py_XINCREF(value); \
                               self->field = (value); Py_XDECREF(old_); } while (0)

static PyObject *Spec_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    SpecObject *self = (SpecObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    /* Every field set (None by default): T_OBJECT_EX members, like __slots__, are
     * what the interpreter's attribute caches specialise (LOAD_ATTR_SLOT). */
#define NONE(f) Py_INCREF(Py_None); self->f = Py_None;
    SPEC_FIELDS(NONE)
#undef NONE
    SET(unresolved, zero);
    SET(attempt, zero);
    SET(helping, Py_False);
    SET(queued, Py_False);
    SET(cancelled, Py_False);
    SET(pipelinable, Py_True);
    SET(simple, Py_False);
    return (PyObject *)self;
}


/* TaskSpec(task_id, fn_id, name, options, args_stored, deps, owned) */
static int Spec_init(SpecObject *self, PyObject *args, PyObject *kw) {
    PyObject *task_id, *fn_id, *name, *options, *args_stored, *deps, *owned;
    if (kw && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "TaskSpec() takes positional arguments only");
        return -1;
    }
    if (!PyArg_UnpackTuple(args, "TaskSpec", 7, 7, &task_id, &fn_id, &name, &options,
                           &args_stored, &deps, &owned))
        return -1;
    PyObject *request = PyObject_GetAttr(options, str_request);
    if (!request) return -1;
    PyObject *num_returns = PyObject_GetAttr(options, str_num_returns);
    if (!num_returns) { Py_DECREF(request); return -1; }
    SET(task_id, task_id);
    SET(fn_id, fn_id);
    SET(name, name);
    SET(options, options);
    SET(request, request);
    SET(num_returns, num_returns);
    SET(args_stored, args_stored);
    SET(deps, deps);
    SET(owned, owned);
    SET(queue, request); /* its queue in the scheduler: the request (and env, if any) */
    Py_DECREF(request);
    Py_DECREF(num_returns);
    return 0;
}

static int Spec_traverse(SpecObject *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    SPEC_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int Spec_clear(SpecObject *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    SPEC_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void Spec_dealloc(SpecObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Spec_clear(self);
    type->tp_free((PyObject *)self);
}

static PyMemberDef Spec_members[] = {
#define MEMBER(f) {#f, T_OBJECT_EX, offsetof(SpecObject, f), 0, NULL},
    SPEC_FIELDS(MEMBER)
#undef MEMBER
    {NULL}
};

PyTypeObject SpecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.TaskSpecBase",
    .tp_basicsize = sizeof(SpecObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of a TaskSpec (see shmray/_driver/spec.py).",
    .tp_new = Spec_new,
    .tp_init = (initproc)Spec_init,
    .tp_traverse = (traverseproc)Spec_traverse,
    .tp_clear = (inquiry)Spec_clear,
    .tp_dealloc = (destructor)Spec_dealloc,
    .tp_members = Spec_members,
};

/* ---------------------------------------------------------------- RefBase
 *
 * shmray._object_ref.ObjectRef's base: the `_id` field, and the counting hooks
 * (`_hooks.created`, `_hooks.dropped`, read from the hooks object set_hooks() was
 * given, so the runtime installs them as before). As a Python class, making one ran
 * an __init__ frame and dropping one a __del__ frame; here neither runs bytecode, so
 * a Ctrl-C can never land inside a drop (the hook, a deque's append, is C as well).
 * Never garbage-collected: it holds an int only (see Ref_new). */
static PyObject *hooks, *str_created, *str_dropped;

static int call_hook(PyObject *name, PyObject *oid) {
    if (!hooks) return 0;
    PyObject *hook = PyObject_GetAttr(hooks, name);
    if (!hook) return -1;
    int r = 0;
    if (hook != Py_None) {
        PyObject *res = PyObject_CallOneArg(hook, oid);
        if (res) Py_DECREF(res); else r = -1;
    }
    Py_DECREF(hook);
    return r;
}

/* An ObjectRef holds an int and can be in no cycle, but a Python subclass of any type
 * is garbage-collected: untracked here, the collector never visits one (a full
 * collection with 1,000,000 refs alive took 85-140 ms). */
static PyObject *Ref_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *self = type->tp_alloc(type, 0);
    if (self && PyObject_IS_GC(self)) PyObject_GC_UnTrack(self);
    return self;
}

/* ObjectRef(oid, _counted=False): `_counted`, the runtime counted this instance
 * already (a submit's or put's returned handle): the `created` hook is skipped. */
static int Ref_init(RefObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"oid", "_counted", NULL};
    PyObject *oid;
    int counted = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (!kw && (n == 1 || n == 2)) { /* the hot path: positional */
        oid = PyTuple_GET_ITEM(args, 0);
        if (n == 2 && (counted = PyObject_IsTrue(PyTuple_GET_ITEM(args, 1))) < 0) return -1;
    } else if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &oid, &counted)) {
        return -1;
    }
    if (self->id) {
        PyErr_SetString(PyExc_TypeError, "ObjectRef is already initialised");
        return -1;
    }
    Py_INCREF(oid);
    self->id = oid;
    return counted ? 0 : call_hook(str_created, oid);
}

/* The drop is counted here, in tp_dealloc (a Python subclass's dealloc calls it once;
 * a tp_finalize would run twice for a type outside the garbage collector). The
 * hook gets the id, never the instance: nothing can resurrect it. */
static void Ref_dealloc(RefObject *self) {
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    PyObject *oid = self->id;
    self->id = NULL;
    if (oid) { /* (None when made by __new__ alone: never counted) */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (call_hook(str_dropped, oid) < 0) PyErr_WriteUnraisable(oid);
        PyErr_Restore(type, value, tb);
        Py_DECREF(oid);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Ref_members[] = {
    {"_id", T_OBJECT_EX, offsetof(RefObject, id), READONLY, "the object's id (an int)"},
    {NULL}
};

PyTypeObject RefType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.RefBase",
    .tp_basicsize = sizeof(RefObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ObjectRef's id and instance counting (see shmray/_object_ref.py).",
    .tp_new = Ref_new,
    .tp_init = (initproc)Ref_init,
    .tp_dealloc = (destructor)Ref_dealloc,
    .tp_weaklistoffset = offsetof(RefObject, weakrefs),
    .tp_members = Ref_members,
};

/* ---------------------------------------------------------------- WorkerBase
 *
 * shmray._worker_pool.WorkerHandle's base: the fields the lane (lane.c, lane_done.c)
 * reads and writes for every task, as a struct it reaches without an attribute
 * lookup. From Python they read and write as __slots__ would; None by default
 * (tasks_done 0, idle_since 0.0: WorkerHandle.__init__ sets them all). */
static PyObject *Worker_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    WorkerObject *self = (WorkerObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
#define NONE(f) Py_INCREF(Py_None); self->f = Py_None;
    WORKER_FIELDS(NONE)
#undef NONE
    Py_INCREF(zero);
    Py_SETREF(self->tasks_done, zero);
    return (PyObject *)self;
}

static int Worker_traverse(WorkerObject *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    WORKER_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int Worker_clear(WorkerObject *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    WORKER_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void Worker_dealloc(WorkerObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Worker_clear(self);
    type->tp_free((PyObject *)self);
}

static PyMemberDef Worker_members[] = {
#define MEMBER(f) {#f, T_OBJECT_EX, offsetof(WorkerObject, f), 0, NULL},
    WORKER_FIELDS(MEMBER)
#undef MEMBER
    {"idle_since", T_DOUBLE, offsetof(WorkerObject, idle_since), 0, NULL},
    {NULL}
};

PyTypeObject WorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.WorkerBase",
    .tp_basicsize = sizeof(WorkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of a WorkerHandle the lane reads (see shmray/_worker_pool.py).",
    .tp_new = Worker_new,
    .tp_traverse = (traverseproc)Worker_traverse,
    .tp_clear = (inquiry)Worker_clear,
    .tp_dealloc = (destructor)Worker_dealloc,
    .tp_members = Worker_members,
};

static PyObject *set_hooks(PyObject *mod, PyObject *obj) {
    Py_INCREF(obj);
    Py_XSETREF(hooks, obj);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_hooks", set_hooks, METH_O,
     "set_hooks(hooks): the object whose `created` and `dropped` attributes RefBase calls"},
    {"new_base_id", new_base_id, METH_NOARGS, "new_base_id(): a fresh task or put id"},
    {"pack_done", (PyCFunction)(void (*)(void))pack_done, METH_FASTCALL,
     "pack_done(task_id, outcome, start, end, inner, gpu, retryable, limit) -> a Done's "
     "compact form (csrc/lane_done.c), or None if it has none"},
    {"unpack_done", unpack_done, METH_O,
     "unpack_done(data) -> the Done record's tuple of a compact Done, or None"},
    {"inline_values", (PyCFunction)(void (*)(void))inline_values, METH_FASTCALL,
     "inline_values(refs, stored, ref_type, loads) -> the values, if every ref's stored "
     "form is small and inline (else None)"},
    {"first_other", (PyCFunction)(void (*)(void))first_other, METH_FASTCALL,
     "first_other(items: list, type) -> the index of the first item not exactly of type, "
     "or -1"},
    {"not_stored", (PyCFunction)(void (*)(void))not_stored, METH_FASTCALL,
     "not_stored(refs, ref_type, pending, values) -> the ids of the refs not stored yet "
     "(None: one is lost)"},
    {"pack_tasks", (PyCFunction)(void (*)(void))pack_tasks, METH_FASTCALL,
     "pack_tasks(batch, limit) -> a batch of plain task records in the compact form "
     "(csrc/task_form.c), or None"},
    {"unpack_tasks", unpack_tasks, METH_O,
     "unpack_tasks(data) -> the Tasks record's tuple of a compact Tasks message, or None"},
    {"set_none_stored", set_none_stored, METH_O,
     "set_none_stored(stored): the one stored form of None (unpack_done gives it)"},
    {"set_lane", set_lane, METH_O,
     "set_lane(lane or None): the lane RemoteBase.remote takes f.remote() to (see "
     "csrc/remote_call.c)"},
    {"pack_item", (PyCFunction)(void (*)(void))pack_item, METH_FASTCALL,
     "pack_item(task_id, index, stored, inner, gpu, limit) -> a generator item's compact "
     "form (csrc/item_form.c), or None if it has none"},
    {"unpack_item", unpack_item, METH_O,
     "unpack_item(data) -> the GenItem record's tuple of a compact item, or None"},
    {"set_method_type", set_method_type, METH_O,
     "set_method_type(ActorMethod): what an ActorHandleBase's method attribute makes (see "
     "csrc/actor_method.c)"},
    {"stream_item_id", (PyCFunction)(void (*)(void))stream_item_id, METH_FASTCALL,
     "stream_item_id(task_id, index): the id of a streaming generator's item"},
    {"reset_ids", reset_ids, METH_O,
     "reset_ids(prefix): this process's id prefix (bits 16-60); the counter starts again"},
    {NULL}
};

static struct PyModuleDef records_module = {
    PyModuleDef_HEAD_INIT, "shmray._crecords",
    "The objects made once per task, in C: TaskSpec's fields, ObjectRef's id.", -1,
    module_methods,
};

static int add_type(PyObject *m, const char *name, PyTypeObject *type) {
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__crecords(void) {
    str_request = PyUnicode_InternFromString("request");
    str_num_returns = PyUnicode_InternFromString("num_returns");
    str_created = PyUnicode_InternFromString("created");
    str_dropped = PyUnicode_InternFromString("dropped");
    zero = PyLong_FromLong(0);
    if (!str_request || !str_num_returns || !str_created || !str_dropped || !zero) return NULL;
    if (lane_init_strings() < 0) return NULL;
    if (PyType_Ready(&SpecType) < 0 || PyType_Ready(&RefType) < 0 || PyType_Ready(&LaneType) < 0 ||
        PyType_Ready(&WorkerType) < 0 || PyType_Ready(&RemoteType) < 0 ||
        PyType_Ready(&SectionsType) < 0 || PyType_Ready(&LockType) < 0 ||
        PyType_Ready(&ActorSpecType) < 0 || PyType_Ready(&HandleType) < 0 ||
        PyType_Ready(&MethodType) < 0 || PyType_Ready(&CallsType) < 0 ||
        PyType_Ready(&StatusWordsType) < 0 || PyType_Ready(&ActorStateType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&records_module);
    if (!m) return NULL;
    if (add_type(m, "TaskSpecBase", &SpecType) < 0 || add_type(m, "RefBase", &RefType) < 0 ||
        add_type(m, "Lane", &LaneType) < 0 || add_type(m, "WorkerBase", &WorkerType) < 0 ||
        add_type(m, "RemoteBase", &RemoteType) < 0 || add_type(m, "SectionsBase", &SectionsType) < 0 ||
        add_type(m, "Lock", &LockType) < 0 || add_type(m, "ActorSpecBase", &ActorSpecType) < 0 ||
        add_type(m, "ActorHandleBase", &HandleType) < 0 ||
        add_type(m, "ActorMethodBase", &MethodType) < 0 ||
        add_type(m, "MethodCallsBase", &CallsType) < 0 ||
        add_type(m, "StatusWordsBase", &StatusWordsType) < 0 ||
        add_type(m, "ActorStateBase", &ActorStateType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
