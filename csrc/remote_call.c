/* remote_call.c - RemoteBase, RemoteFunction's base: f.remote() of the common task
 * goes from the call straight to the lane, with no Python frame on the way.
 *
 * A W1 task's .remote() ran two Python frames before the lane (RemoteFunction.remote
 * and Session.submit: 47 bytecodes, a sixth of the driver's cost per task). Here
 * `remote` is a C method; it takes the call to lane_remote (csrc/lane_remote.c) when
 *   - it has no arguments, and the function takes none (`_takes_no_args`, set by
 *     RemoteFunction once its arity is known);
 *   - a lane was set (set_lane: the driver's session, from init to shutdown) and that
 *     session is the process's runtime (shmray._context.runtime: not after shutdown,
 *     nor in a process forked from the driver);
 *   - the session has the function already (Session.submit ships it the first time);
 * and lane_remote takes it (the options are plain, the session open). Every other
 * call goes to RemoteFunction._remote, the Python, which does all of it. */
#include "lane.h"
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *fn_id, *name, *options, *takes_no_args;
} RemoteObject;

static LaneObject *active_lane;   /* set_lane's, or NULL */
static PyObject *context_dict;    /* shmray._context's globals: its `runtime` */
static PyObject *s_runtime, *s__remote;

int remote_call_init_strings(void) {
    s_runtime = PyUnicode_InternFromString("runtime");
    s__remote = PyUnicode_InternFromString("_remote");
    return s_runtime && s__remote ? 0 : -1;
}

/* set_lane(lane or None): the lane .remote() takes calls to */
PyObject *set_lane(PyObject *mod, PyObject *lane) {
    if (lane != Py_None && !PyObject_TypeCheck(lane, &LaneType)) {
        PyErr_SetString(PyExc_TypeError, "set_lane(lane: Lane or None)");
        return NULL;
    }
    if (!context_dict) {
        PyObject *context = PyImport_ImportModule("shmray._context");
        if (!context) return NULL;
        context_dict = PyModule_GetDict(context);  /* (borrowed: the module lives on) */
        Py_INCREF(context_dict);
        Py_DECREF(context);
    }
    LaneObject *old = active_lane;
    active_lane = lane == Py_None ? NULL : (LaneObject *)Py_NewRef(lane);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* (see lane.h) */
LaneObject *driver_lane(int *error) {
    LaneObject *lane = active_lane;
    if (!lane) return NULL;
    PyObject *runtime = PyDict_GetItemWithError(context_dict, s_runtime);
    if (runtime == lane->session) return lane;
    *error = PyErr_Occurred() != NULL;
    return NULL;
}

/* The lane that takes this call, or NULL (borrowed; -1 in *error on an error) */
static LaneObject *lane_for(RemoteObject *self, int *error) {
    if (self->takes_no_args != Py_True || !self->fn_id || !self->name || !self->options)
        return NULL;
    LaneObject *lane = driver_lane(error);
    if (!lane) return NULL;
    int shipped = PyDict_Contains(lane->functions, self->fn_id);
    *error = shipped < 0;
    return shipped > 0 ? lane : NULL;
}

static PyObject *Remote_remote(RemoteObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    if (nargs == 0 && !kwnames) {
        int error = 0;
        LaneObject *lane = lane_for(self, &error);
        if (error) return NULL;
        if (lane) {
            Py_INCREF(lane);  /* (a shutdown from another thread may unset it meanwhile) */
            PyObject *ref = lane_remote(lane, NULL, self->fn_id, self->name, self->options);
            Py_DECREF(lane);
            if (ref != Py_None) return ref;  /* (or NULL: its error) */
            Py_DECREF(ref);
        }
    }
    return python_remote((PyObject *)self, args, nargs, kwnames);
}

/* (see lane.h) */
PyObject *python_remote(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    PyObject *slow = PyObject_GetAttr(self, s__remote);
    if (!slow) return NULL;
    PyObject *res = PyObject_Vectorcall(slow, args, nargs, kwnames);
    Py_DECREF(slow);
    return res;
}

static int Remote_traverse(RemoteObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->fn_id); Py_VISIT(self->name); Py_VISIT(self->options);
    Py_VISIT(self->takes_no_args);
    return 0;
}

static int Remote_clear(RemoteObject *self) {
    Py_CLEAR(self->fn_id); Py_CLEAR(self->name); Py_CLEAR(self->options);
    Py_CLEAR(self->takes_no_args);
    return 0;
}

static void Remote_dealloc(RemoteObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Remote_clear(self);
    type->tp_free((PyObject *)self);
}

static PyMethodDef Remote_methods[] = {
    {"remote", (PyCFunction)(void (*)(void))Remote_remote, METH_FASTCALL | METH_KEYWORDS,
     "remote(*args, **kwargs) -> ObjectRef(s): run the function as a task (see "
     "RemoteFunction._remote)"},
    {NULL}
};

static PyMemberDef Remote_members[] = {
    {"_fn_id", T_OBJECT_EX, offsetof(RemoteObject, fn_id), 0, NULL},
    {"_name", T_OBJECT_EX, offsetof(RemoteObject, name), 0, NULL},
    {"_options", T_OBJECT_EX, offsetof(RemoteObject, options), 0, NULL},
    {"_takes_no_args", T_OBJECT_EX, offsetof(RemoteObject, takes_no_args), 0, NULL},
    {NULL}
};

PyTypeObject RemoteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.RemoteBase",
    .tp_basicsize = sizeof(RemoteObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RemoteFunction's base: its .remote() in C (see csrc/remote_call.c).",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)Remote_traverse,
    .tp_clear = (inquiry)Remote_clear,
    .tp_dealloc = (destructor)Remote_dealloc,
    .tp_methods = Remote_methods,
    .tp_members = Remote_members,
};
