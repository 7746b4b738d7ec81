/* item_form.c - a streaming generator's item in its compact form on the wire, and its
 * handling in the driver the short way (lane_item: Lane.drain calls it).
 *
 * A worker sends an item as a pickled GenItem record. One that is a small inline value
 * (no out-of-band buffers, no refs inside, no GPU arrays) travels in this form, which
 * neither side pickles:
 *
 *     byte 0       ITEM_MARK (_protocol.ITEM_MARK; a pickle begins with 0x80)
 *     bytes 1-16   the generator task's id, unsigned, little-endian
 *     bytes 17-24  the item's index, unsigned, little-endian
 *     bytes 25-    the item's pickle (its INLINE stored form's bytes)
 *
 * _ring.decode turns it back into the GenItem record's tuple (unpack_item), so every
 * reader that is not the lane sees the record as before. In the driver, lane_item does
 * what MessageLoop.on_gen_item, GeneratorTable.on_item and _append and ObjectStore.put
 * do for it, in their order, when its stream takes it now (the next item of a stream
 * that has not ended); anything else is the Python's. */
#include "lane.h"
#include <string.h>

#define ITEM_MARK 0x04
#define HEAD 25
#define GEN_ITEM_KIND 27  /* _protocol.GEN_ITEM (tests/test_lane_forms.py checks both) */

static PyObject *s_ended, *s_produced, *s_gap, *s_last_item;

int item_form_init_strings(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(s_ended, "ended") S(s_produced, "produced") S(s_gap, "gap") S(s_last_item, "last_item")
#undef S
    return 0;
}

/* pack_item(task_id, index, stored, inner, gpu, limit) -> bytes, or None when the item
 * has no compact form (or it would exceed `limit`) */
