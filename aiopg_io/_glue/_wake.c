/* aiopg_io._glue._wake: the glue's wake(op) as C callables, for a driver that resumes
 * waiters from C (the io_uring_c driver's reap_and_wake, drivers/_uring.c).
 *
 * The Python twins are AsyncioGlue.wake (_asyncio.py) and TrioGlue.wake (_trio.py); each
 * waker here does the common case of its twin and calls the twin for every other:
 *
 * - FutureWaker(future_type, twin): op.waiter of exactly ``future_type`` (asyncio.Future,
 *   which loop.create_future returns on asyncio and uvloop) gets set_result(None) unless
 *   it is done; a RuntimeError (its loop is closed) is dropped, as the twin drops it.
 * - TaskWaker(parked_type, reschedule, twin[, woken]): op.waiter of exactly ``parked_type``
 *   (the trio glue's _Parked) or a TaskPark (below) still parked, whose task was not
 *   cancelled, is cleared and its task handed to ``reschedule`` (trio.lowlevel.reschedule, or
 *   the run's own Runner.reschedule), a TaskPark's with ``woken`` where given (one
 *   outcome.Value(None) for the run: a TaskPark reads only its type, so one serves every
 *   wake-up, where trio's default builds one per call); a cancelled one goes to the twin,
 *   which delivers the cancellation.
 * - TaskParker: the trio glue's wait itself (below, "TaskParker").
 *
 * Calling a C-implemented callable from C costs no Python frame; the future's methods are
 * C too (_asyncio.Future), so on asyncio a completion reaches its task without one. This
 * module knows the loops only through the objects the glue hands it, so the glue stays the
 * one place that knows which loop runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *S_waiter, *S_done, *S_set_result, *S_raise_cancel, *S_task;

/* -- TaskParker: the trio glue's wait(op, on_cancel) in C ------------------------------------
 *
 * The Python twin is TrioGlue._wait_twin (_trio.py): a _Parked record made the op's waiter,
 * then ``await trio.lowlevel.wait_task_rescheduled(abort)``. That trap is two coroutine frames
 * (wait_task_rescheduled, trio's _async_yield) and an attrs __init__ on the way in, an
 * Outcome.unwrap on the way out, around the glue's own frame, its _Parked and
 * current_task(): every direct read on trio paid them. A TaskPark does the same with no
 * Python frame, on the shapes of trio's internals that the glue checked before making a
 * TaskParker (_trio.py, "The park in C"):
 *
 * - the task is ``run_context.task`` (what trio.lowlevel.current_task() returns: trio's
 *   GLOBAL_RUN_CONTEXT, a thread-local);
 * - the park yields a ``trap_type`` (trio's WaitTaskRescheduled, a frozen attrs class with an
 *   instance dict) whose ``abort_func`` is the TaskPark itself, set as attrs' __init__ sets
 *   it (object.__setattr__): trio's run loop takes any task that yields one as parked;
 * - trio resumes the task by sending an Outcome: exactly ``value_type`` (outcome.Value) is a
 *   wake-up (nothing raised; what unwrap would return is dropped, as the twin drops it);
 *   anything else is unwrapped, which raises what the twin's unwrap raises (the cancellation
 *   after the op was reaped, or at once where the op was dropped).
 *
 * The abort function (trio calls it on cancellation, while parked) is the twin's: ask
 * ``on_cancel(op)``; true (the op was dropped before the driver had it) returns
 * ``succeeded``, else the raise_cancel is kept and ``failed`` returned, and the task stays
 * parked until the op is reaped and TaskWaker hands it to the twin wake, which reschedules
 * the task with the cancellation. A TaskPark left any other way (throw, close) is no longer
 * parked: the wakers then clear op.waiter and reschedule nothing.
 */

enum { TP_NEW, TP_PARKED, TP_DONE };

typedef struct {
    PyObject_HEAD
    PyObject *run_context, *trap_type, *value_type, *succeeded, *failed;
} Parker;

typedef struct {
    PyObject_HEAD
    Parker *parker;
    PyObject *op, *on_cancel, *task, *raise_cancel;
    int state;
} TaskPark;

static PyTypeObject ParkerType, TaskParkType;
static PyObject *S_abort_func, *S_unwrap, *S_empty;

static int
parker_traverse(Parker *p, visitproc visit, void *arg)
{
    Py_VISIT(p->run_context);
    Py_VISIT(p->trap_type);
    Py_VISIT(p->value_type);
    Py_VISIT(p->succeeded);
    Py_VISIT(p->failed);
    return 0;
}

