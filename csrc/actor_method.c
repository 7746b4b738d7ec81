/* actor_method.c - `handle.f.remote()` from the call to the lane, in C: the bases of
 * shmray.actor's ActorHandle, ActorMethod and _MethodCalls.
 *
 * A W11 call ran four Python frames before the driver's lane (ActorHandle.__getattr__,
 * ActorMethod.__init__, ActorMethod.remote, Session.submit_call: a hundred bytecodes,
 * as many as the rest of the call). Here:
 *   - ActorHandleBase: `handle.f` finds f's _MethodCalls in the handle's `_methods`
 *     (its class's methods, by name) and makes the ActorMethod, once the ordinary
 *     lookup found nothing; a name never called before goes to the Python
 *     (ActorHandle._missing), which adds it there or raises AttributeError.
 *   - ActorMethodBase: `.remote()` with no arguments, of a method that takes none
 *     (`no_args`: set once a call without arguments passed the arity check), in the
 *     driver's session (driver_lane), goes to lane_remote (Lane.call's way: see
 *     actor_call.c). Every other call goes to ActorMethod._remote, the Python.
 *   - MethodCallsBase: the fields of _MethodCalls, read here without a lookup. */
#include "lane.h"
#include <structmember.h>

static PyObject *s__missing;
static PyTypeObject *method_type;  /* shmray.actor.ActorMethod (set_method_type) */

int actor_method_init_strings(void) {
    s__missing = PyUnicode_InternFromString("_missing");
    return s__missing ? 0 : -1;
}

/* set_method_type(ActorMethod): what `handle.f` makes */
PyObject *set_method_type(PyObject *mod, PyObject *type) {
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &MethodType)) {
        PyErr_SetString(PyExc_TypeError, "set_method_type(a subclass of ActorMethodBase)");
        return NULL;
    }
    Py_XSETREF(method_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

/* A C type of object fields only: traverse, clear and dealloc walk its FIELDS list */
#define OBJECT_FIELDS_TYPE(Name, FIELDS)                                                    \
    static int Name##_traverse(Name##Object *self, visitproc visit, void *arg) {           \
        FIELDS(VISIT_FIELD)                                                                 \
        return 0;                                                                           \
    }                                                                                       \
    static int Name##_clear(Name##Object *self) {                                           \
        FIELDS(CLEAR_FIELD)                                                                 \
        return 0;                                                                           \
    }                                                                                       \
    static void Name##_dealloc(Name##Object *self) {                                        \
        PyTypeObject *type = Py_TYPE(self);                                                 \
        PyObject_GC_UnTrack(self);                                                          \
        Name##_clear(self);                                                                 \
        type->tp_free((PyObject *)self);                                                    \
    }
#define VISIT_FIELD(f, name) Py_VISIT(self->f);
#define CLEAR_FIELD(f, name) Py_CLEAR(self->f);
#define MEMBER(f, name) {name, T_OBJECT_EX, offsetof(CURRENT, f), 0, NULL},

/* ---------------------------------------------------------------- MethodCallsBase */

typedef struct {
    PyObject_HEAD
    PyObject *info, *options, *arity, *shapes, *fn_id, *name, *no_args;
} CallsObject;
#define CALLS_FIELDS(X) X(info, "info") X(options, "options") X(arity, "arity")                \
    X(shapes, "shapes") X(fn_id, "fn_id") X(name, "name") X(no_args, "no_args")
OBJECT_FIELDS_TYPE(Calls, CALLS_FIELDS)
#define CURRENT CallsObject
static PyMemberDef Calls_members[] = {CALLS_FIELDS(MEMBER) {NULL}};
#undef CURRENT

PyTypeObject CallsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.MethodCallsBase",
    .tp_basicsize = sizeof(CallsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of shmray.actor._MethodCalls.",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)Calls_traverse,
    .tp_clear = (inquiry)Calls_clear,
    .tp_dealloc = (destructor)Calls_dealloc,
    .tp_members = Calls_members,
};

/* ---------------------------------------------------------------- ActorMethodBase */

typedef struct {
    PyObject_HEAD
    PyObject *handle, *calls;
} MethodObject;
#define METHOD_FIELDS(X) X(handle, "_handle") X(calls, "_calls")
OBJECT_FIELDS_TYPE(Method, METHOD_FIELDS)
#define CURRENT MethodObject
static PyMemberDef Method_members[] = {METHOD_FIELDS(MEMBER) {NULL}};
#undef CURRENT

