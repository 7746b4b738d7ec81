/* inline_values.c - a driver's `get` of many refs, in C: which are not stored yet
 * (not_stored), and what it returns when their values are small and inline
 * (inline_values: _serialization.values_of's first case).
 *
 * A get of many small results read each one in a loop of bytecode. Here: one pass to
 * check that every item is an ObjectRef whose stored form is inline without
 * out-of-band buffers (else None: values_of does it all, errors included, and no
 * value has been unpickled twice), one pass to unpickle them. None's one stored
 * form (set_none_stored) is None without unpickling. */
#include "lane.h"

extern PyObject *none_stored_form;

static int is_inline(PyObject *stored) {
    if (stored == none_stored_form) return 1;
    return PyTuple_CheckExact(stored) && PyTuple_GET_SIZE(stored) == 3 &&
           PyLong_CheckExact(PyTuple_GET_ITEM(stored, 0)) &&
           PyLong_AsLong(PyTuple_GET_ITEM(stored, 0)) == INLINE_KIND &&
           PyBytes_CheckExact(PyTuple_GET_ITEM(stored, 1)) &&
           PyTuple_CheckExact(PyTuple_GET_ITEM(stored, 2)) &&
           PyTuple_GET_SIZE(PyTuple_GET_ITEM(stored, 2)) == 0;
}

/* inline_values(refs: list, stored: dict, ref_type, loads) -> list, or None */
PyObject *inline_values(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_Check(args[1]) ||
        !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "inline_values(refs: list, stored: dict, ref_type, loads)");
        return NULL;
    }
    PyObject *refs = args[0], *stored = args[1], *loads = args[3];
    PyTypeObject *ref_type = (PyTypeObject *)args[2];
    Py_ssize_t n = PyList_GET_SIZE(refs);
    if (!PyType_IsSubtype(ref_type, &RefType)) {
        PyErr_SetString(PyExc_TypeError, "ref_type must be a RefBase subclass");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(refs, i);
        if (Py_TYPE(r) != ref_type || !((RefObject *)r)->id) Py_RETURN_NONE;
        PyObject *s = PyDict_GetItemWithError(stored, ((RefObject *)r)->id);
        if (!s || !is_inline(s)) {
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;  /* (not stored: values_of raises its KeyError) */
        }
    }
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* (the list and the dict may have changed while a value was unpickled) */
        PyObject *r = i < PyList_GET_SIZE(refs) ? PyList_GET_ITEM(refs, i) : NULL;
        PyObject *s = r && Py_TYPE(r) == ref_type
                      ? PyDict_GetItemWithError(stored, ((RefObject *)r)->id) : NULL;
        PyObject *value;
        if (!s || !is_inline(s)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "get: the refs changed while read");
            value = NULL;
        } else if (s == none_stored_form) {
            Py_INCREF(Py_None);
            value = Py_None;
        } else {
            Py_INCREF(s);  /* (the dict's entry may go while its pickle is read) */
            value = PyObject_CallOneArg(loads, PyTuple_GET_ITEM(s, 1));
            Py_DECREF(s);
        }
        if (!value) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, value);
    }
    return out;
}

/* not_stored(refs: list, ref_type, pending: set, values: dict) -> list, or None
 * The ids of the refs (items of ref_type; others are skipped) whose values are not
 * stored yet, in order; None if one is neither stored nor pending (lost: the caller
 * finds it and raises). `pending` is read before `values` (ObjectStore.put stores a
 * value before its id leaves pending: see coming_or_there). */
PyObject *not_stored(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyType_Check(args[1]) ||
        !PyAnySet_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "not_stored(refs: list, ref_type, pending, values)");
        return NULL;
    }
    PyObject *refs = args[0], *pending = args[2], *values = args[3];
    PyTypeObject *ref_type = (PyTypeObject *)args[1];
    if (!PyType_IsSubtype(ref_type, &RefType)) {
        PyErr_SetString(PyExc_TypeError, "ref_type must be a RefBase subclass");
        return NULL;
    }
    PyObject *missing = PyList_New(0);
    if (!missing) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++) {
        PyObject *r = PyList_GET_ITEM(refs, i);
        if (Py_TYPE(r) != ref_type || !((RefObject *)r)->id) continue;
        PyObject *oid = ((RefObject *)r)->id;
        int coming = PySet_Contains(pending, oid);
        int there = coming < 0 ? -1 : PyDict_Contains(values, oid);
        if (there < 0) { Py_DECREF(missing); return NULL; }
        if (there) continue;
        if (!coming) { Py_DECREF(missing); Py_RETURN_NONE; }
        if (PyList_Append(missing, oid) < 0) { Py_DECREF(missing); return NULL; }
    }
    return missing;
}

/* first_other(items: list, type) -> the index of the first item not exactly of `type`,
 * or -1: get's check that it was given ObjectRefs, without a bytecode per ref */
PyObject *first_other(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "first_other(items: list, type)");
        return NULL;
    }
    PyObject *items = args[0];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++)
        if ((PyObject *)Py_TYPE(PyList_GET_ITEM(items, i)) != args[1]) return PyLong_FromSsize_t(i);
    return PyLong_FromLong(-1);
}