static int
parker_clear(Parker *p)
{
    Py_CLEAR(p->run_context);
    Py_CLEAR(p->trap_type);
    Py_CLEAR(p->value_type);
    Py_CLEAR(p->succeeded);
    Py_CLEAR(p->failed);
    return 0;
}

static void
parker_dealloc(Parker *p)
{
    PyObject_GC_UnTrack(p);
    parker_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int
parker_init(Parker *p, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *run_context, *trap_type, *value_type, *succeeded, *failed;
    if (!PyArg_ParseTuple(args, "OO!O!OO:TaskParker", &run_context, &PyType_Type, &trap_type, &PyType_Type,
                          &value_type, &succeeded, &failed))
        return -1;
    parker_clear(p);
    p->run_context = Py_NewRef(run_context);
    p->trap_type = Py_NewRef(trap_type);
    p->value_type = Py_NewRef(value_type);
    p->succeeded = Py_NewRef(succeeded);
    p->failed = Py_NewRef(failed);
    return 0;
}

/* A trap_type instance whose abort_func is ``fn``, set as attrs' frozen __init__ sets it. */
static PyObject *
parker_make_trap(Parker *p, PyObject *fn)
{
    if (p->trap_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskParker not initialised");
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)p->trap_type;
    PyObject *trap = t->tp_new(t, S_empty, NULL);
    if (trap == NULL)
        return NULL;
    if (PyObject_GenericSetAttr(trap, S_abort_func, fn) < 0) {
        Py_DECREF(trap);
        return NULL;
    }
    return trap;
}

static PyObject *
parker_call(Parker *p, PyObject *args, PyObject *kwds)
{
    PyObject *op, *on_cancel;
    static char *kwlist[] = {"op", "on_cancel", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:TaskParker", kwlist, &op, &on_cancel))
        return NULL;
    if (p->run_context == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskParker not initialised");
        return NULL;
    }
    TaskPark *park = PyObject_GC_New(TaskPark, &TaskParkType);
    if (park == NULL)
        return NULL;
    park->parker = (Parker *)Py_NewRef(p);
    park->op = Py_NewRef(op);
    park->on_cancel = Py_NewRef(on_cancel);
    park->task = park->raise_cancel = NULL;
    park->state = TP_NEW;
    PyObject_GC_Track(park);
    return (PyObject *)park;
}

static PyMethodDef parker_methods[] = {
    {"trap", (PyCFunction)parker_make_trap, METH_O,
     "trap(fn): the trap a park yields, with abort_func fn (for the glue's shape check)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ParkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io._glue._wake.TaskParker",
    .tp_basicsize = sizeof(Parker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TaskParker(run_context, trap_type, value_type, succeeded, failed): parker(op, on_cancel) is the "
              "trio glue's wait(op, on_cancel) as a C awaitable (a TaskPark)",
    .tp_traverse = (traverseproc)parker_traverse,
    .tp_clear = (inquiry)parker_clear,
    .tp_dealloc = (destructor)parker_dealloc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)parker_init,
    .tp_call = (ternaryfunc)parker_call,
    .tp_methods = parker_methods,
};

static int
park_traverse(TaskPark *k, visitproc visit, void *arg)
{
    Py_VISIT(k->parker);
    Py_VISIT(k->op);
    Py_VISIT(k->on_cancel);
    Py_VISIT(k->task);
    Py_VISIT(k->raise_cancel);
    return 0;
}

/* Over: no longer parked, and nothing of the op kept (op.waiter may still name it). */
static void
park_done(TaskPark *k)
{
    k->state = TP_DONE;
    Py_CLEAR(k->op);
    Py_CLEAR(k->on_cancel);
    Py_CLEAR(k->task);
    Py_CLEAR(k->raise_cancel);
}

static int
park_clear(TaskPark *k)
{
    park_done(k);
    Py_CLEAR(k->parker);
    return 0;
}

static void
park_dealloc(TaskPark *k)
{
    PyObject_GC_UnTrack(k);
    park_clear(k);
    PyObject_GC_Del(k);
}

static PyObject *
park_await(TaskPark *k)
{
    return Py_NewRef(k);
}

static PySendResult
park_send(TaskPark *k, PyObject *arg, PyObject **out)
{
    if (k->state == TP_NEW) { /* park: the twin's current_task(), op.waiter, the trap */
        Parker *p = k->parker;
        PyObject *task = PyObject_GetAttrString(p->run_context, "task");
        if (task == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_RuntimeError, "must be called from async context");
            }
            park_done(k);
            return PYGEN_ERROR;
        }
        k->task = task;
        PyObject *trap = parker_make_trap(p, (PyObject *)k);
        if (trap == NULL || PyObject_SetAttr(k->op, S_waiter, (PyObject *)k) < 0) {
            Py_XDECREF(trap);
            park_done(k);
            return PYGEN_ERROR;
        }
        k->state = TP_PARKED;
        *out = trap;
        return PYGEN_NEXT;
    }
    if (k->state == TP_PARKED) { /* resumed with an Outcome */
        PyObject *value_type = k->parker->value_type;
        park_done(k);
        if ((PyObject *)Py_TYPE(arg) != value_type) {
            PyObject *res = PyObject_CallMethodNoArgs(arg, S_unwrap);
            if (res == NULL)
                return PYGEN_ERROR;
            Py_DECREF(res);
        }
        *out = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
}

static PyObject *
park_next(TaskPark *k)
{
    PyObject *out;
    PySendResult r = park_send(k, Py_None, &out);
    if (r == PYGEN_NEXT)
        return out;
    if (r == PYGEN_RETURN)
        Py_DECREF(out); /* None: StopIteration with no value is no exception set */
    return NULL;
}

static PyObject *
park_send_method(TaskPark *k, PyObject *value)
{
    PyObject *out;
    PySendResult r = park_send(k, value, &out);
    if (r == PYGEN_NEXT)
        return out;
    if (r == PYGEN_RETURN) {
        Py_DECREF(out);
        PyErr_SetNone(PyExc_StopIteration);
    }
    return NULL;
}

/* throw(typ[, val[, tb]]): raised from the park, as a coroutine raises it at its yield; no
   longer parked. The arguments are taken as CPython's gen_throw takes them: a class made an
   instance from ``val`` (none, the arguments' tuple, an instance of it, or the one argument),
   ``tb`` kept; a bad argument is a TypeError that leaves the park as it was. */
static PyObject *
park_throw(TaskPark *k, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_ParseTuple(args, "O|OO:throw", &typ, &val, &tb))
        return NULL;
    if (val == Py_None)
        val = NULL;
    if (tb == Py_None)
        tb = NULL;
    if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    PyObject *exc;
    if (PyExceptionInstance_Check(typ)) {
        if (val != NULL) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        exc = Py_NewRef(typ);
    } else if (PyExceptionClass_Check(typ)) {
        park_done(k); /* from here on the exception (or the constructor's) is thrown in */
        int is_inst = val != NULL && PyExceptionInstance_Check(val) ? PyObject_IsInstance(val, typ) : 0;
        if (is_inst < 0)
            return NULL;
        if (is_inst)
            exc = Py_NewRef(val);
        else if (val == NULL)
            exc = PyObject_CallNoArgs(typ);
        else if (PyTuple_Check(val))
            exc = PyObject_Call(typ, val, NULL);
        else
            exc = PyObject_CallOneArg(typ, val);
        if (exc == NULL)
            return NULL;
        if (!PyExceptionInstance_Check(exc)) {
            PyErr_Format(PyExc_TypeError, "calling %R should have returned an instance of BaseException, not %s",
                         typ, Py_TYPE(exc)->tp_name);
            Py_DECREF(exc);
            return NULL;
        }
    } else {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                     Py_TYPE(typ)->tp_name);
        return NULL;
    }
    park_done(k);
    if (tb != NULL && PyException_SetTraceback(exc, tb) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    PyObject *exc_tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, exc_tb);
    return NULL;
}

