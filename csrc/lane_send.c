/* lane_send.c - Dispatcher.send_batch and push_batches for batches of plain tasks, in C.
 *
 * A worker's batch goes as one compact Tasks message (task_form.c): in W1, one per 16
 * tasks, from the lane's submissions and from its dispatch of queued tasks. The Python
 * (_driver/dispatch.py) stays the reference, and sends every batch that has no compact
 * form (a task of another kind among them). What it does, in its order:
 *
 *     batch, w.batch = w.batch, []; batched.discard(w)
 *     n = unwoken.get(w, 0) + len(batch)
 *     wake or n >= WAKE_BATCH: unwoken.pop(w); w.send(data)    (the worker woken)
 *     else:                    unwoken[w] = n; w.send(data, wake=False)
 *
 * and w.send: into the ring, or behind what waits in w.outbox already. */
#include "lane.h"

static PyObject *s_ring, *s_max_message, *s_push, *s_outbox, *s_append, *s_unwoken;

int lane_send_init_strings(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(s_ring, "ring") S(s_max_message, "max_message") S(s_push, "push") S(s_outbox, "outbox")
    S(s_append, "append") S(s_unwoken, "unwoken")
#undef S
    return 0;
}

/* WorkerHandle.send(data, wake) */
static int worker_send(PyObject *w, PyObject *ring, PyObject *data, int wake) {
    PyObject *outbox = PyObject_GetAttr(w, s_outbox);
    if (!outbox) return -1;
    Py_ssize_t waiting = PyObject_Size(outbox);
    int pushed = 0;
    if (waiting == 0) {
        PyObject *call[5] = {ring, data, zero_seconds, zero_seconds, wake ? Py_True : Py_False};
        PyObject *res = PyObject_VectorcallMethod(s_push, call, 5, NULL);
        pushed = res ? PyObject_IsTrue(res) : -1;
        Py_XDECREF(res);
    }
    int r = waiting < 0 || pushed < 0 ? -1 : 0;
    if (r == 0 && !pushed) {
        PyObject *res = PyObject_CallMethodOneArg(outbox, s_append, data);
        r = res ? 0 : -1;
        Py_XDECREF(res);
    }
    Py_DECREF(outbox);
    return r;
}

/* Dispatcher.send_batch(w, wake): 0 sent (or nothing to send), -1 on an error */
int lane_send_batch(LaneObject *self, PyObject *w, int wake) {
    WorkerObject *x = (WorkerObject *)w;
    if (!PyList_CheckExact(x->batch)) {
        PyErr_SetString(PyExc_TypeError, "w.batch must be a list");
        return -1;
    }
    if (PyList_GET_SIZE(x->batch) == 0)  /* (its tasks taken back: Dispatcher.unbatch) */
        return PySet_Discard(self->batched, w) < 0 ? -1 : 0;
    PyObject *ring = PyObject_GetAttr(w, s_ring);
    PyObject *limit = ring ? PyObject_GetAttr(ring, s_max_message) : NULL;
    PyObject *args[2] = {x->batch, limit};
    PyObject *data = limit ? pack_tasks(NULL, args, 2) : NULL;
    Py_XDECREF(limit);
    if (data == Py_None) {  /* no compact form: the Python's, whole */
        Py_DECREF(data);
        Py_DECREF(ring);
        PyObject *res = PyObject_CallMethodObjArgs(self->dispatch, s_send_batch, w,
                                                   wake ? Py_True : Py_False, NULL);
        Py_XDECREF(res);
        return res ? 0 : -1;
    }
    if (!data) { Py_XDECREF(ring); return -1; }
    Py_ssize_t n = PyList_GET_SIZE(x->batch);
    PyObject *empty = PyList_New(0);
    int r = empty && PySet_Discard(self->batched, w) >= 0 ? 0 : -1;
    if (r == 0) {
        Py_SETREF(x->batch, empty);
        empty = NULL;
        PyObject *before = PyDict_GetItemWithError(self->unwoken, w);
        long unwoken = before ? PyLong_AsLong(before) : 0;
        if ((unwoken == -1 || !before) && PyErr_Occurred()) r = -1;
        long total = unwoken + (long)n;
        if (r == 0 && (wake || total >= self->wake_batch)) {
            wake = 1;
            if (before && PyDict_DelItem(self->unwoken, w) < 0) r = -1;
        } else if (r == 0) {
            PyObject *v = PyLong_FromLong(total);
            if (!v || PyDict_SetItem(self->unwoken, w, v) < 0) r = -1;
            Py_XDECREF(v);
        }
    }
    Py_XDECREF(empty);
    if (r == 0) r = worker_send(w, ring, data, wake);
    Py_DECREF(data);
    Py_DECREF(ring);
    return r;
}

/* Dispatcher.push_batches(burst): the batches pushed, the workers woken; in a burst,
 * only to a worker with fewer than TASK_BATCH tasks pushed and not done */
int lane_push_batches(LaneObject *self, int burst) {
    PyObject *workers = PySequence_List(self->batched);
    if (!workers) return -1;
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(workers); i++) {
        PyObject *w = PyList_GET_ITEM(workers, i);
        if (!PyObject_TypeCheck(w, &WorkerType)) {
            PyErr_SetString(PyExc_TypeError, "batched: not a worker");
            r = -1;
            break;
        }
        WorkerObject *x = (WorkerObject *)w;
        Py_ssize_t pushed = PyObject_Size(x->inflight) - PyObject_Size(x->batch);
        if (PyErr_Occurred()) r = -1;
        else if (!burst || pushed < self->task_batch) r = lane_send_batch(self, w, !burst);
    }
    Py_DECREF(workers);
    return r;
}

/* Lane.push_batches(burst) */
PyObject *Lane_push_batches(LaneObject *self, PyObject *burst) {
    int b = PyObject_IsTrue(burst);
    if (b < 0 || lane_push_batches(self, b) < 0) return NULL;
    Py_RETURN_NONE;
}