PyObject *pack_item(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "pack_item(task_id, index, stored, inner, gpu, limit)");
        return NULL;
    }
    PyObject *task_id = args[0], *stored = args[2];
    int inner = PyObject_IsTrue(args[3]), gpu = PyObject_IsTrue(args[4]);
    if (inner < 0 || gpu < 0) return NULL;
    if (inner || gpu || !PyLong_CheckExact(task_id) || !PyLong_CheckExact(args[1]) ||
        !PyTuple_CheckExact(stored) || PyTuple_GET_SIZE(stored) != 3 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(stored, 0)) ||
        PyLong_AsLong(PyTuple_GET_ITEM(stored, 0)) != INLINE_KIND ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(stored, 1)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(stored, 2)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(stored, 2)) != 0)
        goto no;
    PyObject *pickle = PyTuple_GET_ITEM(stored, 1);
    Py_ssize_t size = HEAD + PyBytes_GET_SIZE(pickle), limit = PyLong_AsSsize_t(args[5]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (size > limit) goto no;
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (!data) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(data);
    p[0] = ITEM_MARK;
    if (_PyLong_AsByteArray((PyLongObject *)task_id, p + 1, 16, 1, 0) < 0 ||
        _PyLong_AsByteArray((PyLongObject *)args[1], p + 17, 8, 1, 0) < 0) {
        Py_DECREF(data);  /* negative, or too wide: not an id or an index of ours */
        PyErr_Clear();
        goto no;
    }
    memcpy(p + HEAD, PyBytes_AS_STRING(pickle), PyBytes_GET_SIZE(pickle));
    return data;
no:
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* Is `data` a compact item? Its fields if so (the pickle: into a DoneForm's) */
static int read_item(PyObject *data, DoneForm *form) {
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < HEAD) return 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (p[0] != ITEM_MARK) return 0;
    form->pickle = p + HEAD;
    form->pickle_size = PyBytes_GET_SIZE(data) - HEAD;
    form->start = form->end = 0;
    return 1;
}

static PyObject *index_of(PyObject *data) {
    return _PyLong_FromByteArray((const unsigned char *)PyBytes_AS_STRING(data) + 17, 8, 1, 0);
}

/* unpack_item(data) -> the GenItem record's tuple, or None when `data` is not one */
PyObject *unpack_item(PyObject *mod, PyObject *data) {
    DoneForm form;
    if (!read_item(data, &form) || !none_stored_form) Py_RETURN_NONE;
    PyObject *task_id = task_id_of(data), *index = index_of(data);
    PyObject *stored = task_id && index ? stored_form(&form, none_stored_form) : NULL;
    PyObject *kind = PyLong_FromLong(GEN_ITEM_KIND), *msg = NULL;
    if (stored && kind)
        msg = PyTuple_Pack(6, kind, task_id, index, stored, Py_None, Py_None);
    Py_XDECREF(task_id); Py_XDECREF(index); Py_XDECREF(stored); Py_XDECREF(kind);
    return msg;
}

/* The stream's bookkeeping of an item that came (GeneratorTable._append's): the mean
 * gap between items, when the latest came, and the count produced */
static int note_item(PyObject *s, unsigned long long produced) {
    double now = monotonic_seconds();
    PyObject *gap = PyObject_GetAttr(s, s_gap), *last = gap ? PyObject_GetAttr(s, s_last_item) : NULL;
    double g = gap ? PyFloat_AsDouble(gap) : -1.0, l = last ? PyFloat_AsDouble(last) : -1.0;
    Py_XDECREF(gap);
    Py_XDECREF(last);
    if (PyErr_Occurred()) return -1;
    if (produced) g += ((now - l) - g) * 0.25;
    PyObject *vg = PyFloat_FromDouble(g), *vl = PyFloat_FromDouble(now);
    PyObject *vp = PyLong_FromUnsignedLongLong(produced + 1);
    int r = vg && vl && vp && PyObject_SetAttr(s, s_gap, vg) == 0 &&
            PyObject_SetAttr(s, s_last_item, vl) == 0 ? 0 : -1;
    Py_XDECREF(vg); Py_XDECREF(vl);
    if (r == 0) r = PyObject_SetAttr(s, s_produced, vp);
    Py_XDECREF(vp);
    return r;
}

/* A message popped from w's result ring: 1 if it was a compact item that its stream
 * takes now, handled here, its id in *stored_oid (the caller runs the store's callbacks
 * of it); 0 if not (nothing was done: the Python's); -1 on an error. `values` and
 * `pending`: the store's tables, as the caller read them for this drain. */
int lane_item(LaneObject *self, PyObject *w, PyObject *data, PyObject *values,
              PyObject *pending, PyObject **stored_oid) {
    DoneForm form;
    if (!read_item(data, &form) || !PyObject_TypeCheck(w, &WorkerType) ||
        ((WorkerObject *)w)->gone != Py_False)
        return 0;
    PyObject *task_id = task_id_of(data);
    if (!task_id) return -1;
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(data) + 17;
    unsigned long long index = 0;
    for (int i = 7; i >= 0; i--) index = index << 8 | at[i];
    PyObject *s = PyDict_GetItemWithError(self->streams, task_id), *produced = NULL;
    int r = s ? 1 : PyErr_Occurred() ? -1 : 0;
    if (r > 0) {
        Py_INCREF(s);
        PyObject *ended = PyObject_GetAttr(s, s_ended);
        produced = ended ? PyObject_GetAttr(s, s_produced) : NULL;
        r = !produced ? -1 : ended != Py_False ? 0 :
            PyLong_AsUnsignedLongLong(produced) == index ? 1 : PyErr_Occurred() ? -1 : 0;
        Py_XDECREF(ended);
    }
    PyObject *oid = NULL, *next = NULL, *stored = NULL;
    if (r > 0) {  /* GeneratorTable._append, in its order */
        oid = item_id(task_id, index);
        next = oid ? item_id(task_id, index + 1) : NULL;  /* pending first: see _append */
        r = next && PySet_Add(pending, next) == 0 ? 1 : -1;
    }
    if (r > 0) {  /* the stream holds it until it is handed out (store.need) */
        PyObject *count = PyDict_GetItemWithError(self->needed, oid);
        long n = count ? PyLong_AsLong(count) : 0;
        PyObject *v = PyErr_Occurred() ? NULL : PyLong_FromLong(n + 1);
        r = v && PyDict_SetItem(self->needed, oid, v) == 0 ? 1 : -1;
        Py_XDECREF(v);
    }
    /* ObjectStore.put: held (just needed), so the value, then out of pending */
    if (r > 0 && (!(stored = stored_form(&form, self->none_stored)) ||
                  PyDict_SetItem(values, oid, stored) < 0 || PySet_Discard(pending, oid) < 0))
        r = -1;
    if (r > 0 && note_item(s, index) < 0) r = -1;
    Py_XDECREF(stored); Py_XDECREF(next); Py_XDECREF(produced); Py_XDECREF(s);
    Py_DECREF(task_id);
    if (r > 0)
        *stored_oid = oid;
    else
        Py_XDECREF(oid);
    return r;
}