static PyObject *
park_close(TaskPark *k, PyObject *Py_UNUSED(ignored))
{
    park_done(k);
    Py_RETURN_NONE;
}

/* The abort function trio calls on cancellation while the task is parked (the twin's abort). */
static PyObject *
park_abort(TaskPark *k, PyObject *args, PyObject *kwds)
{
    PyObject *raise_cancel;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0) || !PyArg_ParseTuple(args, "O:abort", &raise_cancel))
        return NULL;
    if (k->state != TP_PARKED) {
        PyErr_SetString(PyExc_RuntimeError, "abort of a park that is not parked");
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(k->on_cancel, k->op);
    if (res == NULL)
        return NULL;
    int dropped = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (dropped < 0)
        return NULL;
    if (dropped)
        return Py_NewRef(k->parker->succeeded);
    Py_XSETREF(k->raise_cancel, Py_NewRef(raise_cancel));
    return Py_NewRef(k->parker->failed);
}

static PyObject *
park_get_task(TaskPark *k, void *Py_UNUSED(closure))
{
    return Py_NewRef(k->task != NULL ? k->task : Py_None);
}

static PyObject *
park_get_raise_cancel(TaskPark *k, void *Py_UNUSED(closure))
{
    return Py_NewRef(k->raise_cancel != NULL ? k->raise_cancel : Py_None);
}

