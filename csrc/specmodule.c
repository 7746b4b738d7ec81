/* specmodule.c - shmray._cspec: the fields of the driver's TaskSpec, as a C type.
 *
 * The driver makes one TaskSpec per task. As a Python class with __slots__, its
 * __init__ ran 23 attribute stores in bytecode, about 5% of the driver's work per
 * small task; here construction is one C call. The fields are plain object slots,
 * read and written from Python exactly as __slots__ were (shmray/_driver/spec.py
 * documents them and adds the methods). The type is garbage-collected: a spec and
 * its worker handle refer to each other while it runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

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

static PyObject *str_request, *str_num_returns, *zero;

static PyObject *Spec_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    SpecObject *self = (SpecObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    /* the defaults that are not None (a field left NULL reads as None) */
    Py_INCREF(zero); self->unresolved = zero;
    Py_INCREF(zero); self->attempt = zero;
    Py_INCREF(Py_False); self->helping = Py_False;
    Py_INCREF(Py_False); self->queued = Py_False;
    Py_INCREF(Py_False); self->cancelled = Py_False;
    Py_INCREF(Py_True); self->pipelinable = Py_True;
    Py_INCREF(Py_False); self->simple = Py_False;
    return (PyObject *)self;
}

#define SET(field, value) do { PyObject *old_ = self->field; Py_XINCREF(value); \
                               self->field = (value); Py_XDECREF(old_); } while (0)

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
#define MEMBER(f) {#f, T_OBJECT, offsetof(SpecObject, f), 0, NULL},
    SPEC_FIELDS(MEMBER)
#undef MEMBER
    {NULL}
};

static PyTypeObject SpecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._cspec.TaskSpecBase",
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

static struct PyModuleDef spec_module = {
    PyModuleDef_HEAD_INIT, "shmray._cspec",
    "The driver's per-task record (TaskSpec) fields, as a C type.", -1, NULL,
};

PyMODINIT_FUNC PyInit__cspec(void) {
    str_request = PyUnicode_InternFromString("request");
    str_num_returns = PyUnicode_InternFromString("num_returns");
    zero = PyLong_FromLong(0);
    if (!str_request || !str_num_returns || !zero) return NULL;
    if (PyType_Ready(&SpecType) < 0) return NULL;
    PyObject *m = PyModule_Create(&spec_module);
    if (!m) return NULL;
    Py_INCREF(&SpecType);
    if (PyModule_AddObject(m, "TaskSpecBase", (PyObject *)&SpecType) < 0) {
        Py_DECREF(&SpecType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
