/* status_words.c - StatusWordsBase, the base of _status_area.WorkerStatus: a worker's
 * words and task records in its channel segment, written at each task's start and end.
 *
 * The layout is _status_area's (its docstring and _RECORD): eight u64 words at
 * `status_at` (pid, core, state, task lo, task hi, fn id, since, done), and a ring of
 * 64-byte records at `history_at` (task lo, task hi, fn id, start, end: u64; attempt:
 * u16; outcome: u8; the error's type name: 21 bytes, UTF-8, cut and zero-padded).
 * In Python, begin and end were 75 bytecodes of a worker's ~320 per task (a third of
 * a small actor call's cost is its worker's); here each is one call. */
#include "lane.h"
#include <structmember.h>
#include <string.h>

enum { W_STATE = 2, W_TASK_LO, W_TASK_HI, W_FN, W_SINCE, W_DONE };
enum { IDLE = 1, RUNNING = 2 };
#define RECORD_BYTES 64
#define ERROR_BYTES 21

typedef struct {
    PyObject_HEAD
    Py_buffer view;           /* the channel segment (its mmap), held while this lives */
    Py_ssize_t status_at, history_at, slots;
    unsigned long long done;  /* records written: W_DONE */
} StatusObject;

static int StatusWords_init(StatusObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"mm", "status_at", "history_at", "slots", NULL};
    PyObject *mm;
    Py_ssize_t status_at, history_at, slots;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Onnn", kwlist, &mm, &status_at, &history_at,
                                     &slots))
        return -1;
    if (self->view.obj) {
        PyErr_SetString(PyExc_TypeError, "StatusWordsBase: initialised already");
        return -1;
    }
    if (PyObject_GetBuffer(mm, &self->view, PyBUF_WRITABLE) < 0) return -1;
    if (status_at < 0 || slots <= 0 || history_at < status_at + 8 * (W_DONE + 1) ||
        history_at + slots * RECORD_BYTES > self->view.len || status_at % 8) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "StatusWordsBase: the words or records do not fit "
                        "the buffer");
        return -1;
    }
    self->status_at = status_at;
    self->history_at = history_at;
    self->slots = slots;
    return 0;
}

static void StatusWords_dealloc(StatusObject *self) {
    if (self->view.obj) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static uint64_t *words(StatusObject *self) {
    return (uint64_t *)((char *)self->view.buf + self->status_at);
}

static int ready(StatusObject *self) {
    if (self->view.obj) return 1;
    PyErr_SetString(PyExc_ValueError, "StatusWordsBase: not initialised");
    return 0;
}

/* an int that fits `bytes` bytes (unsigned), little-endian, into out */
static int as_bytes(PyObject *v, unsigned char *out, size_t bytes) {
    if (!PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "StatusWordsBase: ids and times are ints");
        return -1;
    }
    return _PyLong_AsByteArray((PyLongObject *)v, out, bytes, 1, 0);
}

/* begin(task_id, fn_id, now_ns): the worker runs this task since now */
static PyObject *StatusWords_begin(StatusObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "begin(task_id, fn_id, now_ns)");
        return NULL;
    }
    if (!ready(self)) return NULL;
    unsigned char task[16], fn[8], since[8];
    if (as_bytes(args[0], task, 16) < 0 || as_bytes(args[1], fn, 8) < 0 ||
        as_bytes(args[2], since, 8) < 0)
        return NULL;
    uint64_t *w = words(self);
    w[W_STATE] = RUNNING;
    memcpy(&w[W_TASK_LO], task, 16);
    memcpy(&w[W_FN], fn, 8);
    memcpy(&w[W_SINCE], since, 8);
    Py_RETURN_NONE;
}

/* end(task_id, fn_id, start, end, attempt, error): recorded, and the worker idle */
static PyObject *StatusWords_end(StatusObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "end(task_id, fn_id, start, end, attempt, error)");
        return NULL;
    }
    if (!ready(self)) return NULL;
    unsigned char record[RECORD_BYTES] = {0};
    long attempt = PyLong_AsLong(args[4]);
    if (attempt == -1 && PyErr_Occurred()) return NULL;
    if (as_bytes(args[0], record, 16) < 0 || as_bytes(args[1], record + 16, 8) < 0 ||
        as_bytes(args[2], record + 24, 8) < 0 || as_bytes(args[3], record + 32, 8) < 0)
        return NULL;
    uint16_t a = (uint16_t)attempt;
    memcpy(record + 40, &a, 2);
    PyObject *error = args[5];
    if (error != Py_None) {
        Py_ssize_t n;
        const char *text = PyUnicode_Check(error) ? PyUnicode_AsUTF8AndSize(error, &n) : NULL;
        if (!text) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "error: a str or None");
            return NULL;
        }
        record[42] = 1;  /* FAILED */
        memcpy(record + 43, text, n < ERROR_BYTES ? (size_t)n : ERROR_BYTES);
    }
    char *slot = (char *)self->view.buf + self->history_at +
                 (Py_ssize_t)(self->done % (unsigned long long)self->slots) * RECORD_BYTES;
    memcpy(slot, record, RECORD_BYTES);
    uint64_t *w = words(self);
    self->done++;
    __atomic_store_n(&w[W_DONE], self->done, __ATOMIC_RELEASE);  /* last: whole records */
    w[W_STATE] = IDLE;  /* (the task words stay: a reader ignores them when idle) */
    Py_RETURN_NONE;
}

static PyMethodDef StatusWords_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))StatusWords_begin, METH_FASTCALL,
     "begin(task_id, fn_id, now_ns): the worker runs this task since now_ns"},
    {"end", (PyCFunction)(void (*)(void))StatusWords_end, METH_FASTCALL,
     "end(task_id, fn_id, start, end, attempt, error): the task's record written (error: "
     "its exception's type name, or None), and the worker idle"},
    {NULL}
};

static PyMemberDef StatusWords_members[] = {
    {"done", T_ULONGLONG, offsetof(StatusObject, done), READONLY, "records written"},
    {NULL}
};

PyTypeObject StatusWordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmray._crecords.StatusWordsBase",
    .tp_basicsize = sizeof(StatusObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A worker's status words and task records (see csrc/status_words.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)StatusWords_init,
    .tp_dealloc = (destructor)StatusWords_dealloc,
    .tp_methods = StatusWords_methods,
    .tp_members = StatusWords_members,
};