static PyGetSetDef park_getset[] = {
    {"task", (getter)park_get_task, NULL, "the parked task (None once no longer parked)", NULL},
    {"raise_cancel", (getter)park_get_raise_cancel, NULL,
     "the cancellation to deliver once the op is reaped (None: not cancelled)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef park_methods[] = {
    {"send", (PyCFunction)park_send_method, METH_O, "send(value): as a coroutine's"},
    {"throw", (PyCFunction)park_throw, METH_VARARGS, "throw(exc): as a coroutine's"},
    {"close", (PyCFunction)park_close, METH_NOARGS, "close(): as a coroutine's"},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods park_as_async = {
    .am_await = (unaryfunc)park_await,
    .am_send = (sendfunc)park_send,
};

static PyTypeObject TaskParkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io._glue._wake.TaskPark",
    .tp_basicsize = sizeof(TaskPark),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One task parked on one op (TaskParker); called, it is the park's abort function",
    .tp_traverse = (traverseproc)park_traverse,
    .tp_clear = (inquiry)park_clear,
    .tp_dealloc = (destructor)park_dealloc,
    .tp_call = (ternaryfunc)park_abort,
    .tp_as_async = &park_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)park_next,
    .tp_methods = park_methods,
    .tp_getset = park_getset,
};

/* -- the wakers ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *type;       /* the waiter type handled here */
    PyObject *reschedule; /* TaskWaker only */
    PyObject *twin;       /* the glue's wake */
    PyObject *woken;      /* TaskWaker: what a TaskPark is rescheduled with (NULL: reschedule's default) */
} Waker;

static int
waker_traverse(Waker *w, visitproc visit, void *arg)
{
    Py_VISIT(w->type);
    Py_VISIT(w->reschedule);
    Py_VISIT(w->twin);
    Py_VISIT(w->woken);
    return 0;
}

static int
waker_clear(Waker *w)
{
    Py_CLEAR(w->type);
    Py_CLEAR(w->reschedule);
    Py_CLEAR(w->twin);
    Py_CLEAR(w->woken);
    return 0;
}