typedef struct {
    PyObject_HEAD
    PyObject *state, *token, *methods;
} HandleObject;

/* The call, by the lane if it takes it: its ObjectRef; None if not (nothing done) */
static PyObject *call_by_lane(MethodObject *self) {
    CallsObject *calls = (CallsObject *)self->calls;
    int error = 0;
    if (!calls || !PyObject_TypeCheck(calls, &CallsType) || calls->no_args != Py_True ||
        !calls->fn_id || !calls->name || !calls->options || !self->handle ||
        !PyObject_TypeCheck(self->handle, &HandleType))
        Py_RETURN_NONE;
    PyObject *state = ((HandleObject *)self->handle)->state;  /* (HandleState: actor_id first) */
    LaneObject *lane = driver_lane(&error);
    if (error) return NULL;
    if (!lane || !state || !PyTuple_Check(state) || !PyTuple_GET_SIZE(state)) Py_RETURN_NONE;
    Py_INCREF(lane);  /* (a shutdown from another thread may unset it meanwhile) */
    PyObject *ref = lane_remote(lane, PyTuple_GET_ITEM(state, 0), calls->fn_id, calls->name,
                                calls->options);
    Py_DECREF(lane);
    return ref;
}

static PyObject *Method_remote(MethodObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    if (nargs == 0 && !kwnames) {
        PyObject *ref = call_by_lane(self);
        if (ref != Py_None) return ref;  /* (or NULL: its error) */
        Py_DECREF(ref);
    }
    return python_remote((PyObject *)self, args, nargs, kwnames);
}

static PyMethodDef Method_methods[] = {
    {"remote", (PyCFunction)(void (*)(void))Method_remote, METH_FASTCALL | METH_KEYWORDS,
     "remote(*args, **kwargs) -> ObjectRef(s): call the method (see ActorMethod._remote)"},
    {NULL}
};

PyTypeObject MethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.ActorMethodBase",
    .tp_basicsize = sizeof(MethodObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ActorMethod's base: its .remote() in C (see csrc/actor_method.c).",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)Method_traverse,
    .tp_clear = (inquiry)Method_clear,
    .tp_dealloc = (destructor)Method_dealloc,
    .tp_methods = Method_methods,
    .tp_members = Method_members,
};

/* ---------------------------------------------------------------- ActorHandleBase */

#define HANDLE_FIELDS(X) X(state, "_state") X(token, "_ray_token") X(methods, "_methods")
OBJECT_FIELDS_TYPE(Handle, HANDLE_FIELDS)
#define CURRENT HandleObject
static PyMemberDef Handle_members[] = {HANDLE_FIELDS(MEMBER) {NULL}};
#undef CURRENT

/* `handle.name`: an attribute of the handle; else the ActorMethod of its method `name` */
static PyObject *Handle_getattro(HandleObject *self, PyObject *name) {
    /* (suppress=1: a name that is not there sets no AttributeError, which would cost
     * more than the rest of the call; as CPython's own __getattr__ hook does) */
    PyObject *res = _PyObject_GenericGetAttrWithDict((PyObject *)self, name, NULL, 1);
    if (res || PyErr_Occurred()) return res;
    if (!self->state || !self->methods || !PyDict_CheckExact(self->methods)) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%U'",
                     Py_TYPE(self)->tp_name, name);
        return NULL;
    }
    PyObject *calls = PyDict_GetItemWithError(self->methods, name);
    if (!calls || !method_type)  /* a method not called before: the Python adds it */
        return PyErr_Occurred() ? NULL
                                : PyObject_CallMethodOneArg((PyObject *)self, s__missing, name);
    MethodObject *m = (MethodObject *)method_type->tp_alloc(method_type, 0);
    if (!m) return NULL;
    m->handle = Py_NewRef(self);
    m->calls = Py_NewRef(calls);
    return (PyObject *)m;
}

PyTypeObject HandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.ActorHandleBase",
    .tp_basicsize = sizeof(HandleObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ActorHandle's base: its methods as attributes (see csrc/actor_method.c).",
    .tp_new = PyType_GenericNew,
    .tp_getattro = (getattrofunc)Handle_getattro,
    .tp_traverse = (traverseproc)Handle_traverse,
    .tp_clear = (inquiry)Handle_clear,
    .tp_dealloc = (destructor)Handle_dealloc,
    .tp_members = Handle_members,
};