static void
waker_dealloc(Waker *w)
{
    PyObject_GC_UnTrack(w);
    waker_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static int
future_waker_init(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *type, *twin;
    if (!PyArg_ParseTuple(args, "O!O:FutureWaker", &PyType_Type, &type, &twin))
        return -1;
    waker_clear(w);
    Py_INCREF(type);
    Py_INCREF(twin);
    w->type = type;
    w->twin = twin;
    return 0;
}

static int
task_waker_init(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *type, *reschedule, *twin, *woken = NULL;
    if (!PyArg_ParseTuple(args, "O!OO|O:TaskWaker", &PyType_Type, &type, &reschedule, &twin, &woken))
        return -1;
    waker_clear(w);
    Py_INCREF(type);
    Py_INCREF(reschedule);
    Py_INCREF(twin);
    Py_XINCREF(woken);
    w->type = type;
    w->reschedule = reschedule;
    w->twin = twin;
    w->woken = woken;
    return 0;
}

static PyObject *
call_twin(Waker *w, PyObject *op)
{
    if (w->twin == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "waker not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(w->twin, op);
}

static PyObject *
future_waker_call(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *op;
    if (!PyArg_ParseTuple(args, "O:FutureWaker", &op))
        return NULL;
    PyObject *fut = PyObject_GetAttr(op, S_waiter);
    if (fut == NULL)
        return NULL;
    if (w->type == NULL || (PyObject *)Py_TYPE(fut) != w->type) {
        Py_DECREF(fut);
        return call_twin(w, op);
    }
    PyObject *done = PyObject_CallMethodNoArgs(fut, S_done);
    if (done == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done == 0) {
        PyObject *res = PyObject_CallMethodOneArg(fut, S_set_result, Py_None);
        if (res == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) { /* its loop is closed: dropped */
                Py_DECREF(fut);
                return NULL;
            }
            PyErr_Clear();
        }
        Py_XDECREF(res);
    }
    Py_DECREF(fut);
    if (is_done < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
task_waker_call(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *op;
    if (!PyArg_ParseTuple(args, "O:TaskWaker", &op))
        return NULL;
    PyObject *parked = PyObject_GetAttr(op, S_waiter);
    if (parked == NULL)
        return NULL;
    if (Py_IS_TYPE(parked, &TaskParkType)) { /* parked from C: its fields read directly */
        TaskPark *k = (TaskPark *)parked;
        if (k->state != TP_PARKED || k->raise_cancel != NULL || w->reschedule == NULL) {
            Py_DECREF(parked); /* cancelled, or no longer parked: the twin decides */
            return call_twin(w, op);
        }
        PyObject *task = Py_NewRef(k->task);
        Py_DECREF(parked);
        if (PyObject_SetAttr(op, S_waiter, Py_None) < 0) {
            Py_DECREF(task);
            return NULL;
        }
        PyObject *call[2] = {task, w->woken};
        PyObject *res = PyObject_Vectorcall(w->reschedule, call, w->woken != NULL ? 2 : 1, NULL);
        Py_DECREF(task);
        return res;
    }
    if (w->type == NULL || (PyObject *)Py_TYPE(parked) != w->type) {
        Py_DECREF(parked);
        return call_twin(w, op);
    }
    PyObject *rc = PyObject_GetAttr(parked, S_raise_cancel);
    if (rc == NULL) {
        Py_DECREF(parked);
        return NULL;
    }
    int cancelled = rc != Py_None;
    Py_DECREF(rc);
    if (cancelled) {
        Py_DECREF(parked);
        return call_twin(w, op);
    }
    PyObject *task = PyObject_GetAttr(parked, S_task);
    Py_DECREF(parked);
    if (task == NULL)
        return NULL;
    if (PyObject_SetAttr(op, S_waiter, Py_None) < 0) {
        Py_DECREF(task);
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(w->reschedule, task);
    Py_DECREF(task);
    return res;
}

static PyTypeObject FutureWakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io._glue._wake.FutureWaker",
    .tp_basicsize = sizeof(Waker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FutureWaker(future_type, twin): waker(op) resumes op.waiter, an asyncio future",
    .tp_traverse = (traverseproc)waker_traverse,
    .tp_clear = (inquiry)waker_clear,
    .tp_dealloc = (destructor)waker_dealloc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)future_waker_init,
    .tp_call = (ternaryfunc)future_waker_call,
};

static PyTypeObject TaskWakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io._glue._wake.TaskWaker",
    .tp_basicsize = sizeof(Waker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TaskWaker(parked_type, reschedule, twin[, woken]): waker(op) reschedules op.waiter's task",
    .tp_traverse = (traverseproc)waker_traverse,
    .tp_clear = (inquiry)waker_clear,
    .tp_dealloc = (destructor)waker_dealloc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)task_waker_init,
    .tp_call = (ternaryfunc)task_waker_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aiopg_io._glue._wake",
    .m_doc = "The loop glue's wake(op) as C callables (see aiopg_io/_glue).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__wake(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_waiter, "waiter");
    INTERN(S_done, "done");
    INTERN(S_set_result, "set_result");
    INTERN(S_raise_cancel, "raise_cancel");
    INTERN(S_task, "task");
    INTERN(S_abort_func, "abort_func");
    INTERN(S_unwrap, "unwrap");
#undef INTERN
    if ((S_empty = PyTuple_New(0)) == NULL)
        return NULL;
    if (PyType_Ready(&FutureWakerType) < 0 || PyType_Ready(&TaskWakerType) < 0 || PyType_Ready(&ParkerType) < 0 ||
        PyType_Ready(&TaskParkType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FutureWakerType);
    if (PyModule_AddObject(m, "FutureWaker", (PyObject *)&FutureWakerType) < 0) {
        Py_DECREF(&FutureWakerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TaskWakerType);
    if (PyModule_AddObject(m, "TaskWaker", (PyObject *)&TaskWakerType) < 0) {
        Py_DECREF(&TaskWakerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ParkerType);
    if (PyModule_AddObject(m, "TaskParker", (PyObject *)&ParkerType) < 0) {
        Py_DECREF(&ParkerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TaskParkType);
    if (PyModule_AddObject(m, "TaskPark", (PyObject *)&TaskParkType) < 0) {
        Py_DECREF(&TaskParkType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
