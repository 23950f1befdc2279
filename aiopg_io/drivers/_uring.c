/* aiopg_io.drivers._uring: an io_uring ring on the raw system calls, for the io_uring_c driver.
 *
 * The Python twin is aiopg_io/drivers/io_uring.py on the PyPI liburing package; this module
 * replaces that package's part (set up, SQE preparation, submit, CQE harvest), under the
 * same names, and takes the ring path's common case out of Python, each piece with its
 * Python twin named and taking every other case: the page-cache fast path (try_inline), a
 * tick's batch into SQEs with one io_uring_enter (submit_batch), a linked write + sync's two
 * SQEs (prep_write_sync), and a CQE that finishes its op whole, reaped and its waiter
 * resumed through a waker the glue lends (harvest); and above the driver, the file calls
 * that lead to them: a read the page cache holds answered with no op (FastPath, FastRead,
 * Done), and a transfer that goes to the ring built, staged and awaited with no coroutine
 * (RunPath, RingRun, RingWait).
 * Why C and why these pieces: drivers/io_uring_c.py's opening comment, and the runs in
 * docs/benchmarks.md, "Compiled path". It also runs on kernels the liburing package
 * refuses.
 *
 * Facts this module relies on (the kernel's ABI, so no liburing and no kernel headers are
 * needed: the layouts below are the uapi ones, include/uapi/linux/io_uring.h, stable since
 * 5.1 and only ever extended):
 *
 * - io_uring_setup(2): fills struct io_uring_params with the ring sizes and the offsets of
 *   head/tail/mask/array/cqes inside the SQ and CQ ring mappings, mapped from the ring fd
 *   at IORING_OFF_SQ_RING (0), IORING_OFF_CQ_RING (0x8000000) and IORING_OFF_SQES
 *   (0x10000000). With IORING_FEAT_SINGLE_MMAP (5.4) the SQ and CQ rings share one mapping.
 *   The ring fd is close-on-exec. An unknown setup flag is EINVAL, so SUBMIT_ALL (5.18) is
 *   asked for and dropped when refused.
 * - The SQ: the application writes SQEs and the SQ index array, then publishes the tail
 *   with a release store; the kernel consumes from head (read with an acquire load). The
 *   CQ: the kernel publishes the tail (acquire load here), the application retires entries
 *   by storing head (release). io_uring_enter(2) with to_submit = tail - head submits what
 *   is queued; it returns how many SQEs it consumed, and what it left stays queued for
 *   the next call. IORING_ENTER_GETEVENTS with min_complete 0 flushes the kernel's CQ
 *   overflow list (IORING_FEAT_NODROP, 5.5) without waiting.
 * - IORING_SQ_CQ_OVERFLOW in the SQ ring's flags word says CQEs wait on that list.
 * - io_uring_register(2): IORING_REGISTER_EVENTFD (4) / IORING_UNREGISTER_EVENTFD (5);
 *   IORING_REGISTER_PROBE (8, 5.6) fills struct io_uring_probe, an op supported when its
 *   flags have IO_URING_OP_SUPPORTED (1). Before 5.6 it is EINVAL: then only the 5.1 ops
 *   (nop, readv, writev, fsync) are assumed.
 * - Fork: madvise(MADV_DONTFORK) keeps the ring mappings out of a child (what
 *   io_uring_ring_dontfork(3) does); the Python driver refuses to run in a child. So a
 *   child that releases its copy of a Ring closes the fd only: the addresses are not the
 *   ring's in the child, and may by then be another mapping's.
 * - Closing the ring fd does not wait for the ops in flight (the kernel cancels and reaps
 *   them in a work item after the close returns), and they write into their buffers until
 *   their CQEs. The Ring holds no buffer: its owner (the driver) keeps the buffers, and the
 *   Ring open, until every CQE is in, also when it is collected unclosed (see _orphans.py).
 * - An SQE's iovec array must stay valid until the op's CQE (the kernel may read it when
 *   it issues the op from a worker). iovec() returns it as a bytes object that the driver
 *   keeps on the op; the buffers it points into are kept by the op (its memoryviews), as
 *   with liburing's Iovec, which keeps no reference either.
 * - System calls that do not wait (submit, flush) run with the GIL released: the kernel
 *   may copy cached pages inline during a submit.
 * - SQPOLL (io_uring_setup(2), IORING_SETUP_SQPOLL): a kernel thread of this process
 *   ("iou-sqp-<pid>") polls the SQ and submits what it finds, so a submit is only the tail
 *   store, with no system call, while the thread is awake. After sq_thread_idle ms (the
 *   kernel's default 1000 when 0) without work it sleeps and sets IORING_SQ_NEED_WAKEUP in
 *   the SQ flags; io_uring_enter(IORING_ENTER_SQ_WAKEUP) wakes it. The flags load must not
 *   pass the tail store: a full barrier between them (liburing's io_uring_smp_mb in
 *   sq_ring_needs_enter). With SQPOLL, io_uring_enter returns to_submit whatever the thread
 *   took; IORING_ENTER_SQ_WAIT (5.10) waits until the thread has made room in a full SQ.
 *   Before 5.11 (IORING_FEAT_SQPOLL_NONFIXED) the thread took registered files only, and
 *   needed CAP_SYS_ADMIN: the ring then refuses sqpoll (EOPNOTSUPP), it never half-works.
 *   The thread belongs to the ring, so to the process that set it up (fork: see above).
 * - Any thread may submit to and reap this ring: it asks for no IORING_SETUP_SINGLE_ISSUER
 *   (6.0), under which the kernel refuses io_uring_enter and io_uring_register with EEXIST
 *   from any task but the ring's submitter, the thread that set it up (or that enabled an
 *   IORING_SETUP_R_DISABLED ring) (io_uring_setup(2); io_uring/register.c,
 *   __io_uring_register). Threads other than the loop's do drive it: the orphan thread
 *   (_orphans.py) reaps a ring collected with ops in flight, and a context released from
 *   another thread after its loop ended closes there. IORING_SETUP_DEFER_TASKRUN (6.1,
 *   needs SINGLE_ISSUER) holds each completion's task work on the ring until the submitter
 *   enters with GETEVENTS, which runs at most IO_LOCAL_TW_DEFAULT_MAX (20) per call and
 *   raises IORING_SQ_TASKRUN again while more wait (TASKRUN_FLAG); the registered eventfd is
 *   signalled when that queue goes from empty to not empty (io_req_local_work_add,
 *   io_uring/io_uring.c; liburing test/defer-taskrun.c, test_eventfd) and again when the
 *   CQEs are posted. Tried and not kept: it replaces the EINTR'd epoll_wait of the default
 *   task work (TWA_SIGNAL) with an io_uring_enter(GETEVENTS), no system call saved and no
 *   CPU per read beyond the noise (docs/benchmarks.md, "DEFER_TASKRUN"), and a ring whose
 *   submitter thread is gone could not get a CQE posted at all.
 */
/* Python.h comes first and defines _GNU_SOURCE (pyconfig.h): preadv2 and RWF_NOWAIT. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008 /* include/uapi/linux/fs.h, 4.14 */
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

/* -- uapi (include/uapi/linux/io_uring.h) ------------------------------------------------ */

struct u_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags; /* rw_flags, fsync_flags, cancel_flags... */
    uint64_t user_data;
    uint16_t buf_index;
    uint16_t personality;
    int32_t splice_fd_in;
    uint64_t addr3;
    uint64_t pad2;
};

struct u_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct u_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};

struct u_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};

struct u_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    struct u_sqring_offsets sq_off;
    struct u_cqring_offsets cq_off;
};

struct u_probe_op {
    uint8_t op;
    uint8_t resv;
    uint16_t flags;
    uint32_t resv2;
};

struct u_probe {
    uint8_t last_op;
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct u_probe_op ops[256];
};

_Static_assert(sizeof(struct u_sqe) == 64, "io_uring_sqe is 64 bytes");
_Static_assert(sizeof(struct u_cqe) == 16, "io_uring_cqe is 16 bytes");
_Static_assert(sizeof(struct u_params) == 120, "io_uring_params is 120 bytes");

#define OFF_SQ_RING 0ULL
#define OFF_CQ_RING 0x8000000ULL
#define OFF_SQES 0x10000000ULL
#define FEAT_SINGLE_MMAP (1U << 0)
#define FEAT_SQPOLL_NONFIXED (1U << 7)
#define SETUP_SQPOLL (1U << 1)
#define SETUP_SUBMIT_ALL (1U << 7)
#define SQ_NEED_WAKEUP (1U << 0)
#define SQ_CQ_OVERFLOW (1U << 1)
#define ENTER_GETEVENTS (1U << 0)
#define ENTER_SQ_WAKEUP (1U << 1)
#define ENTER_SQ_WAIT (1U << 2)
#define REGISTER_EVENTFD 4
#define UNREGISTER_EVENTFD 5
#define REGISTER_PROBE 8
#define OP_SUPPORTED 1

enum {
    OP_NOP = 0,
    OP_READV = 1,
    OP_WRITEV = 2,
    OP_FSYNC = 3,
    OP_ASYNC_CANCEL = 14,
    OP_FALLOCATE = 17,
    OP_OPENAT = 18,
    OP_CLOSE = 19,
    OP_STATX = 21,
    OP_RENAMEAT = 35,
    OP_UNLINKAT = 36,
    OP_MKDIRAT = 37,
    OP_SYMLINKAT = 38,
    OP_LINKAT = 39,
    OP_FTRUNCATE = 55,
};

/* sizeof(struct statx) (include/uapi/linux/stat.h): what a STATX op writes. */
#define STATX_STRUCT_SIZE 256

/* -- the ring ---------------------------------------------------------------------------- */

/* What enable_batch() lends the ring, in its argument order (see "batches" below). */
enum {
    B_READ, B_READV, B_WRITE, B_WRITEV, B_FSYNC, B_FDATASYNC, /* OpKind members */
    B_IDLE, B_SUBMITTED, B_COMPLETED, B_REAPED,               /* OpState members */
    B_TRIED,       /* the driver_data of a read the fast path found not cached */
    B_INFLIGHT,    /* the driver's InFlight class */
    B_OPS,         /* token -> op the kernel owns */
    B_FD_REFS,     /* fd -> ops the ring holds on it */
    B_FD_DIRECT,   /* fd -> O_DIRECT, valid while held */
    B_SUBMIT_ONE,  /* the twin: submit_one(op, looked_up) -> queued */
    B_N
};

typedef struct {
    PyObject_HEAD
    int fd;                  /* -1 once closed */
    unsigned sq_entries, cq_entries, features, setup_flags;
    void *sq_map, *cq_map;   /* cq_map == sq_map with FEAT_SINGLE_MMAP */
    size_t sq_map_len, cq_map_len;
    struct u_sqe *sqes;
    size_t sqes_len;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_flags, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct u_cqe *cqes;
    unsigned sqe_tail;       /* SQEs handed out; published to *sq_tail by submit() */
    /* The page-cache fast path (try_inline), set up by enable_inline(); NULL when off. */
    PyObject *k_read, *k_readv, *s_idle, *s_reaped, *tried, *fallback, *partial;
    unsigned long long inline_done; /* ops try_inline completed whole, here in C */
    pid_t owner;             /* the process that mapped the ring (fork: see ring_unmap) */
    unsigned long long sqpoll_wakeups; /* io_uring_enter calls that woke the SQ thread */
    /* Batches (submit_batch; harvest with a waker), set up by enable_batch(); see there. */
    PyObject *batch[B_N];
    int batch_nowait;
    unsigned long long batch_prepped; /* ops submit_batch prepped here, in C */
    unsigned long long woken; /* ops harvest reaped and handed to a waker */
    /* The op whose CQE harvest retired when it raised, not handed over, with that CQE
       (take_raised); NULL when none. */
    PyObject *raised_op;
    unsigned long long raised_user_data;
    int raised_res;
    unsigned long long next_token; /* user_data of the next op (0 is untracked) */
} Ring;

static int batch_traverse(Ring *r, visitproc visit, void *arg);
static void batch_clear(Ring *r);

static void
ring_unmap(Ring *r)
{
    if (r->owner != getpid()) { /* a fork child: the mappings were never its own */
        r->sqes = NULL;
        r->sq_map = r->cq_map = NULL;
        return;
    }
    if (r->sqes != NULL && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_len);
    if (r->cq_map != NULL && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map != NULL && r->sq_map != MAP_FAILED)
        munmap(r->sq_map, r->sq_map_len);
    r->sqes = NULL;
    r->sq_map = r->cq_map = NULL;
}

static void
ring_release(Ring *r)
{
    ring_unmap(r);
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
}

static int
ring_check(Ring *r)
{
    if (r->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the io_uring ring is closed");
        return -1;
    }
    return 0;
}

static int
ring_init(Ring *r, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"entries", "submit_all", "sqpoll", "sq_thread_idle", NULL};
    unsigned int entries, sq_thread_idle = 0;
    int submit_all = 1, sqpoll = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "I|p$pI", kwlist, &entries, &submit_all, &sqpoll,
                                     &sq_thread_idle))
        return -1;
    if (r->fd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Ring is already set up");
        return -1;
    }
    struct u_params p;
    long fd;
    for (;;) {
        memset(&p, 0, sizeof p);
        p.flags = (submit_all ? SETUP_SUBMIT_ALL : 0) | (sqpoll ? SETUP_SQPOLL : 0);
        p.sq_thread_idle = sq_thread_idle;
        fd = syscall(__NR_io_uring_setup, entries, &p);
        if (fd < 0 && errno == EINVAL && submit_all) {
            submit_all = 0; /* a kernel before 5.18: no SUBMIT_ALL */
            continue;
        }
        break;
    }
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->fd = (int)fd;
    r->owner = getpid();
    if (sqpoll && !(p.features & FEAT_SQPOLL_NONFIXED)) {
        close(r->fd);
        r->fd = -1;
        errno = EOPNOTSUPP; /* a kernel before 5.11: SQPOLL on registered files only */
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->features = p.features;
    r->setup_flags = p.flags;
    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct u_cqe);
    if (p.features & FEAT_SINGLE_MMAP) {
        if (r->cq_map_len > r->sq_map_len)
            r->sq_map_len = r->cq_map_len;
        r->cq_map_len = r->sq_map_len;
    }
    r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                     OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED)
        goto fail;
    if (p.features & FEAT_SINGLE_MMAP) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         r->fd, OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED)
            goto fail;
    }
    r->sqes_len = p.sq_entries * sizeof(struct u_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                   OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;
    if (madvise(r->sq_map, r->sq_map_len, MADV_DONTFORK) < 0 ||
        (r->cq_map != r->sq_map && madvise(r->cq_map, r->cq_map_len, MADV_DONTFORK) < 0) ||
        madvise(r->sqes, r->sqes_len, MADV_DONTFORK) < 0)
        goto fail;
    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_flags = (unsigned *)(sq + p.sq_off.flags);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct u_cqe *)(cq + p.cq_off.cqes);
    r->sqe_tail = *r->sq_tail;
    return 0;
fail:
    PyErr_SetFromErrno(PyExc_OSError);
    ring_release(r);
    return -1;
}

static PyObject *
ring_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    Ring *r = (Ring *)type->tp_alloc(type, 0);
    if (r != NULL) {
        r->fd = -1;
        r->next_token = 1;
    }
    return (PyObject *)r;
}

static int
ring_traverse(Ring *r, visitproc visit, void *arg)
{
    Py_VISIT(r->k_read);
    Py_VISIT(r->k_readv);
    Py_VISIT(r->s_idle);
    Py_VISIT(r->s_reaped);
    Py_VISIT(r->tried);
    Py_VISIT(r->fallback);
    Py_VISIT(r->partial);
    Py_VISIT(r->raised_op);
    return batch_traverse(r, visit, arg);
}

static int
ring_clear(Ring *r)
{
    Py_CLEAR(r->k_read);
    Py_CLEAR(r->k_readv);
    Py_CLEAR(r->s_idle);
    Py_CLEAR(r->s_reaped);
    Py_CLEAR(r->tried);
    Py_CLEAR(r->fallback); /* bound methods of the driver: a cycle the GC must see */
    Py_CLEAR(r->partial);
    Py_CLEAR(r->raised_op);
    return 0;
}

static int
ring_gc_clear(Ring *r)
{
    ring_clear(r);
    batch_clear(r);
    return 0;
}

static void
ring_dealloc(Ring *r)
{
    /* A ring collected unclosed: its memory and fd go with it (the kernel cancels and
       reaps whatever was in flight when the last reference to the ring file goes). */
    PyObject_GC_UnTrack(r);
    ring_gc_clear(r);
    ring_release(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* The next free SQE zeroed, or NULL when the SQ is full (nothing raised). */
static struct u_sqe *
get_sqe(Ring *r)
{
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->sqe_tail - head >= r->sq_entries)
        return NULL;
    struct u_sqe *sqe = &r->sqes[r->sqe_tail & *r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

static PyObject *
negative(const char *what, long long value)
{
    /* The SQE's fields are unsigned: a negative value would wrap to a huge one. Checked
       before an SQE is taken, so a refused prep leaves the SQ as it was. */
    PyErr_Format(PyExc_OverflowError, "%s %lld is negative", what, value);
    return NULL;
}

/* Every prep_* takes the SQE's user_data last and returns False when the SQ is full, as
   liburing's io_uring_get_sqe returning NULL. */

/* A transfer's offset and iovec array checked (the ring open): 0, or -1 with the view
   released and an exception set. */
static int
check_rw(Ring *r, Py_buffer *iov, long long offset)
{
    if (offset < 0) {
        PyBuffer_Release(iov);
        negative("offset", offset);
        return -1;
    }
    if (ring_check(r) < 0 || iov->len % sizeof(struct iovec) != 0 || iov->len == 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "iovec: not a non-empty array of struct iovec");
        PyBuffer_Release(iov);
        return -1;
    }
    return 0;
}

static PyObject *
prep_rw(Ring *r, PyObject *args, uint8_t opcode)
{
    int fd;
    Py_buffer iov;
    long long offset;
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "iy*LK", &fd, &iov, &offset, &user_data) || check_rw(r, &iov, offset) < 0)
        return NULL;
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = opcode;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)iov.buf; /* kept alive by the caller until the CQE */
        sqe->len = (uint32_t)(iov.len / sizeof(struct iovec));
        sqe->off = offset;
        sqe->user_data = user_data;
    }
    PyBuffer_Release(&iov);
    return PyBool_FromLong(sqe != NULL);
}

static PyObject *
ring_prep_readv(Ring *r, PyObject *args)
{
    return prep_rw(r, args, OP_READV);
}

static PyObject *
ring_prep_writev(Ring *r, PyObject *args)
{
    return prep_rw(r, args, OP_WRITEV);
}

/* A linked write + sync (OpKind.WRITE_SYNC; the twin is the pure driver's _prep, see
   drivers/io_uring.py's opening comment): a writev SQE carrying IOSQE_IO_LINK (5.3) and,
   where the kernel has it (IORING_FEAT_CQE_SKIP, 5.17), IOSQE_CQE_SKIP_SUCCESS, then an
   fsync SQE, each with its own user_data. Both SQEs or neither: a chain split across two
   submissions would run the sync unlinked, so False unless the SQ has room for two (the
   tail is published only by a submit, so the kernel never sees half a chain). */

#define SQE_IO_LINK (1U << 2)
#define SQE_CQE_SKIP_SUCCESS (1U << 6)
#define FEAT_CQE_SKIP (1U << 11)

static PyObject *
ring_prep_write_sync(Ring *r, PyObject *args)
{
    int fd;
    Py_buffer iov;
    long long offset;
    unsigned int fsync_flags;
    unsigned long long write_data, sync_data;
    if (!PyArg_ParseTuple(args, "iy*LIKK", &fd, &iov, &offset, &fsync_flags, &write_data, &sync_data) ||
        check_rw(r, &iov, offset) < 0)
        return NULL;
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    int room = r->sq_entries - (r->sqe_tail - head) >= 2;
    if (room) {
        struct u_sqe *w = get_sqe(r), *s = get_sqe(r);
        w->opcode = OP_WRITEV;
        w->flags = (uint8_t)(SQE_IO_LINK | ((r->features & FEAT_CQE_SKIP) ? SQE_CQE_SKIP_SUCCESS : 0));
        w->fd = fd;
        w->addr = (uint64_t)(uintptr_t)iov.buf; /* kept alive by the caller until the CQE */
        w->len = (uint32_t)(iov.len / sizeof(struct iovec));
        w->off = offset;
        w->user_data = write_data;
        s->opcode = OP_FSYNC;
        s->fd = fd;
        s->op_flags = fsync_flags;
        s->user_data = sync_data;
    }
    PyBuffer_Release(&iov);
    return PyBool_FromLong(room);
}

static PyObject *
ring_get_cqe_skip(Ring *r, void *Py_UNUSED(closure))
{
    return PyBool_FromLong((r->features & FEAT_CQE_SKIP) != 0);
}

static PyObject *
ring_prep_fsync(Ring *r, PyObject *args)
{
    int fd;
    unsigned int flags;
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "iIK", &fd, &flags, &user_data) || ring_check(r) < 0)
        return NULL;
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = OP_FSYNC;
        sqe->fd = fd;
        sqe->op_flags = flags;
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

static PyObject *
ring_prep_fallocate(Ring *r, PyObject *args)
{
    int fd;
    unsigned int mode;
    long long offset, length;
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "iILLK", &fd, &mode, &offset, &length, &user_data) || ring_check(r) < 0)
        return NULL;
    if (offset < 0 || length < 0)
        return negative(offset < 0 ? "offset" : "length", offset < 0 ? offset : length);
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = OP_FALLOCATE;
        sqe->fd = fd;
        sqe->len = mode;     /* as io_uring_prep_fallocate(3): mode in len, length in addr */
        sqe->off = offset;
        sqe->addr = length;
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

static PyObject *
ring_prep_ftruncate(Ring *r, PyObject *args)
{
    int fd;
    long long length;
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "iLK", &fd, &length, &user_data) || ring_check(r) < 0)
        return NULL;
    if (length < 0)
        return negative("length", length);
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = OP_FTRUNCATE;
        sqe->fd = fd;
        sqe->off = length;   /* io_uring_prep_ftruncate(3): the new size in off */
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

/* A path for an SQE: its bytes, which end in a NUL (every bytes object's do) and hold no other
   (the kernel reads up to the first NUL: a path cut there names another file; the driver
   sends such a path to the blocking call, whose error it then gets, so this only guards).
   NULL with ValueError set. */
static const char *
path_text(PyObject *path, const char *what)
{
    const char *text = PyBytes_AS_STRING(path);
    if (memchr(text, '\0', (size_t)PyBytes_GET_SIZE(path)) != NULL) {
        PyErr_Format(PyExc_ValueError, "%s holds a NUL byte", what);
        return NULL;
    }
    return text;
}

/* The path ops, laid out as liburing's io_uring_prep_openat/close/renameat/unlinkat/mkdirat/
   linkat/symlinkat(3) lay them out (each is io_uring_prep_rw(op, sqe, fd, addr, len, off)
   plus the flags word): the directory fd in fd, the path's address in addr, a second path's
   address in off (the uapi header's union of off and addr2, include/uapi/linux/io_uring.h;
   the kernel reads it as addr2 in io_renameat_prep, io_linkat_prep and io_symlinkat_prep,
   io_uring/fs.c), the new path's directory fd in len (RENAMEAT, LINKAT), the permission
   bits in len (OPENAT, MKDIRAT), and the open, rename, unlink or hardlink flags in the op
   flags word. SYMLINKAT's path is the link's text and its second path the link, made in the
   directory fd (io_uring_prep_symlinkat(3): target, newdirfd, linkpath); its prep refuses a
   nonzero len or flags word (EINVAL), so the caller passes 0 for both. A path is a bytes
   object (path_text); it cannot change, and the caller keeps it until the CQE (the kernel
   copies it at prep time, getname(), but nothing relies on that). */
static PyObject *
ring_prep_path(Ring *r, PyObject *args)
{
    unsigned int opcode, len, flags;
    int fd;
    PyObject *path, *newpath;
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "IiOOIIK", &opcode, &fd, &path, &newpath, &len, &flags, &user_data) ||
        ring_check(r) < 0)
        return NULL;
    int two_paths = opcode == OP_RENAMEAT || opcode == OP_LINKAT || opcode == OP_SYMLINKAT;
    int takes_path = two_paths || opcode == OP_OPENAT || opcode == OP_UNLINKAT || opcode == OP_MKDIRAT;
    if (!takes_path && opcode != OP_CLOSE) {
        PyErr_Format(PyExc_ValueError, "opcode %u is not a path op", opcode);
        return NULL;
    }
    if (takes_path != PyBytes_Check(path) || two_paths != PyBytes_Check(newpath) ||
        (!takes_path && path != Py_None) || (!two_paths && newpath != Py_None)) {
        PyErr_Format(PyExc_TypeError, "opcode %u: path and newpath must be bytes where it takes them, else None",
                     opcode);
        return NULL;
    }
    const char *text = NULL, *newtext = NULL;
    if ((takes_path && (text = path_text(path, "path")) == NULL) ||
        (two_paths && (newtext = path_text(newpath, "newpath")) == NULL))
        return NULL;
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = (uint8_t)opcode;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)text;
        sqe->len = len;
        sqe->off = (uint64_t)(uintptr_t)newtext;
        sqe->op_flags = flags;
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

/* STATX, laid out as liburing's io_uring_prep_statx(3) (fd, path, flags, mask, statxbuf):
   the directory fd in fd, the path's address in addr, the mask in len, the struct statx's
   address in off (addr2, as io_statx_prep reads it: io_uring/statx.c) and the AT_* flags in
   the op flags word (statx_flags). The kernel writes the struct (STATX_STRUCT_SIZE bytes,
   include/uapi/linux/stat.h) straight into the op's own buffer when the op runs, so that
   buffer, like a read's, must stay where it is until the CQE: it is a memoryview the op
   holds (writable, contiguous, at least STATX_STRUCT_SIZE bytes, checked here) whose export keeps
   the memory in place, as with iovec(); nothing here keeps it. */
static PyObject *
ring_prep_statx(Ring *r, PyObject *args)
{
    int fd;
    PyObject *path;
    Py_buffer buf;
    unsigned int flags, mask;
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "iO!w*IIK", &fd, &PyBytes_Type, &path, &buf, &flags, &mask, &user_data))
        return NULL;
    void *address = buf.buf;
    Py_ssize_t size = buf.len;
    PyBuffer_Release(&buf);
    if (ring_check(r) < 0)
        return NULL;
    if (size < STATX_STRUCT_SIZE) {
        PyErr_Format(PyExc_ValueError, "a statx buffer of %zd bytes: it needs %d", size, STATX_STRUCT_SIZE);
        return NULL;
    }
    const char *text = path_text(path, "path");
    if (text == NULL)
        return NULL;
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = OP_STATX;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)text;
        sqe->len = mask;
        sqe->off = (uint64_t)(uintptr_t)address;
        sqe->op_flags = flags;
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

static PyObject *
ring_prep_nop(Ring *r, PyObject *args)
{
    unsigned long long user_data;
    if (!PyArg_ParseTuple(args, "K", &user_data) || ring_check(r) < 0)
        return NULL;
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = OP_NOP;
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

static PyObject *
ring_prep_cancel64(Ring *r, PyObject *args)
{
    unsigned long long target, user_data;
    unsigned int flags;
    if (!PyArg_ParseTuple(args, "KIK", &target, &flags, &user_data) || ring_check(r) < 0)
        return NULL;
    struct u_sqe *sqe = get_sqe(r);
    if (sqe != NULL) {
        sqe->opcode = OP_ASYNC_CANCEL;
        sqe->fd = -1;
        sqe->addr = target;  /* io_uring_prep_cancel64(3): the target's user_data */
        sqe->op_flags = flags;
        sqe->user_data = user_data;
    }
    return PyBool_FromLong(sqe != NULL);
}

/* The one io_uring_enter that submits: ``to_submit`` SQEs published (the tail stored), how
   many the kernel took, or -1 with errno set. With SQPOLL the thread takes them: a system
   call only to wake it (or, the SQ full, to wait for room). Runs with the GIL released. */
static long
ring_enter(Ring *r, unsigned to_submit)
{
    unsigned flags = 0;
    if (r->setup_flags & SETUP_SQPOLL) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the tail store before the flags load */
        if (__atomic_load_n(r->sq_flags, __ATOMIC_RELAXED) & SQ_NEED_WAKEUP)
            flags |= ENTER_SQ_WAKEUP;
        if (to_submit >= r->sq_entries)
            flags |= ENTER_SQ_WAIT;
        if (flags == 0)
            return (long)to_submit;
        r->sqpoll_wakeups += (flags & ENTER_SQ_WAKEUP) != 0;
    }
    long ret;
    int saved;
    Py_BEGIN_ALLOW_THREADS
    ret = syscall(__NR_io_uring_enter, r->fd, to_submit, 0, flags, NULL, 0);
    saved = errno;
    Py_END_ALLOW_THREADS
    errno = saved;
    return ret;
}

/* The one place SQEs go to the kernel: publish what is queued and io_uring_enter(2). Returns
   how many SQEs the kernel left queued (0: it took all), or -1 with errno set (the SQEs
   stay queued). Every submission (submit(), submit_batch()) comes through here. */
static long
ring_enter_submit(Ring *r)
{
    unsigned tail = r->sqe_tail;
    unsigned mask = *r->sq_mask;
    /* The SQ array maps ring slots to SQE indexes; ours are the identity. Written for every
       slot not yet consumed, so SQEs a refused submit left queued stay valid. */
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    for (unsigned i = head; i != tail; i++)
        r->sq_array[i & mask] = i & mask;
    __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
    unsigned to_submit = tail - head;
    if (to_submit == 0)
        return 0;
    long ret = ring_enter(r, to_submit);
    if (ret < 0)
        return -1; /* errno set */
    return (long)to_submit - ret;
}

static PyObject *
ring_submit(Ring *r, PyObject *Py_UNUSED(ignored))
{
    if (ring_check(r) < 0)
        return NULL;
    long left = ring_enter_submit(r);
    if (left < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(left);
}

static PyObject *
ring_unsubmitted(Ring *r, PyObject *Py_UNUSED(ignored))
{
    /* SQEs handed out that the kernel has not consumed yet. */
    if (ring_check(r) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(r->sqe_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE));
}

static PyObject *
ring_get_events(Ring *r, PyObject *Py_UNUSED(ignored))
{
    if (ring_check(r) < 0)
        return NULL;
    long ret;
    int saved;
    Py_BEGIN_ALLOW_THREADS
    ret = syscall(__NR_io_uring_enter, r->fd, 0, 0, ENTER_GETEVENTS, NULL, 0);
    saved = errno;
    Py_END_ALLOW_THREADS
    if (ret < 0) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *
ring_cq_has_overflow(Ring *r, PyObject *Py_UNUSED(ignored))
{
    if (ring_check(r) < 0)
        return NULL;
    return PyBool_FromLong(__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & SQ_CQ_OVERFLOW);
}

static PyObject *
ring_reap(Ring *r, PyObject *args)
{
    /* reap(limit) -> (entries, left_over): up to ``limit`` CQEs (0: all) as (user_data, res)
       pairs, retired from the CQ; left_over is True when the limit left CQEs behind. */
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "n", &limit) || ring_check(r) < 0)
        return NULL;
    unsigned head = *r->cq_head;
    unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    unsigned mask = *r->cq_mask;
    Py_ssize_t n = (Py_ssize_t)(tail - head);
    int left_over = 0;
    if (limit > 0 && n > limit) {
        n = limit;
        left_over = 1;
    }
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        struct u_cqe *cqe = &r->cqes[(head + (unsigned)i) & mask];
        PyObject *pair = Py_BuildValue("(Ki)", (unsigned long long)cqe->user_data, (int)cqe->res);
        if (pair == NULL) {
            Py_DECREF(list); /* nothing retired: the CQEs stay for the next reap */
            return NULL;
        }
        PyList_SET_ITEM(list, i, pair);
    }
    PyObject *out = Py_BuildValue("(NO)", list, left_over ? Py_True : Py_False);
    if (out != NULL) /* retired only once they are handed back: else they stay for the next reap */
        __atomic_store_n(r->cq_head, head + (unsigned)n, __ATOMIC_RELEASE);
    return out;
}

static PyObject *
register_call(Ring *r, unsigned opcode, void *arg, unsigned nr)
{
    if (ring_check(r) < 0)
        return NULL;
    if (syscall(__NR_io_uring_register, r->fd, opcode, arg, nr) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
ring_register_eventfd(Ring *r, PyObject *args)
{
    int efd;
    if (!PyArg_ParseTuple(args, "i", &efd))
        return NULL;
    return register_call(r, REGISTER_EVENTFD, &efd, 1);
}

static PyObject *
ring_unregister_eventfd(Ring *r, PyObject *Py_UNUSED(ignored))
{
    return register_call(r, UNREGISTER_EVENTFD, NULL, 0);
}

static PyObject *
ring_probe(Ring *r, PyObject *Py_UNUSED(ignored))
{
    /* The opcodes this kernel supports, or None where IORING_REGISTER_PROBE is unknown. */
    if (ring_check(r) < 0)
        return NULL;
    struct u_probe *probe = PyMem_Calloc(1, sizeof *probe);
    if (probe == NULL)
        return PyErr_NoMemory();
    if (syscall(__NR_io_uring_register, r->fd, REGISTER_PROBE, probe, 256) < 0) {
        PyMem_Free(probe);
        if (errno == EINVAL)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *ops = PyFrozenSet_New(NULL);
    for (unsigned i = 0; ops != NULL && i < probe->ops_len && i < 256; i++) {
        if (!(probe->ops[i].flags & OP_SUPPORTED))
            continue;
        PyObject *op = PyLong_FromLong(probe->ops[i].op);
        if (op == NULL || PySet_Add(ops, op) < 0)
            Py_CLEAR(ops);
        Py_XDECREF(op);
    }
    PyMem_Free(probe);
    return ops;
}

/* -- the page-cache fast path ----------------------------------------------------------- */

/* The Python twin is IoUringDriver.try_inline/_read_inline (drivers/io_uring.py): a buffered
   read the page cache holds whole is done with one preadv2(RWF_NOWAIT) and the op goes
   straight to REAPED. C does the common case only, and hands the rest to the twin: an fd
   not known to be buffered (op.direct None: the twin asks fcntl), an op not IDLE, more than
   MAX_INLINE_IOV buffers or none, a buffer that cannot be written (the twin reports it), and
   a read the cache held in part (``partial(op, n)`` goes on from n bytes). EAGAIN or any
   other error marks the op tried (``op.driver_data = tried``): the ring does it and reports
   what fails, as the twin. */

#define MAX_INLINE_IOV 16

static PyObject *S_kind, *S_direct, *S_state, *S_remaining, *S_fd, *S_offset, *S_transferred,
    *S_result, *S_driver_data;

static PyObject *
ring_enable_inline(Ring *r, PyObject *args)
{
    PyObject *k_read, *k_readv, *s_idle, *s_reaped, *tried, *fallback, *partial;
    if (!PyArg_ParseTuple(args, "OOOOOOO", &k_read, &k_readv, &s_idle, &s_reaped, &tried, &fallback,
                          &partial))
        return NULL;
    ring_clear(r);
    r->k_read = Py_NewRef(k_read);
    r->k_readv = Py_NewRef(k_readv);
    r->s_idle = Py_NewRef(s_idle);
    r->s_reaped = Py_NewRef(s_reaped);
    r->tried = Py_NewRef(tried);
    r->fallback = Py_NewRef(fallback);
    r->partial = Py_NewRef(partial);
    Py_RETURN_NONE;
}

static PyObject *
ring_disable_inline(Ring *r, PyObject *Py_UNUSED(ignored))
{
    ring_clear(r);
    Py_RETURN_NONE;
}

static int
get_ll(PyObject *op, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(op, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *
ring_try_inline(Ring *r, PyObject *op)
{
    if (r->fallback == NULL) /* off: the driver is closed (or never enabled it) */
        Py_RETURN_FALSE;
    PyObject *v = PyObject_GetAttr(op, S_kind);
    if (v == NULL)
        return NULL;
    int is_read = v == r->k_read || v == r->k_readv;
    Py_DECREF(v);
    if (!is_read)
        Py_RETURN_FALSE;
    if ((v = PyObject_GetAttr(op, S_direct)) == NULL)
        return NULL;
    int buffered = v == Py_False, direct = v == Py_True;
    Py_DECREF(v);
    if (direct) /* the twin's answer for a direct read, without its frame: the ring's op */
        Py_RETURN_FALSE;
    if ((v = PyObject_GetAttr(op, S_state)) == NULL)
        return NULL;
    int idle = v == r->s_idle;
    Py_DECREF(v);
    if (!buffered || !idle)
        return PyObject_CallOneArg(r->fallback, op);
    PyObject *rest = PyObject_GetAttr(op, S_remaining);
    if (rest == NULL)
        return NULL;
    Py_ssize_t n_iov = PyList_Check(rest) ? PyList_GET_SIZE(rest) : 0;
    if (n_iov < 1 || n_iov > MAX_INLINE_IOV) {
        Py_DECREF(rest);
        return PyObject_CallOneArg(r->fallback, op);
    }
    struct iovec iov[MAX_INLINE_IOV];
    Py_buffer views[MAX_INLINE_IOV];
    Py_ssize_t got = 0, total = 0;
    for (; got < n_iov; got++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(rest, got), &views[got],
                               PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            break;
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
        total += views[got].len;
    }
    long long fd = -1, offset = 0, transferred = 0;
    ssize_t n = -1;
    int ok = got == n_iov && get_ll(op, S_fd, &fd) == 0 && get_ll(op, S_offset, &offset) == 0 &&
             get_ll(op, S_transferred, &transferred) == 0 &&
             /* within the file offsets (preadv2 reads -1 at the file position): else the
                twin's, which declines it and the ring's prep words the error */
             offset >= 0 && transferred >= 0 && offset <= LLONG_MAX - transferred - total;
    if (ok && fd >= 0 && fd <= INT_MAX) {
        /* The buffers stay exported (views held) across the call, so none can be resized
           or freed while the kernel copies into it. */
        Py_BEGIN_ALLOW_THREADS
        n = preadv2((int)fd, iov, (int)n_iov, (off_t)(offset + transferred), RWF_NOWAIT);
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    Py_DECREF(rest);
    if (!ok) {
        PyErr_Clear(); /* a buffer the twin will refuse with its own message */
        return PyObject_CallOneArg(r->fallback, op);
    }
    if (n < 0) { /* not cached (EAGAIN), or an error the ring will report */
        if (PyObject_SetAttr(op, S_driver_data, r->tried) < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    if (n != 0 && n != total)
        return PyObject_CallFunction(r->partial, "On", op, (Py_ssize_t)n);
    /* Whole, or EOF (a read of 0): as op.advance(n) then op.complete(0), and REAPED. */
    PyObject *t = PyLong_FromLongLong(transferred + n);
    PyObject *empty = PyList_New(0);
    int err = t == NULL || empty == NULL || PyObject_SetAttr(op, S_transferred, t) < 0 ||
              PyObject_SetAttr(op, S_remaining, empty) < 0 || PyObject_SetAttr(op, S_result, t) < 0 ||
              PyObject_SetAttr(op, S_state, r->s_reaped) < 0;
    Py_XDECREF(t);
    Py_XDECREF(empty);
    if (err)
        return NULL;
    r->inline_done++;
    Py_RETURN_TRUE;
}

/* -- completions ------------------------------------------------------------------------ */

/* The Python twin is IoUringDriver._harvest: each CQE's op is popped from ``ops`` (token ->
   op); a transfer the CQE finishes whole (res equal to the bytes left, the op SUBMITTED) is
   completed here as op.advance(res) then op.complete(res) would; every other CQE (an error,
   a short transfer, EAGAIN, another kind) goes to ``on_cqe(op, res)``, the twin's
   _on_cqe. A CQE is retired before its op is handled, so a callback that raises loses no
   other CQE: the rest stay in the CQ for the next reap.

   With a ``waker`` (the glue's, lent by the IOContext through the driver's reap_and_wake),
   such a whole transfer, a sync that succeeded, and a linked write + sync whose sync
   succeeded (link_sync_done: the twin's _on_link_cqe, first branch), goes on to REAPED here
   and is handed to ``waker(op)`` instead of ``out``: what the twin's _collect then the IOContext's _finish
   would do, without a Python frame per op when the waker is in C (see finish_and_wake).
   The third value returned counts them; the caller owes each its in-flight slot.

   A waker that raises (the IOContext's Python twin for a started op whose callback raises;
   an exception a signal handler raises in a Python frame) stops the harvest there, and
   the exception propagates: that op was reaped and handed over before the call, so it is
   counted (in ``woken``, the Ring's running total, which the caller reads also when
   harvest raises), the ops before it are in ``out`` or handed over too, and the CQEs after
   it stay in the CQ. The driver keeps ``out`` for its next reap and makes that reap come.

   Anything else that raises once an op's CQE is retired (``on_cqe``: the twin's _on_cqe, or
   an exception a signal handler raises in its frame) would lose that op: harvest keeps it
   with its CQE for ``take_raised`` (the driver's _rescue_raised, the twin's except clause,
   decides from the op whether the CQE was applied, and re-applies it at the next reap if
   not). */

static int finish_and_wake(Ring *r, PyObject *op, long long transferred, PyObject *waker);
static int link_sync_done(Ring *r, PyObject *op, PyObject *ops, unsigned long long user_data,
                          long long *total);

/* The arguments harvest and tick share, in their order. */
typedef struct {
    Py_ssize_t limit;
    PyObject *ops, *out, *on_cqe, *kinds, *s_submitted, *s_completed, *waker;
} HarvestArgs;

/* The harvest itself (ring_harvest's and ring_tick's): 0, with whether an op went on and
   whether the limit left CQEs in ``*continued`` and ``*left_over``, or -1 with an exception
   set. ``a->waker`` is NULL for none. */
static int
harvest_cqes(Ring *r, const HarvestArgs *a, int *continued, int *left_over)
{
    PyObject *ops = a->ops, *out = a->out, *waker = a->waker;
    unsigned mask = *r->cq_mask;
    Py_ssize_t taken = 0;
    unsigned long long woken_before = 0;
    *continued = *left_over = 0;
    for (;;) {
        unsigned head = *r->cq_head;
        if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
            break;
        if (a->limit > 0 && taken >= a->limit) {
            *left_over = 1;
            break;
        }
        struct u_cqe cqe = r->cqes[head & mask];
        /* The op found before its CQE is retired: a failure here (a MemoryError) leaves the
           CQE in the CQ for the next reap, where after it the op would be lost. */
        PyObject *token = PyLong_FromUnsignedLongLong(cqe.user_data);
        if (token == NULL)
            return -1;
        PyObject *op = PyDict_GetItemWithError(ops, token);
        if (op == NULL && PyErr_Occurred()) {
            Py_DECREF(token);
            return -1;
        }
        __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
        taken++;
        if (op == NULL) {
            Py_DECREF(token);
            continue; /* a cancel's own CQE, or a NOP that stood in for a refused prep */
        }
        Py_INCREF(op);
        int err = PyDict_DelItem(ops, token);
        Py_DECREF(token);
        woken_before = r->woken;
        if (err < 0)
            goto fail;
        int done = -1; /* -1: not handled here */
        if (waker != NULL && cqe.res == 0) {
            /* A sync that succeeded: as op.complete(0), then reaped and woken. */
            PyObject *kind = PyObject_GetAttr(op, S_kind);
            PyObject *state = kind ? PyObject_GetAttr(op, S_state) : NULL;
            int submitted = state != NULL && state == r->batch[B_SUBMITTED];
            int sync = submitted && (kind == r->batch[B_FSYNC] || kind == r->batch[B_FDATASYNC]);
            Py_XDECREF(kind);
            Py_XDECREF(state);
            if (PyErr_Occurred())
                goto fail;
            if (sync) {
                if (finish_and_wake(r, op, -1, waker) < 0)
                    goto fail;
                Py_DECREF(op);
                continue;
            }
            long long total;
            int linked = submitted ? link_sync_done(r, op, ops, cqe.user_data, &total) : 0;
            if (linked < 0)
                goto fail;
            if (linked) {
                if (finish_and_wake(r, op, total, waker) < 0)
                    goto fail;
                Py_DECREF(op);
                continue;
            }
        }
        if (cqe.res > 0) {
            PyObject *kind = PyObject_GetAttr(op, S_kind);
            PyObject *state = kind ? PyObject_GetAttr(op, S_state) : NULL;
            PyObject *rest = state ? PyObject_GetAttr(op, S_remaining) : NULL;
            int whole = 0;
            if (rest != NULL && state == a->s_submitted && PyList_Check(rest) &&
                PySet_Contains(a->kinds, kind) == 1) {
                long long left = 0;
                for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rest); i++) {
                    Py_ssize_t len = PyObject_Length(PyList_GET_ITEM(rest, i));
                    if (len < 0) {
                        left = -1;
                        break;
                    }
                    left += len;
                }
                whole = left == cqe.res;
            }
            Py_XDECREF(kind);
            Py_XDECREF(state);
            Py_XDECREF(rest);
            if (PyErr_Occurred())
                goto fail;
            if (whole) {
                long long transferred;
                if (get_ll(op, S_transferred, &transferred) < 0)
                    goto fail;
                if (waker != NULL) {
                    if (finish_and_wake(r, op, transferred + cqe.res, waker) < 0)
                        goto fail;
                    Py_DECREF(op);
                    continue;
                }
                PyObject *t = PyLong_FromLongLong(transferred + cqe.res);
                PyObject *empty = PyList_New(0);
                int bad = t == NULL || empty == NULL || PyObject_SetAttr(op, S_transferred, t) < 0 ||
                          PyObject_SetAttr(op, S_remaining, empty) < 0 ||
                          PyObject_SetAttr(op, S_result, t) < 0 ||
                          PyObject_SetAttr(op, S_state, a->s_completed) < 0;
                Py_XDECREF(t);
                Py_XDECREF(empty);
                if (bad)
                    goto fail;
                done = 1;
            }
        }
        if (done < 0) {
            PyObject *res = PyObject_CallFunction(a->on_cqe, "Oi", op, (int)cqe.res);
            if (res == NULL)
                goto fail;
            done = PyObject_IsTrue(res);
            Py_DECREF(res);
            if (done < 0)
                goto fail;
        }
        if (done) {
            if (PyList_Append(out, op) < 0)
                goto fail;
        } else {
            *continued = 1;
        }
        Py_DECREF(op);
        continue;
    fail:
        if (r->woken == woken_before) { /* not handed over: kept for take_raised */
            Py_XSETREF(r->raised_op, op); /* the reference taken above; nothing held before */
            r->raised_user_data = cqe.user_data;
            r->raised_res = cqe.res;
        } else {
            Py_DECREF(op);
        }
        return -1;
    }
    return 0;
}

/* The op harvest kept when it raised, and its CQE: (op, user_data, res), or None. */
static PyObject *
ring_take_raised(Ring *r, PyObject *Py_UNUSED(ignored))
{
    if (r->raised_op == NULL)
        Py_RETURN_NONE;
    PyObject *t = Py_BuildValue("(OKi)", r->raised_op, r->raised_user_data, r->raised_res);
    if (t != NULL)
        Py_CLEAR(r->raised_op);
    return t;
}

/* The waker, NULL for None, checked: C hands ops to it only with the batch's objects lent. */
static int
harvest_waker(Ring *r, HarvestArgs *a)
{
    if (a->waker == Py_None) {
        a->waker = NULL;
    } else if (r->batch[B_OPS] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "harvest with a waker needs enable_batch() first");
        return -1;
    }
    return 0;
}

static PyObject *
ring_harvest(Ring *r, PyObject *args)
{
    HarvestArgs a = {.waker = Py_None};
    if (!PyArg_ParseTuple(args, "nO!O!OO!OO|O", &a.limit, &PyDict_Type, &a.ops, &PyList_Type, &a.out,
                          &a.on_cqe, &PyFrozenSet_Type, &a.kinds, &a.s_submitted, &a.s_completed, &a.waker) ||
        ring_check(r) < 0 || harvest_waker(r, &a) < 0)
        return NULL;
    unsigned long long woken_before = r->woken;
    int continued, left_over;
    if (harvest_cqes(r, &a, &continued, &left_over) < 0)
        return NULL;
    return Py_BuildValue("(OOK)", continued ? Py_True : Py_False, left_over ? Py_True : Py_False,
                         r->woken - woken_before);
}


/* -- a loop tick's reap ------------------------------------------------------------------ */

/* The Python twin is IoUringDriver.reap (its _clear_eventfd, then _collect's harvest loop),
   for the io_uring_c driver's common tick (IoUringCDriver._tick): no backlog, no cancel to
   retry, nothing left unsubmitted. One call harvests as ring_harvest does (harvest_cqes:
   same arguments, same outcomes), then reads the completion eventfd only where the CQ was emptied, so a
   tick that leaves CQEs (the reap limit) costs no read and no write: the eventfd, unread,
   still polls readable, and the loop comes back for the rest. Where the CQ was emptied the
   eventfd is read (EAGAIN when the wake-up was another's: nothing to clear) and the CQ looked
   at again: the kernel posts a CQE (tail store, release) before it signals the eventfd
   (io_uring/io_uring.c, io_cqring_ev_posted -> io_eventfd_signal), so a CQE whose signal
   this read consumed is in the tail loaded after it; one found there gets a signal of our
   own, and no wake-up is lost. Whatever is not the common case (an op went on, CQEs wait on
   the overflow list) returns a flag for the twin, before the eventfd is touched. */

enum {
    TICK_CONTINUED = 1, /* an op went on: its SQE is queued, the caller submits */
    TICK_LEFT_OVER = 2, /* the limit left CQEs: the eventfd was not read */
    TICK_OVERFLOW = 4,  /* CQEs wait on the kernel's overflow list: the caller flushes */
    TICK_CLEARED = 8,   /* the eventfd was read */
    TICK_SIGNALLED = 16 /* ...and written again: CQEs came in after the read */
};

static PyObject *
ring_tick(Ring *r, PyObject *args)
{
    /* tick(limit, ops, out, on_cqe, transfer_kinds, SUBMITTED, COMPLETED, waker, efd)
       -> (woken, flags); parsed here and harvested by harvest_cqes, as ring_harvest is,
       with no tuple of harvest's arguments or its result built on the way. */
    HarvestArgs a;
    int efd;
    if (!PyArg_ParseTuple(args, "nO!O!OO!OOOi", &a.limit, &PyDict_Type, &a.ops, &PyList_Type, &a.out,
                          &a.on_cqe, &PyFrozenSet_Type, &a.kinds, &a.s_submitted, &a.s_completed, &a.waker,
                          &efd) ||
        ring_check(r) < 0)
        return NULL;
    if (efd < 0) {
        PyErr_Format(PyExc_ValueError, "efd %d is not a file descriptor", efd);
        return NULL;
    }
    if (harvest_waker(r, &a) < 0)
        return NULL;
    unsigned long long woken_before = r->woken;
    int continued, left_over;
    if (harvest_cqes(r, &a, &continued, &left_over) < 0)
        return NULL;
    unsigned long long woken = r->woken - woken_before;
    long flags = (continued ? TICK_CONTINUED : 0) | (left_over ? TICK_LEFT_OVER : 0);
    if (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & SQ_CQ_OVERFLOW)
        flags |= TICK_OVERFLOW;
    if (flags == 0) {
        uint64_t count;
        if (read(efd, &count, sizeof count) < 0 && errno != EAGAIN)
            return PyErr_SetFromErrno(PyExc_OSError);
        flags |= TICK_CLEARED;
        if (*r->cq_head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
            uint64_t one = 1;
            if (write(efd, &one, sizeof one) < 0 && errno != EAGAIN)
                return PyErr_SetFromErrno(PyExc_OSError);
            flags |= TICK_SIGNALLED;
        }
    }
    return Py_BuildValue("(Kl)", woken, flags);
}


/* -- batches: a tick's ops into SQEs, and whole completions to their waiters ------------- */

/* The Python twins are IoUringDriver._submit_one (drivers/io_uring.py) with the io_uring_c
   driver's _prep, and IoUringDriver._collect's reaping loop with IOContext._finish.
   submit_batch() prepares the ops C knows (READ/READV/WRITE/WRITEV, direct or buffered,
   FSYNC/FDATASYNC: first issue, IDLE) as the twin would, iovec array included, and enters
   the kernel once for the batch through ring_enter_submit; every other op (another kind,
   a read for the page-cache fast path or whose fd's mode is unknown, a buffer the kernel
   cannot take, no SQ slot left, Op.flags set) goes to the twin, submit_one(op, looked_up),
   unchanged, in its place in the batch. So the twin decides every error and every rare
   case, and a kind added in Python works through the C ring with no change here. A new
   meaning given in Python to an op of these kinds (a field the SQE must carry) must make
   batch_prep leave it to the twin: check it there. */

static int
batch_traverse(Ring *r, visitproc visit, void *arg)
{
    for (int i = 0; i < B_N; i++)
        Py_VISIT(r->batch[i]);
    return 0;
}

static void
batch_clear(Ring *r)
{
    for (int i = 0; i < B_N; i++)
        Py_CLEAR(r->batch[i]);
}

static PyObject *
ring_enable_batch(Ring *r, PyObject *args)
{
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != B_N + 1) {
        PyErr_Format(PyExc_TypeError, "enable_batch() takes %d arguments", B_N + 1);
        return NULL;
    }
    PyObject *inflight = PyTuple_GET_ITEM(args, B_INFLIGHT);
    if (!PyType_Check(inflight) || !PyDict_Check(PyTuple_GET_ITEM(args, B_OPS)) ||
        !PyDict_Check(PyTuple_GET_ITEM(args, B_FD_REFS)) || !PyDict_Check(PyTuple_GET_ITEM(args, B_FD_DIRECT))) {
        PyErr_SetString(PyExc_TypeError, "enable_batch(): InFlight must be a class, ops and fd maps dicts");
        return NULL;
    }
    int nowait = PyObject_IsTrue(PyTuple_GET_ITEM(args, B_N));
    if (nowait < 0)
        return NULL;
    batch_clear(r);
    for (int i = 0; i < B_N; i++)
        r->batch[i] = Py_NewRef(PyTuple_GET_ITEM(args, i));
    r->batch_nowait = nowait;
    Py_RETURN_NONE;
}

static PyObject *
ring_disable_batch(Ring *r, PyObject *Py_UNUSED(ignored))
{
    batch_clear(r);
    Py_RETURN_NONE;
}

static PyObject *
ring_next_token(Ring *r, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(r->next_token++);
}

static PyObject *S_sync_token, *S_zero;
static PyObject *S_token, *S_cancel_queued, *S_iovec, *S_buffers, *S_paths, *S_flags, *S_empty_tuple;

/* fd_refs[fd] += delta, deleting the entry (and fd_direct's) at zero: the twin's
   bookkeeping of which fds the ring holds ops on. */
static int
fd_ref(Ring *r, PyObject *fd, long delta)
{
    PyObject *refs = r->batch[B_FD_REFS];
    PyObject *cur = PyDict_GetItemWithError(refs, fd);
    if (cur == NULL && PyErr_Occurred())
        return -1;
    long n = cur == NULL ? 0 : PyLong_AsLong(cur);
    if (n == -1 && PyErr_Occurred())
        return -1;
    n += delta;
    if (n > 0) {
        PyObject *v = PyLong_FromLong(n);
        int err = v == NULL ? -1 : PyDict_SetItem(refs, fd, v);
        Py_XDECREF(v);
        return err;
    }
    if (cur != NULL && PyDict_DelItem(refs, fd) < 0)
        return -1;
    /* Asked first: a missing key's KeyError is an allocation, which could fail after the
       count above was dropped (finish_and_wake relies on no failure past that point). */
    int direct = PyDict_Contains(r->batch[B_FD_DIRECT], fd);
    return direct > 0 ? PyDict_DelItem(r->batch[B_FD_DIRECT], fd) : direct;
}

/* One op of a batch: 1 when its SQE is queued, 0 when it is the twin's (nothing changed),
   -1 on an exception. */
static int
batch_prep(Ring *r, PyObject *op)
{
    PyObject **b = r->batch;
    PyObject *v = PyObject_GetAttr(op, S_kind);
    if (v == NULL)
        return -1;
    int k = -1;
    for (int i = B_READ; i <= B_FDATASYNC; i++)
        if (v == b[i])
            k = i;
    Py_DECREF(v);
    if (k < 0)
        return 0;
    if ((v = PyObject_GetAttr(op, S_state)) == NULL)
        return -1;
    int idle = v == b[B_IDLE];
    Py_DECREF(v);
    if ((v = PyObject_GetAttr(op, S_driver_data)) == NULL)
        return -1;
    int fresh = v == Py_None, tried = v == b[B_TRIED];
    Py_DECREF(v);
    if (!idle || !(fresh || tried))
        return 0; /* a continuation, or an op in a state the twin refuses with its words */
    int is_read = k == B_READ || k == B_READV, transfer = k <= B_WRITEV;
    if (is_read && fresh && r->batch_nowait) {
        if ((v = PyObject_GetAttr(op, S_direct)) == NULL)
            return -1;
        int direct = v == Py_True;
        Py_DECREF(v);
        if (!direct)
            return 0; /* the page-cache fast path first, or fcntl to learn the fd's mode */
    }
    long long fd, offset = 0, transferred = 0, flags = 0;
    if (get_ll(op, S_flags, &flags) < 0 || get_ll(op, S_fd, &fd) < 0 ||
        (transfer && (get_ll(op, S_offset, &offset) < 0 ||
                                                   get_ll(op, S_transferred, &transferred) < 0))) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError) && !PyErr_ExceptionMatches(PyExc_TypeError))
            return -1;
        PyErr_Clear(); /* a value the twin refuses with its message */
        return 0;
    }
    /* Op.flags means nothing to these kinds today: one that carries any (a link, an RWF_*
       flag some later Python prep gives meaning to) is the twin's, which knows it. */
    if (flags != 0 || fd < INT_MIN || fd > INT_MAX || offset < 0 || transferred < 0 ||
        offset > LLONG_MAX - transferred)
        return 0;
    PyObject *iovec = NULL, *bufs = NULL;
    Py_ssize_t n_iov = 0;
    if (transfer) {
        PyObject *rest = PyObject_GetAttr(op, S_remaining);
        if (rest == NULL)
            return -1;
        if (!PyList_CheckExact(rest) || (n_iov = PyList_GET_SIZE(rest)) == 0 || n_iov > IOV_MAX) {
            Py_DECREF(rest);
            return 0; /* nothing left to transfer, or more buffers than a vectored op takes */
        }
        iovec = PyBytes_FromStringAndSize(NULL, n_iov * (Py_ssize_t)sizeof(struct iovec));
        if (iovec == NULL) {
            Py_DECREF(rest);
            return -1;
        }
        struct iovec *iov = (struct iovec *)PyBytes_AS_STRING(iovec);
        int buf_flags = PyBUF_C_CONTIGUOUS | (is_read ? PyBUF_WRITABLE : 0);
        for (Py_ssize_t i = 0; i < n_iov; i++) {
            Py_buffer view;
            if (PyObject_GetBuffer(PyList_GET_ITEM(rest, i), &view, buf_flags) < 0) {
                PyErr_Clear(); /* read-only for a read, not contiguous: the twin says so */
                Py_DECREF(iovec);
                Py_DECREF(rest);
                return 0;
            }
            /* Valid while the memoryview lives: the op's InFlight keeps ``bufs`` to the CQE. */
            iov[i].iov_base = view.buf;
            iov[i].iov_len = (size_t)view.len;
            PyBuffer_Release(&view);
        }
        long long total = 0;
        for (Py_ssize_t i = 0; i < n_iov; i++)
            total += (long long)iov[i].iov_len;
        if (total > LLONG_MAX - (offset + transferred)) { /* ends past the file offsets */
            Py_DECREF(iovec);
            Py_DECREF(rest);
            return 0; /* the twin refuses it with the error that names the value and the limit */
        }
        bufs = PyList_GetSlice(rest, 0, n_iov); /* a copy: advance() changes the op's list */
        Py_DECREF(rest);
        if (bufs == NULL) {
            Py_DECREF(iovec);
            return -1;
        }
    }
    struct u_sqe *sqe = get_sqe(r);
    if (sqe == NULL) { /* the SQ is full: the twin submits what is queued and goes on */
        Py_XDECREF(iovec);
        Py_XDECREF(bufs);
        return 0;
    }
    unsigned long long token = r->next_token++;
    PyTypeObject *cls = (PyTypeObject *)b[B_INFLIGHT];
    PyObject *data = cls->tp_alloc(cls, 0); /* object.__new__: no __init__ frame */
    PyObject *tok = PyLong_FromUnsignedLongLong(token);
    PyObject *fdo = PyLong_FromLongLong(fd);
    int err = data == NULL || tok == NULL || fdo == NULL ||
              PyObject_SetAttr(data, S_token, tok) < 0 ||
              PyObject_SetAttr(data, S_sync_token, S_zero) < 0 ||
              PyObject_SetAttr(data, S_cancel_queued, Py_False) < 0 ||
              PyObject_SetAttr(data, S_iovec, iovec ? iovec : Py_None) < 0 ||
              PyObject_SetAttr(data, S_buffers, bufs ? bufs : Py_None) < 0 ||
              PyObject_SetAttr(data, S_paths, S_empty_tuple) < 0 ||
              PyDict_SetItem(b[B_OPS], tok, op) < 0;
    if (!err && (PyObject_SetAttr(op, S_driver_data, data) < 0 || fd_ref(r, fdo, 1) < 0 ||
                 PyObject_SetAttr(op, S_state, b[B_SUBMITTED]) < 0)) {
        err = 1;
        PyDict_DelItem(b[B_OPS], tok);
    }
    Py_XDECREF(data);
    Py_XDECREF(tok);
    Py_XDECREF(fdo);
    if (err) {
        memset(sqe, 0, sizeof *sqe); /* taken: a NOP nobody waits for (user_data 0) */
        Py_XDECREF(iovec);
        Py_XDECREF(bufs);
        return -1;
    }
    if (transfer) {
        sqe->opcode = is_read ? OP_READV : OP_WRITEV;
        sqe->addr = (uint64_t)(uintptr_t)PyBytes_AS_STRING(iovec); /* kept by the op's InFlight */
        sqe->len = (uint32_t)n_iov;
        sqe->off = (uint64_t)(offset + transferred);
    } else {
        sqe->opcode = OP_FSYNC;
        sqe->op_flags = k == B_FDATASYNC ? 1 /* IORING_FSYNC_DATASYNC */ : 0;
    }
    sqe->fd = (int32_t)fd;
    sqe->user_data = token;
    Py_XDECREF(iovec);
    Py_XDECREF(bufs);
    r->batch_prepped++;
    return 1;
}

static PyObject *
ring_submit_batch(Ring *r, PyObject *args)
{
    /* submit_batch(ops, looked_up) -> SQEs left queued after the one io_uring_enter (0: the
       kernel took all), or -1 when nothing was queued. A refused enter (EAGAIN, EBUSY, EINTR:
       the kernel is short of resources) counts as left, as the twin's _submit_sq. */
    PyObject *ops, *looked_up;
    if (!PyArg_ParseTuple(args, "OO", &ops, &looked_up) || ring_check(r) < 0)
        return NULL;
    if (r->batch[B_SUBMIT_ONE] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "submit_batch() needs enable_batch() first");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(ops, "submit_batch() takes a sequence of ops");
    if (seq == NULL)
        return NULL;
    int queued = 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *op = PySequence_Fast_GET_ITEM(seq, i);
        int got = batch_prep(r, op);
        if (got == 0) {
            PyObject *res = PyObject_CallFunctionObjArgs(r->batch[B_SUBMIT_ONE], op, looked_up, NULL);
            got = res == NULL ? -1 : PyObject_IsTrue(res);
            Py_XDECREF(res);
        }
        if (got < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        queued |= got;
    }
    Py_DECREF(seq);
    if (!queued)
        return PyLong_FromLong(-1);
    if (r->fd < 0) /* a twin that closed the ring: nothing to enter */
        return PyLong_FromLong(0);
    long left = ring_enter_submit(r);
    if (left < 0) {
        if (errno != EAGAIN && errno != EBUSY && errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        left = 1;
    }
    return PyLong_FromLong(left);
}

/* Whether ``user_data`` is the sync CQE of a linked write + sync (WRITE_SYNC) held by ``op``:
   its InFlight's ``sync_token`` (0 on every other op; tokens start at 1). A sync CQE that
   succeeded means the write before it was whole (a failed or short write cancels the link,
   and its own CQE, handled in Python, drops the sync's user_data first), so this is the
   twin's _on_link_cqe, first branch: the write's user_data leaves ``ops`` (gone already
   where its CQE was posted), and ``*total`` is the op's bytes so far plus what was left
   (op.advance of the rest; finish_and_wake then does op.complete). 1 when it is such a CQE,
   0 when not, -1 with an exception set. */
static int
link_sync_done(Ring *r, PyObject *op, PyObject *ops, unsigned long long user_data, long long *total)
{
    PyObject *data = PyObject_GetAttr(op, S_driver_data);
    if (data == NULL)
        return -1;
    if (!PyObject_TypeCheck(data, (PyTypeObject *)r->batch[B_INFLIGHT])) {
        Py_DECREF(data);
        return 0;
    }
    PyObject *sync = PyObject_GetAttr(data, S_sync_token);
    unsigned long long sync_token = sync != NULL ? PyLong_AsUnsignedLongLong(sync) : 0;
    Py_XDECREF(sync);
    if (PyErr_Occurred() || sync_token == 0 || sync_token != user_data) {
        Py_DECREF(data);
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *token = PyObject_GetAttr(data, S_token);
    Py_DECREF(data);
    if (token == NULL)
        return -1;
    int held = PyDict_Contains(ops, token);
    int bad = held < 0 || (held == 1 && PyDict_DelItem(ops, token) < 0);
    Py_DECREF(token);
    long long done;
    if (bad || get_ll(op, S_transferred, &done) < 0)
        return -1;
    PyObject *rest = PyObject_GetAttr(op, S_remaining);
    if (rest == NULL)
        return -1;
    if (!PyList_Check(rest)) {
        Py_DECREF(rest);
        PyErr_SetString(PyExc_TypeError, "a linked write + sync's remaining buffers are not a list");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rest); i++) {
        Py_ssize_t len = PyObject_Length(PyList_GET_ITEM(rest, i));
        if (len < 0) {
            Py_DECREF(rest);
            return -1;
        }
        done += len;
    }
    Py_DECREF(rest);
    *total = done;
    return 1;
}

/* A whole transfer (``transferred``: its new total) or a sync that succeeded (-1): the
   twin's op.advance + op.complete, _collect's REAPED bookkeeping, then ``waker(op)`` in place
   of IOContext._finish's glue.wake. */
static int
finish_and_wake(Ring *r, PyObject *op, long long transferred, PyObject *waker)
{
    /* What may fail (a MemoryError) comes before the op changes, and the fd's count before
       driver_data lets go of it: a failure leaves the op as its CQE found it, which harvest
       keeps with the CQE for take_raised (applied again at the next reap), never REAPED and
       not handed over (the twin's _collect would then count the fd twice, or never hand the
       op to anyone). REAPED is the last step before the waker. */
    PyObject *t = PyLong_FromLongLong(transferred >= 0 ? transferred : 0);
    PyObject *empty = transferred >= 0 ? PyList_New(0) : NULL;
    PyObject *data = NULL, *fd = NULL;
    int ok = 0;
    if (t == NULL || (transferred >= 0 && empty == NULL))
        goto done;
    data = PyObject_GetAttr(op, S_driver_data);
    if (data == NULL)
        goto done;
    if (PyObject_TypeCheck(data, (PyTypeObject *)r->batch[B_INFLIGHT])) {
        fd = PyObject_GetAttr(op, S_fd);
        if (fd == NULL || fd_ref(r, fd, -1) < 0 || PyObject_SetAttr(op, S_driver_data, Py_None) < 0)
            goto done;
    }
    if (transferred >= 0 &&
        (PyObject_SetAttr(op, S_transferred, t) < 0 || PyObject_SetAttr(op, S_remaining, empty) < 0))
        goto done;
    if (PyObject_SetAttr(op, S_result, t) < 0 || PyObject_SetAttr(op, S_state, r->batch[B_REAPED]) < 0)
        goto done;
    ok = 1;
done:
    Py_XDECREF(t);
    Py_XDECREF(empty);
    Py_XDECREF(data);
    Py_XDECREF(fd);
    if (!ok)
        return -1;
    r->woken++; /* reaped and handed over, whatever the waker does with it (see harvest) */
    PyObject *res = PyObject_CallOneArg(waker, op);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

static PyObject *
ring_get_batch_prepped(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(r->batch_prepped);
}

static PyObject *
ring_get_woken(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(r->woken);
}

static PyObject *
ring_get_inline_done(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(r->inline_done);
}

static PyObject *
ring_close(Ring *r, PyObject *Py_UNUSED(ignored))
{
    ring_release(r);
    Py_RETURN_NONE;
}

static PyObject *
ring_get_fd(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(r->fd);
}

static PyObject *
ring_get_sq_entries(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(r->sq_entries);
}

static PyObject *
ring_get_cq_entries(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(r->cq_entries);
}

static PyObject *
ring_get_features(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(r->features);
}

static PyObject *
ring_get_submit_all(Ring *r, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(r->setup_flags & SETUP_SUBMIT_ALL);
}

static PyObject *
ring_get_setup_flags(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(r->setup_flags);
}

static PyObject *
ring_get_sqpoll(Ring *r, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(r->setup_flags & SETUP_SQPOLL);
}

static PyObject *
ring_get_sqpoll_wakeups(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(r->sqpoll_wakeups);
}

static PyMethodDef ring_methods[] = {
    {"prep_readv", (PyCFunction)ring_prep_readv, METH_VARARGS, "prep_readv(fd, iovec, offset, user_data) -> bool"},
    {"prep_writev", (PyCFunction)ring_prep_writev, METH_VARARGS, "prep_writev(fd, iovec, offset, user_data) -> bool"},
    {"prep_write_sync", (PyCFunction)ring_prep_write_sync, METH_VARARGS,
     "prep_write_sync(fd, iovec, offset, fsync_flags, write_user_data, sync_user_data) -> bool (both SQEs or none)"},
    {"prep_fsync", (PyCFunction)ring_prep_fsync, METH_VARARGS, "prep_fsync(fd, flags, user_data) -> bool"},
    {"prep_fallocate", (PyCFunction)ring_prep_fallocate, METH_VARARGS,
     "prep_fallocate(fd, mode, offset, length, user_data) -> bool"},
    {"prep_ftruncate", (PyCFunction)ring_prep_ftruncate, METH_VARARGS, "prep_ftruncate(fd, length, user_data) -> bool"},
    {"prep_path", (PyCFunction)ring_prep_path, METH_VARARGS,
     "prep_path(opcode, dfd, path, newpath, len, flags, user_data) -> bool (OPENAT, CLOSE, RENAMEAT, UNLINKAT, "
     "MKDIRAT, LINKAT, SYMLINKAT)"},
    {"prep_statx", (PyCFunction)ring_prep_statx, METH_VARARGS,
     "prep_statx(dfd, path, buffer, flags, mask, user_data) -> bool"},
    {"prep_nop", (PyCFunction)ring_prep_nop, METH_VARARGS, "prep_nop(user_data) -> bool"},
    {"prep_cancel64", (PyCFunction)ring_prep_cancel64, METH_VARARGS, "prep_cancel64(target, flags, user_data) -> bool"},
    {"submit", (PyCFunction)ring_submit, METH_NOARGS, "submit() -> SQEs left queued (0: the kernel took all)"},
    {"unsubmitted", (PyCFunction)ring_unsubmitted, METH_NOARGS, "unsubmitted() -> SQEs queued, not consumed"},
    {"get_events", (PyCFunction)ring_get_events, METH_NOARGS, "get_events(): flush the CQ overflow list"},
    {"cq_has_overflow", (PyCFunction)ring_cq_has_overflow, METH_NOARGS, "cq_has_overflow() -> bool"},
    {"reap", (PyCFunction)ring_reap, METH_VARARGS, "reap(limit) -> ([(user_data, res)], left_over)"},
    {"harvest", (PyCFunction)ring_harvest, METH_VARARGS,
     "harvest(limit, ops, out, on_cqe, transfer_kinds, SUBMITTED, COMPLETED, waker=None) -> (continued, left_over, woken)"},
    {"take_raised", (PyCFunction)ring_take_raised, METH_NOARGS,
     "take_raised() -> (op, user_data, res) harvest kept when it raised, or None"},
    {"tick", (PyCFunction)ring_tick, METH_VARARGS,
     "tick(limit, ops, out, on_cqe, transfer_kinds, SUBMITTED, COMPLETED, waker, efd) -> (woken, flags)"},
    {"register_eventfd", (PyCFunction)ring_register_eventfd, METH_VARARGS, "register_eventfd(fd)"},
    {"unregister_eventfd", (PyCFunction)ring_unregister_eventfd, METH_NOARGS, "unregister_eventfd()"},
    {"probe", (PyCFunction)ring_probe, METH_NOARGS, "probe() -> frozenset of opcodes, or None"},
    {"close", (PyCFunction)ring_close, METH_NOARGS, "close(): unmap and close the ring (idempotent)"},
    {"enable_inline", (PyCFunction)ring_enable_inline, METH_VARARGS,
     "enable_inline(READ, READV, IDLE, REAPED, tried, fallback, partial): turn try_inline on"},
    {"disable_inline", (PyCFunction)ring_disable_inline, METH_NOARGS, "disable_inline(): try_inline -> False"},
    {"try_inline", (PyCFunction)ring_try_inline, METH_O, "try_inline(op) -> bool (IoUringDriver.try_inline)"},
    {"enable_batch", (PyCFunction)ring_enable_batch, METH_VARARGS,
     "enable_batch(READ, READV, WRITE, WRITEV, FSYNC, FDATASYNC, IDLE, SUBMITTED, COMPLETED, REAPED, tried, "
     "InFlight, ops, fd_refs, fd_direct, submit_one, nowait): turn submit_batch and harvest's waker on"},
    {"disable_batch", (PyCFunction)ring_disable_batch, METH_NOARGS, "disable_batch(): drop what enable_batch lent"},
    {"next_token", (PyCFunction)ring_next_token, METH_NOARGS, "next_token() -> the next op's user_data"},
    {"submit_batch", (PyCFunction)ring_submit_batch, METH_VARARGS,
     "submit_batch(ops, looked_up) -> SQEs left queued after the enter, -1 when none was queued"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ring_getset[] = {
    {"fd", (getter)ring_get_fd, NULL, "the ring fd (-1 once closed)", NULL},
    {"sq_entries", (getter)ring_get_sq_entries, NULL, "SQ size", NULL},
    {"cq_entries", (getter)ring_get_cq_entries, NULL, "CQ size", NULL},
    {"features", (getter)ring_get_features, NULL, "IORING_FEAT_* bits", NULL},
    {"submit_all", (getter)ring_get_submit_all, NULL, "whether IORING_SETUP_SUBMIT_ALL is on", NULL},
    {"setup_flags", (getter)ring_get_setup_flags, NULL,
     "the IORING_SETUP_* flags the kernel set the ring up with", NULL},
    {"sqpoll", (getter)ring_get_sqpoll, NULL, "whether a kernel thread polls the SQ (IORING_SETUP_SQPOLL)", NULL},
    {"sqpoll_wakeups", (getter)ring_get_sqpoll_wakeups, NULL, "submits that had to wake the SQ thread", NULL},
    {"cqe_skip", (getter)ring_get_cqe_skip, NULL, "whether the kernel has IOSQE_CQE_SKIP_SUCCESS (IORING_FEAT_CQE_SKIP)", NULL},
    {"inline_done", (getter)ring_get_inline_done, NULL, "ops try_inline completed whole in C", NULL},
    {"batch_prepped", (getter)ring_get_batch_prepped, NULL, "ops submit_batch prepped in C", NULL},
    {"woken", (getter)ring_get_woken, NULL, "ops harvest reaped and handed to a waker (a running total)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_clear = (inquiry)ring_gc_clear,
    .tp_doc = "Ring(entries, submit_all=True, *, sqpoll=False, sq_thread_idle=0): an io_uring on the raw system calls",
    .tp_new = ring_new,
    .tp_init = (initproc)ring_init,
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_methods = ring_methods,
    .tp_getset = ring_getset,
};

/* -- the file calls' fast path (FastPath, FastRead, Done) -------------------------------- */

/* What ``await f.preadinto(buf, off)`` and ``await f.pread(n, off)`` cost when the page cache
   holds the bytes: one preadv2(RWF_NOWAIT) and one await, with no Op, no coroutine frame and
   no IOContext call. The Python twin is the whole pure path (AsyncFile._preadinto/_pread ->
   IOContext.run -> the driver's try_inline), which takes every case this does not:

   - FastPath: one per driver, made by the io_uring_c driver when its page-cache fast path is
     on; ``disable()`` (the driver closes) turns every reader of it off, and ``done`` counts
     the reads it completed (the driver adds them to its statistics).
   - FastRead: one per open file (``FastPath.reader(fd, owner_get, owner, after, max_read)``).
     ``preadinto(buf, offset)`` / ``pread(n, offset)`` return an awaitable of the result when
     the read was whole (or reached end of file), else None: the caller then takes the pure
     path, which checks and words every error (a closed file never reaches here: the file
     drops its reader first). None for anything unusual: an argument that is not a plain
     int, an offset past off_t, a buffer that is empty, read-only or not contiguous, a read
     the cache holds in part or not at all (the pure path tries it again and goes to the
     ring), any error, a call from another loop (``owner_get()`` is not ``owner``) or from a
     fork child (a pthread_atfork counter, as drivers/_fork.py's), a disabled FastPath.
     ``read_now(n, offset)`` / ``readinto_now(buf, offset)`` serve the file's cursor calls
     (read, readinto where they are one read at the cursor): the same, but only with a Done
     that does not yield (see fastread_cursor_ok), so the file moves its cursor at once.
     ``pread_cached(n, offset)`` / ``preadinto_cached(buf, offset)`` return the result itself
     (or None), for a caller that has just made its schedule point: the cursor calls on a
     reader whose awaitables checkpoint (``checkpoints``, trio), which checkpoint first, so
     that a cancellation there leaves the cursor where it was, and then read.
   - Done: the awaitable of a completed read. ``after`` None (asyncio and uvloop) makes a Done:
     awaiting it returns the result at once, except that every YIELD_EVERY_OPS-th completion,
     or the first after YIELD_EVERY_BYTES bytes, since the last such yield, in this process,
     first yields once to the loop (a bare yield: asyncio's Task reschedules the task behind
     everything runnable, as asyncio.sleep(0) does; a cancellation is delivered there). While
     a task does not yield no other task runs, so every completion counted between two of its
     yields is its own: the bound holds per task. ``after`` a callable (trio) is called with
     the result and its awaitable returned (trio: a checkpoint per call, trio's convention).

   A read of at least GIL_RELEASE_BYTES releases the GIL around the copy; a shorter one costs
   less than handing the GIL over (RWF_NOWAIT: it never waits for the device either).

   The owner check without a system call (Python 3.10 and 3.11 only). There, the C
   ``_asyncio._get_running_loop`` (the asyncio glue's ``owner_get``) calls getpid(2) on every
   call to tell a fork child from its parent (CPython 3.11 Modules/_asynciomodule.c,
   get_running_loop: ``rl->rl_pid != getpid()``; glibc has not cached getpid since 2.25): a
   second system call per cached read (its cost: docs/benchmarks.md, "The warm path at
   QD32"). It finds the loop in the calling thread's state dict, under
   "__asyncio_running_event_loop__": a ``_RunningLoopHolder`` whose first field after the
   object header is the loop (``rl_loop``; the pid follows), set by set_running_loop, which
   uvloop calls too. A reader whose ``owner_get`` is that function reads the holder itself:
   the owner is running in this thread when the holder there names it, as get_running_loop
   decides, with the fork child told by the pthread_atfork counter instead of the pid. The
   layout is trusted only once seen to agree with the function: the first time
   ``owner_get()`` returns the owner and the holder's type is named _RunningLoopHolder, is
   large enough and names the same loop, that type is learned; an object of any other type
   under the key sends the check back to ``owner_get()``. From 3.12 on get_running_loop does
   not call getpid (and there is no holder): this is not compiled there. The ring path's
   RunPath (below) makes the same check through the same function, owner_here. */

#define YIELD_EVERY_OPS 16
#define YIELD_EVERY_BYTES (256 * 1024)
#define GIL_RELEASE_BYTES (64 * 1024)

static unsigned long fp_forks;          /* bumped in every fork child */
static unsigned fp_ops_since_yield;     /* completions since a Done last yielded */
static long long fp_bytes_since_yield;  /* bytes read by them */

static void
fp_after_fork_child(void)
{
    fp_forks++;
}

typedef struct {
    PyObject_HEAD
    PyObject *result;
    int yield; /* yield once to the loop before returning */
} Done;

static void
done_dealloc(Done *d)
{
    Py_XDECREF(d->result);
    PyObject_Free(d);
}

static PyObject *
done_await(Done *d)
{
    return Py_NewRef(d);
}

static PySendResult
done_send(Done *d, PyObject *Py_UNUSED(arg), PyObject **out)
{
    if (d->yield) {
        d->yield = 0;
        *out = Py_NewRef(Py_None);
        return PYGEN_NEXT;
    }
    *out = Py_NewRef(d->result);
    return PYGEN_RETURN;
}

static PyObject *
done_next(Done *d)
{
    /* The interpreter's SEND uses am_send (3.10, 3.11) or this (3.12+, and next()). */
    if (d->yield) {
        d->yield = 0;
        Py_RETURN_NONE;
    }
    PyErr_SetObject(PyExc_StopIteration, d->result); /* an int or bytes: never a tuple */
    return NULL;
}

/* send/throw/close make a Done a collections.abc.Coroutine (with __await__), so what takes
   only coroutines (asyncio.create_task, anyio's start_soon) takes it as it took the pure
   path's coroutine. */

static PyObject *
done_send_method(Done *d, PyObject *Py_UNUSED(value))
{
    return done_next(d);
}

/* The exception ``throw(typ[, val[, tb]])`` raises, built as a coroutine's throw builds it
   (CPython's _gen_throw): an instance as it is (with no separate value), a class
   instantiated from ``val`` (an instance of it taken as it is, a tuple as the arguments,
   None as none), ``tb`` attached. A new reference, or NULL with the error set. */
static PyObject *
thrown_exception(PyObject *typ, PyObject *val, PyObject *tb)
{
    if (tb == Py_None)
        tb = NULL;
    if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    PyObject *exc;
    if (PyExceptionInstance_Check(typ)) {
        if (val != NULL && val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        exc = Py_NewRef(typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyObject *t, *b;
        PyErr_SetObject(typ, val != NULL ? val : Py_None);
        PyErr_Fetch(&t, &exc, &b);
        PyErr_NormalizeException(&t, &exc, &b); /* typ(val), or what calling it raised */
        Py_XDECREF(t);
        Py_XDECREF(b);
        if (exc == NULL) {
            PyErr_SetString(PyExc_SystemError, "throw(): the exception could not be built");
            return NULL;
        }
    } else {
        PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException");
        return NULL;
    }
    if (tb != NULL && PyException_SetTraceback(exc, tb) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    return exc;
}

static PyObject *
done_throw(Done *d, PyObject *args)
{
    /* Thrown in at the yield (a cancellation): raised as if the caller had no handler. */
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_ParseTuple(args, "O|OO:throw", &typ, &val, &tb))
        return NULL;
    d->yield = 0;
    PyObject *exc = thrown_exception(typ, val, tb);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *
done_close(Done *d, PyObject *Py_UNUSED(ignored))
{
    d->yield = 0;
    Py_RETURN_NONE;
}

static PyObject *
done_get_result(Done *d, void *Py_UNUSED(closure))
{
    return Py_NewRef(d->result);
}

static PyGetSetDef done_getset[] = {
    {"result", (getter)done_get_result, NULL, "the read's result (the count, or the bytes)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef done_methods[] = {
    {"send", (PyCFunction)done_send_method, METH_O, "send(value): as a coroutine's"},
    {"throw", (PyCFunction)done_throw, METH_VARARGS, "throw(exc): raises it"},
    {"close", (PyCFunction)done_close, METH_NOARGS, "close()"},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods done_as_async = {
    .am_await = (unaryfunc)done_await,
    .am_send = (sendfunc)done_send,
};

static PyTypeObject DoneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.Done",
    .tp_basicsize = sizeof(Done),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The awaitable of a read the page cache completed (see FastRead).",
    .tp_dealloc = (destructor)done_dealloc,
    .tp_as_async = &done_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)done_next,
    .tp_methods = done_methods,
    .tp_getset = done_getset,
};

typedef struct {
    PyObject_HEAD
    int enabled;
    unsigned long long done;
} FastPath;

typedef struct {
    PyObject_HEAD
    FastPath *fp;
    int fd;
    unsigned long forks;
    Py_ssize_t max_read;
    PyObject *owner_get, *owner, *after;
    int reads_holder; /* owner_get is the C _asyncio._get_running_loop (Python < 3.12) */
} FastRead;

#if PY_VERSION_HEX < 0x030C0000
/* The C _asyncio._get_running_loop and the thread-state dict key of its holder, found once;
   the holder's type once learned (see "The owner check without a system call"). */
static PyObject *fp_asyncio_get_running_loop;
static PyObject *fp_running_loop_key;
static PyTypeObject *fp_holder_type;

typedef struct {
    PyObject_HEAD
    PyObject *rl_loop; /* borrowed here: the holder owns it */
} fp_running_loop_holder;

static int
fp_reads_holder(PyObject *owner_get)
{
    if (fp_running_loop_key == NULL) {
        PyObject *mod = PyImport_ImportModule("_asyncio");
        if (mod == NULL) {
            PyErr_Clear(); /* no C asyncio: owner_get is called every time */
            return 0;
        }
        fp_asyncio_get_running_loop = PyObject_GetAttrString(mod, "_get_running_loop");
        Py_DECREF(mod);
        if (fp_asyncio_get_running_loop == NULL) {
            PyErr_Clear();
            return 0;
        }
        fp_running_loop_key = PyUnicode_InternFromString("__asyncio_running_event_loop__");
        if (fp_running_loop_key == NULL) {
            PyErr_Clear();
            Py_CLEAR(fp_asyncio_get_running_loop);
            return 0;
        }
    }
    return owner_get == fp_asyncio_get_running_loop;
}

/* What the calling thread's state dict holds under the running loop's key (borrowed), or
   NULL: nothing there, or no dict (nothing raised). */
static PyObject *
fp_running_loop_holder_now(void)
{
    PyObject *d = PyThreadState_GetDict();
    if (d == NULL)
        return NULL;
    PyObject *h = PyDict_GetItemWithError(d, fp_running_loop_key);
    if (h == NULL)
        PyErr_Clear();
    return h;
}

/* Learn the holder's type from ``h`` if it agrees with ``owner_get()``, which just returned
   ``loop`` (see above). */
static void
fp_learn_holder(PyObject *h, PyObject *loop)
{
    if (fp_holder_type != NULL || h == NULL)
        return;
    PyTypeObject *t = Py_TYPE(h);
    const char *dot = strrchr(t->tp_name, '.');
    if (strcmp(dot != NULL ? dot + 1 : t->tp_name, "_RunningLoopHolder") == 0 &&
        t->tp_basicsize >= (Py_ssize_t)sizeof(fp_running_loop_holder) &&
        ((fp_running_loop_holder *)h)->rl_loop == loop)
        fp_holder_type = (PyTypeObject *)Py_NewRef(t);
}
#endif

static PyTypeObject FastPathType;
static PyTypeObject FastReadType;

static PyObject *
fastpath_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "FastPath() takes no arguments");
        return NULL;
    }
    FastPath *fp = (FastPath *)type->tp_alloc(type, 0);
    if (fp != NULL)
        fp->enabled = 1;
    return (PyObject *)fp;
}

static PyObject *
fastpath_disable(FastPath *fp, PyObject *Py_UNUSED(ignored))
{
    fp->enabled = 0;
    Py_RETURN_NONE;
}

static PyObject *
fastpath_reader(FastPath *fp, PyObject *args)
{
    int fd;
    Py_ssize_t max_read;
    PyObject *owner_get, *owner, *after;
    if (!PyArg_ParseTuple(args, "iOOOn", &fd, &owner_get, &owner, &after, &max_read))
        return NULL;
    if (!PyCallable_Check(owner_get) || (after != Py_None && !PyCallable_Check(after))) {
        PyErr_SetString(PyExc_TypeError, "owner_get and after (unless None) must be callable");
        return NULL;
    }
    if (fd < 0 || max_read < 1) {
        PyErr_Format(PyExc_ValueError, "fd %d must be >= 0 and max_read %zd >= 1", fd, max_read);
        return NULL;
    }
    FastRead *fr = PyObject_GC_New(FastRead, &FastReadType);
    if (fr == NULL)
        return NULL;
    fr->fp = (FastPath *)Py_NewRef(fp);
    fr->fd = fd;
    fr->forks = fp_forks;
    fr->max_read = max_read;
    fr->owner_get = Py_NewRef(owner_get);
    fr->owner = Py_NewRef(owner);
    fr->after = Py_NewRef(after);
#if PY_VERSION_HEX < 0x030C0000
    fr->reads_holder = fp_reads_holder(owner_get);
#else
    fr->reads_holder = 0;
#endif
    PyObject_GC_Track(fr);
    return (PyObject *)fr;
}

static PyObject *
fastpath_get_done(FastPath *fp, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(fp->done);
}

static PyObject *
fastpath_get_enabled(FastPath *fp, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(fp->enabled);
}

static PyMethodDef fastpath_methods[] = {
    {"disable", (PyCFunction)fastpath_disable, METH_NOARGS, "disable(): every reader returns None from now on"},
    {"reader", (PyCFunction)fastpath_reader, METH_VARARGS,
     "reader(fd, owner_get, owner, after, max_read) -> FastRead for one file"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fastpath_getset[] = {
    {"done", (getter)fastpath_get_done, NULL, "reads completed here", NULL},
    {"enabled", (getter)fastpath_get_enabled, NULL, "False once disabled", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FastPath(): the file calls' page-cache fast path of one driver",
    .tp_new = fastpath_new,
    .tp_methods = fastpath_methods,
    .tp_getset = fastpath_getset,
};

static int
fastread_traverse(FastRead *fr, visitproc visit, void *arg)
{
    Py_VISIT(fr->fp);
    Py_VISIT(fr->owner_get);
    Py_VISIT(fr->owner);
    Py_VISIT(fr->after);
    return 0;
}

static int
fastread_clear(FastRead *fr)
{
    Py_CLEAR(fr->fp);
    Py_CLEAR(fr->owner_get);
    Py_CLEAR(fr->owner);
    Py_CLEAR(fr->after);
    return 0;
}

static void
fastread_dealloc(FastRead *fr)
{
    PyObject_GC_UnTrack(fr);
    fastread_clear(fr);
    PyObject_GC_Del(fr);
}

/* 1 when called from the loop (and thread) that ``owner_get() is owner`` names; 0 else,
   nothing raised (no loop running here: the pure path raises WrongLoopError). */
static int
called_from_owner(PyObject *owner_get, PyObject *owner)
{
    PyObject *cur = PyObject_CallNoArgs(owner_get);
    if (cur == NULL) {
        PyErr_Clear();
        return 0;
    }
    int same = cur == owner;
    Py_DECREF(cur);
    return same;
}

/* called_from_owner without its system call where the thread's running-loop holder already
   names the owner (``reads_holder``: see "The owner check without a system call"). Serves
   the fast path's reader and the ring path alike. */
static int
owner_here(PyObject *owner_get, PyObject *owner, int reads_holder)
{
#if PY_VERSION_HEX < 0x030C0000
    if (reads_holder && fp_holder_type != NULL) {
        PyObject *h = fp_running_loop_holder_now();
        if (h != NULL && Py_TYPE(h) == fp_holder_type && ((fp_running_loop_holder *)h)->rl_loop == owner)
            return 1; /* the owner runs in this thread: see above */
    }
#endif
    int same = called_from_owner(owner_get, owner);
#if PY_VERSION_HEX < 0x030C0000
    if (same && reads_holder)
        fp_learn_holder(fp_running_loop_holder_now(), owner);
#else
    (void)reads_holder; /* 3.12+: asyncio's own check makes no system call */
#endif
    return same;
}

/* 1 when this call may take the fast path: enabled, same process, called from the owner. */
static int
fastread_ready(FastRead *fr)
{
    if (fr->fp == NULL || !fr->fp->enabled || fr->forks != fp_forks)
        return 0;
    return owner_here(fr->owner_get, fr->owner, fr->reads_holder);
}

/* A file offset the pure path would accept for ``len`` bytes: a plain int, 0 <= offset and
   offset + len <= OFF_T_MAX (2**63 - 1). 0 for anything else (nothing raised). */
static int
fastread_offset(PyObject *o, Py_ssize_t len, long long *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || v < 0 || v > LLONG_MAX - (long long)len)
        return 0;
    *out = v;
    return 1;
}

/* Read ``len`` bytes at ``offset`` from the page cache: 1 when whole or cut short by end of
   file (``*got``), 0 when not cached in whole, or on any error (nothing raised). As the
   twin's _read_inline: a short read is followed by another, which returns 0 at end of file
   or EAGAIN where the cache holds no more. */
static int
fastread_read(int fd, char *buf, Py_ssize_t len, long long offset, Py_ssize_t *got)
{
    Py_ssize_t have = 0;
    while (have < len) {
        struct iovec iov = {buf + have, (size_t)(len - have)};
        ssize_t n;
        if (len - have >= GIL_RELEASE_BYTES) {
            Py_BEGIN_ALLOW_THREADS
            n = preadv2(fd, &iov, 1, (off_t)(offset + have), RWF_NOWAIT);
            Py_END_ALLOW_THREADS
        } else {
            n = preadv2(fd, &iov, 1, (off_t)(offset + have), RWF_NOWAIT);
        }
        if (n < 0)
            return 0;
        if (n == 0)
            break;
        have += n;
    }
    *got = have;
    return 1;
}

/* A cursor call (read_now/readinto_now) must not yield: the file moves its cursor as soon as
   the call returns, so a cancellation delivered at a yield would lose bytes the cursor went
   past. So it declines (the caller's pure path, which yields, runs instead) where a Done
   would yield, or where ``after`` makes the awaitable (trio's checkpoint); declining where
   the rule asks for a yield restarts the count, as that path yields. */
static int
fastread_cursor_ok(FastRead *fr, Py_ssize_t len)
{
    if (fr->after != Py_None)
        return 0;
    if (fp_ops_since_yield + 1 >= YIELD_EVERY_OPS || fp_bytes_since_yield + len >= YIELD_EVERY_BYTES) {
        fp_ops_since_yield = 0;
        fp_bytes_since_yield = 0;
        return 0;
    }
    return 1;
}

/* What a call answers a read it completed with: a Done that may yield, or ``after``'s
   awaitable (pread, preadinto); a Done that never yields (read_now, readinto_now); the result
   itself (pread_cached, preadinto_cached). */
enum fastread_answer { FR_AWAITABLE, FR_CURSOR, FR_RESULT };

/* The answer to a completed read (steals ``result``). */
static PyObject *
fastread_done(FastRead *fr, PyObject *result, Py_ssize_t got, enum fastread_answer answer)
{
    if (result == NULL)
        return NULL;
    fr->fp->done++;
    if (answer == FR_RESULT)
        return result;
    if (fr->after != Py_None) {
        PyObject *aw = PyObject_CallOneArg(fr->after, result);
        Py_DECREF(result);
        return aw;
    }
    Done *d = PyObject_New(Done, &DoneType);
    if (d == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    d->result = result;
    fp_bytes_since_yield += got;
    if (++fp_ops_since_yield >= YIELD_EVERY_OPS || fp_bytes_since_yield >= YIELD_EVERY_BYTES) {
        fp_ops_since_yield = 0;
        fp_bytes_since_yield = 0;
        d->yield = 1;
    } else {
        d->yield = 0;
    }
    return (PyObject *)d;
}

static PyObject *
fastread_readinto(FastRead *fr, PyObject *const *args, Py_ssize_t nargs, enum fastread_answer answer)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "preadinto(buf, offset) takes 2 arguments, not %zd", nargs);
        return NULL;
    }
    if (!fastread_ready(fr))
        Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear(); /* the pure path words the error */
        Py_RETURN_NONE;
    }
    long long offset;
    Py_ssize_t got = 0;
    /* The buffer stays exported across the read: it cannot be resized or freed meanwhile. */
    int ok = view.len > 0 && fastread_offset(args[1], view.len, &offset) &&
             (answer != FR_CURSOR || fastread_cursor_ok(fr, view.len)) &&
             fastread_read(fr->fd, view.buf, view.len, offset, &got);
    PyBuffer_Release(&view);
    if (!ok)
        Py_RETURN_NONE;
    return fastread_done(fr, PyLong_FromSsize_t(got), got, answer);
}

static PyObject *
fastread_read_n(FastRead *fr, PyObject *const *args, Py_ssize_t nargs, enum fastread_answer answer)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "pread(n, offset) takes 2 arguments, not %zd", nargs);
        return NULL;
    }
    if (!fastread_ready(fr) || !PyLong_CheckExact(args[0]))
        Py_RETURN_NONE;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(args[0], &overflow);
    long long offset;
    if (overflow || n < 1 || n > fr->max_read || !fastread_offset(args[1], (Py_ssize_t)n, &offset) ||
        (answer == FR_CURSOR && !fastread_cursor_ok(fr, (Py_ssize_t)n)))
        Py_RETURN_NONE;
    /* A new bytes object nobody else sees yet: read straight into it. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (out == NULL)
        return NULL;
    Py_ssize_t got = 0;
    if (!fastread_read(fr->fd, PyBytes_AS_STRING(out), (Py_ssize_t)n, offset, &got)) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (got < n && _PyBytes_Resize(&out, got) < 0)
        return NULL;
    return fastread_done(fr, out, got, answer);
}

/* The entry points: each body with its answer. */
#define FASTREAD_ENTRY(name, body, answer)                                          \
    static PyObject *name(FastRead *fr, PyObject *const *args, Py_ssize_t nargs) \
    {                                                                            \
        return body(fr, args, nargs, answer);                                    \
    }
FASTREAD_ENTRY(fastread_preadinto, fastread_readinto, FR_AWAITABLE)
FASTREAD_ENTRY(fastread_readinto_now, fastread_readinto, FR_CURSOR)
FASTREAD_ENTRY(fastread_preadinto_cached, fastread_readinto, FR_RESULT)
FASTREAD_ENTRY(fastread_pread, fastread_read_n, FR_AWAITABLE)
FASTREAD_ENTRY(fastread_read_now, fastread_read_n, FR_CURSOR)
FASTREAD_ENTRY(fastread_pread_cached, fastread_read_n, FR_RESULT)
#undef FASTREAD_ENTRY

static PyObject *
fastread_get_checkpoints(FastRead *fr, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(fr->after != NULL && fr->after != Py_None);
}

static PyGetSetDef fastread_getset[] = {
    {"checkpoints", (getter)fastread_get_checkpoints, NULL,
     "True when ``after`` makes the awaitables (a checkpoint per call: trio)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef fastread_methods[] = {
    {"preadinto", (PyCFunction)(void (*)(void))fastread_preadinto, METH_FASTCALL,
     "preadinto(buf, offset) -> awaitable of the count, or None: take the pure path"},
    {"pread", (PyCFunction)(void (*)(void))fastread_pread, METH_FASTCALL,
     "pread(n, offset) -> awaitable of the bytes, or None: take the pure path"},
    {"read_now", (PyCFunction)(void (*)(void))fastread_read_now, METH_FASTCALL,
     "read_now(n, offset) -> as pread, a Done that never yields (a cursor read), or None"},
    {"readinto_now", (PyCFunction)(void (*)(void))fastread_readinto_now, METH_FASTCALL,
     "readinto_now(buf, offset) -> as preadinto, a Done that never yields, or None"},
    {"pread_cached", (PyCFunction)(void (*)(void))fastread_pread_cached, METH_FASTCALL,
     "pread_cached(n, offset) -> as pread, the bytes themselves (no awaitable), or None"},
    {"preadinto_cached", (PyCFunction)(void (*)(void))fastread_preadinto_cached, METH_FASTCALL,
     "preadinto_cached(buf, offset) -> as preadinto, the count itself (no awaitable), or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastReadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.FastRead",
    .tp_basicsize = sizeof(FastRead),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One file's page-cache fast path (FastPath.reader)",
    .tp_traverse = (traverseproc)fastread_traverse,
    .tp_clear = (inquiry)fastread_clear,
    .tp_dealloc = (destructor)fastread_dealloc,
    .tp_methods = fastread_methods,
    .tp_getset = fastread_getset,
};

/* -- the file calls' ring path (RunPath, RingRun, RingWait) ------------------------------ */

/* What ``await f.preadinto(buf, offset)`` (a direct read, or a buffered one the page cache
   does not hold), ``await f.pwrite(data, offset)`` and a buffered ``await f.pread(n, offset)``
   cost on the ring: one Op built and staged for the tick's batch, one future of the loop, one
   await, with no coroutine frame of the file, the IOContext or the glue (on a loop whose
   waiters are futures; on trio, see PARKED below). The Python twin is the whole pure path
   (AsyncFile's _preadinto/_pwrite/_pread -> _submit -> IOContext.run -> the glue's wait),
   which takes every case this does not; FastRead's design, carried past the page cache:

   - RunPath: one per driver (the io_uring_c driver makes it), bound by its IOContext to the
     loop (``bind``: the context, its glue's call_soon, the context's _flush, the loop's
     future factory or None, the owner probe, the Op template, the glue's wait and the
     context's cancel); ``disable()`` (the driver closes) turns every runner off; ``runs``
     counts the ops staged here.
   - RingRun: one per open file (``RunPath.runner(fd, fd_direct, align_offset, align_memory,
     readable, writable, path)``). ``preadinto(file, buf, offset)`` / ``pwrite(file, data,
     offset)`` / ``pread(file, n, offset)`` return a RingWait, or None for anything unusual
     (the caller then takes the pure coroutine, which checks and words every error): an
     argument that is not a plain int, a buffer that is empty, read-only (for a read), not
     contiguous or not of bytes, a direct transfer off its alignment (and any direct pread:
     its buffer is the twin's), an offset past off_t, a call from a fork child, a disabled
     path, a file not open for it. ``disable()`` (the file closes or is detached) turns the
     runner off, also for the RingWaits it made that are still to be awaited.
   - RingWait: the awaitable, as a coroutine: nothing happens until it is first sent to.
     Then it does what IOContext.run does for an op that goes to the ring (awaited from
     another loop, its file or the context closed, or no slot under its cap: it runs the twin coroutine
     instead and delegates to it, which raises or waits as the pure path does): the op
     staged, the flush scheduled once per tick (so one io_uring_enter per tick still), the
     file's ops-in-flight count raised, then the task parked:
     - WAITING (a future factory: asyncio, uvloop): a future from the loop made the op's
       waiter and yielded as a Future's own __await__ yields it. The glue's C waker (or the
       context's _finish, for every CQE the twin handles) sets it once the op is REAPED; the
       next send raises op.error or returns op.result, and drops the file's count (through
       the file's _op_ended when it reaches 0, which wakes aclose). An exception thrown in
       while the op is out (a cancellation) goes to the file's twin ``_ring_thrown(op,
       exc)``, a coroutine that does what the pure path's glue.wait and _submit do then (ask
       the driver to cancel the op through the ring, keep waiting until it is reaped so its
       buffer is held to its CQE, raise) and is delegated to from then on.
     - PARKED (no future factory: trio, whose waiters are parked tasks): the glue's own
       ``wait(op, cancel)`` awaitable is delegated to (a C one where the glue can, its
       TaskParker, else a coroutine: PyIter_Send takes either with no frame of its own), so
       trio's cancellation rules are the pure path's own; when it returns the op is
       finished as above, when it raises the file's count is dropped and the exception
       passes.
     close() or collection while the op is out ends the call, as the pure coroutine's
     ``finally`` does; the op itself runs on, held by the driver, and the file counts it
     until it is reaped (its _op_ended), as there. */

enum { RF_KIND, RF_FD, RF_OFFSET, RF_BUFFERS, RF_PATH, RF_KEEPALIVE, RF_DIRECT, RF_DRIVER_DATA, RF_WAITER,
       RF_REMAINING, RF_N };

typedef struct {
    PyObject_HEAD
    int enabled;
    unsigned long long runs;
    PyObject *ctx, *call_soon, *flush, *create_future, *owner_get, *owner, *park, *cancel;
    PyTypeObject *op_type;
    PyObject *descrs, *defaults; /* tuples: the Op's slot descriptors and a new op's values */
    Py_ssize_t field[RF_N];      /* index in descrs of each field set here */
    PyObject *k_read, *k_write, *tried;
    Py_ssize_t max_in_flight;
    int reads_holder; /* owner_get is asyncio's C _get_running_loop (owner_here) */
} RunPath;

typedef struct {
    PyObject_HEAD
    RunPath *rp;
    int enabled; /* 0 once the file closed: see ringrun_disable */
    int fd, readable, writable;
    unsigned long forks;
    long long align_offset, align_memory; /* 0: not direct */
    PyObject *fd_direct, *path;
} RingRun;

/* NEW: not sent to yet; WAITING: staged, parked on its future; PARKED: staged, parked by
   the glue's wait (delegated to it, the op still ours to finish); DELEGATED: the twin's. */
enum { RW_NEW, RW_WAITING, RW_PARKED, RW_DELEGATED, RW_DONE };

/* The largest pread staged here: the twin's one op never asks for more (_file.py's
   _MAX_READ_CHUNK; past it the twin bounds the read by the file's size first). */
#define RUN_MAX_PREAD (64LL * 1024 * 1024)

typedef struct {
    PyObject_HEAD
    RingRun *rr;
    PyObject *file, *keep, *view;
    long long offset;
    int write, state;
    int bytes; /* pread: the result is the bytes read (a copy of keep's first ones), not a count */
    PyObject *op, *fut, *delegate;
} RingWait;

static PyTypeObject RunPathType, RingRunType, RingWaitType;
static PyObject *S_in_flight, *S_closed, *S_flush_pending, *S_staged, *S_op_ended, *S_ring_thrown,
    *S_preadinto_twin, *S_pwrite_twin, *S_pread_twin, *S_done_m, *S_future_blocking, *S_error, *S_throw, *S_close, *S_waiter;

static int
runpath_traverse(RunPath *rp, visitproc visit, void *arg)
{
    Py_VISIT(rp->ctx);
    Py_VISIT(rp->call_soon);
    Py_VISIT(rp->flush);
    Py_VISIT(rp->create_future);
    Py_VISIT(rp->owner_get);
    Py_VISIT(rp->owner);
    Py_VISIT(rp->park);
    Py_VISIT(rp->cancel);
    Py_VISIT(rp->op_type);
    Py_VISIT(rp->descrs);
    Py_VISIT(rp->defaults);
    Py_VISIT(rp->k_read);
    Py_VISIT(rp->k_write);
    Py_VISIT(rp->tried);
    return 0;
}

static void
runpath_unbind(RunPath *rp)
{
    rp->enabled = 0;
    Py_CLEAR(rp->ctx);
    Py_CLEAR(rp->call_soon);
    Py_CLEAR(rp->flush);
    Py_CLEAR(rp->create_future);
    Py_CLEAR(rp->owner_get);
    Py_CLEAR(rp->owner);
    Py_CLEAR(rp->park);
    Py_CLEAR(rp->cancel);
    Py_CLEAR(rp->op_type);
    Py_CLEAR(rp->descrs);
    Py_CLEAR(rp->defaults);
    Py_CLEAR(rp->k_read);
    Py_CLEAR(rp->k_write);
    rp->reads_holder = 0;
}

static int
runpath_clear(RunPath *rp)
{
    runpath_unbind(rp);
    Py_CLEAR(rp->tried);
    return 0;
}

static void
runpath_dealloc(RunPath *rp)
{
    PyObject_GC_UnTrack(rp);
    runpath_clear(rp);
    Py_TYPE(rp)->tp_free((PyObject *)rp);
}

static PyObject *
runpath_bind(RunPath *rp, PyObject *args)
{
    PyObject *ctx, *call_soon, *flush, *create_future, *owner_get, *owner, *op_type, *descrs, *defaults,
        *fields, *k_read, *k_write, *park, *cancel;
    Py_ssize_t max_in_flight;
    if (!PyArg_ParseTuple(args, "OOOOOOO!O!O!O!OOnOO:bind", &ctx, &call_soon, &flush, &create_future, &owner_get,
                          &owner, &PyType_Type, &op_type, &PyTuple_Type, &descrs, &PyTuple_Type, &defaults,
                          &PyTuple_Type, &fields, &k_read, &k_write, &max_in_flight, &park, &cancel))
        return NULL;
    if (create_future == Py_None && (!PyCallable_Check(park) || !PyCallable_Check(cancel))) {
        PyErr_SetString(PyExc_TypeError, "bind(): without create_future, park and cancel must be callable");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(descrs);
    if (PyTuple_GET_SIZE(defaults) != n || PyTuple_GET_SIZE(fields) != RF_N || max_in_flight < 1) {
        PyErr_Format(PyExc_ValueError, "bind(): %d field indexes, as many defaults as descriptors, a cap >= 1",
                     RF_N);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(descrs, i);
        if (Py_TYPE(d)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "bind(): every descriptor must be settable (the Op's slots)");
            return NULL;
        }
    }
    for (int i = 0; i < RF_N; i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(fields, i));
        if (at == -1 && PyErr_Occurred())
            return NULL;
        if (at < 0 || at >= n) {
            PyErr_SetString(PyExc_ValueError, "bind(): a field index out of range");
            return NULL;
        }
        rp->field[i] = at;
    }
    runpath_unbind(rp);
    rp->ctx = Py_NewRef(ctx);
    rp->call_soon = Py_NewRef(call_soon);
    rp->flush = Py_NewRef(flush);
    rp->create_future = Py_NewRef(create_future);
    rp->owner_get = Py_NewRef(owner_get);
    rp->owner = Py_NewRef(owner);
    rp->park = Py_NewRef(park);
    rp->cancel = Py_NewRef(cancel);
    rp->op_type = (PyTypeObject *)Py_NewRef(op_type);
    rp->descrs = Py_NewRef(descrs);
    rp->defaults = Py_NewRef(defaults);
    rp->k_read = Py_NewRef(k_read);
    rp->k_write = Py_NewRef(k_write);
    rp->max_in_flight = max_in_flight;
#if PY_VERSION_HEX < 0x030C0000
    rp->reads_holder = fp_reads_holder(owner_get);
#else
    rp->reads_holder = 0;
#endif
    rp->enabled = 1;
    Py_RETURN_NONE;
}

static PyObject *
runpath_disable(RunPath *rp, PyObject *Py_UNUSED(ignored))
{
    runpath_unbind(rp); /* drops the context and the loop's objects: no cycle kept */
    Py_RETURN_NONE;
}

static PyObject *
runpath_runner(RunPath *rp, PyObject *args)
{
    int fd, readable, writable;
    long long align_offset, align_memory;
    PyObject *fd_direct, *path;
    if (!PyArg_ParseTuple(args, "iO!LLppU:runner", &fd, &PyBool_Type, &fd_direct, &align_offset, &align_memory,
                          &readable, &writable, &path))
        return NULL;
    if (fd < 0 || align_offset < 0 || align_memory < 0) {
        PyErr_Format(PyExc_ValueError, "fd %d and the alignments must be >= 0", fd);
        return NULL;
    }
    RingRun *rr = PyObject_GC_New(RingRun, &RingRunType);
    if (rr == NULL)
        return NULL;
    rr->rp = (RunPath *)Py_NewRef(rp);
    rr->enabled = 1;
    rr->fd = fd;
    rr->readable = readable;
    rr->writable = writable;
    rr->forks = fp_forks;
    rr->align_offset = align_offset;
    rr->align_memory = align_memory;
    rr->fd_direct = Py_NewRef(fd_direct);
    rr->path = Py_NewRef(path);
    PyObject_GC_Track(rr);
    return (PyObject *)rr;
}

static PyObject *
runpath_get_runs(RunPath *rp, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(rp->runs);
}

static PyObject *
runpath_get_bound(RunPath *rp, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(rp->enabled);
}

static PyMethodDef runpath_methods[] = {
    {"bind", (PyCFunction)runpath_bind, METH_VARARGS,
     "bind(ctx, call_soon, flush, create_future, owner_get, owner, Op, descriptors, defaults, fields, READ, "
     "WRITE, max_in_flight, park, cancel): the IOContext's loop (create_future None: ops park through "
     "park(op, cancel), the glue's wait)"},
    {"disable", (PyCFunction)runpath_disable, METH_NOARGS, "disable(): every runner returns None from now on"},
    {"runner", (PyCFunction)runpath_runner, METH_VARARGS,
     "runner(fd, fd_direct, align_offset, align_memory, readable, writable, path) -> RingRun for one file"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef runpath_getset[] = {
    {"runs", (getter)runpath_get_runs, NULL, "ops staged here, with no Python frame", NULL},
    {"bound", (getter)runpath_get_bound, NULL, "True while bound to a loop", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
runpath_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *tried;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0) || !PyArg_ParseTuple(args, "O:RunPath", &tried))
        return NULL;
    RunPath *rp = (RunPath *)type->tp_alloc(type, 0);
    if (rp != NULL)
        rp->tried = Py_NewRef(tried);
    return (PyObject *)rp;
}

static PyTypeObject RunPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.RunPath",
    .tp_basicsize = sizeof(RunPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RunPath(tried): the file calls' ring path of one driver (see RingRun); tried: the driver_data of "
              "a buffered read the fast path found not cached (None: no fast path)",
    .tp_new = runpath_new,
    .tp_traverse = (traverseproc)runpath_traverse,
    .tp_clear = (inquiry)runpath_clear,
    .tp_dealloc = (destructor)runpath_dealloc,
    .tp_methods = runpath_methods,
    .tp_getset = runpath_getset,
};

static int
ringrun_traverse(RingRun *rr, visitproc visit, void *arg)
{
    Py_VISIT(rr->rp);
    Py_VISIT(rr->fd_direct);
    Py_VISIT(rr->path);
    return 0;
}

static int
ringrun_clear(RingRun *rr)
{
    Py_CLEAR(rr->rp);
    Py_CLEAR(rr->fd_direct);
    Py_CLEAR(rr->path);
    return 0;
}

static void
ringrun_dealloc(RingRun *rr)
{
    PyObject_GC_UnTrack(rr);
    ringrun_clear(rr);
    PyObject_GC_Del(rr);
}

/* 1 when a call may take the ring path: bound, same process, called from the owner. */
static int
ringrun_ready(RingRun *rr)
{
    RunPath *rp = rr->rp;
    if (!rr->enabled || rp == NULL || !rp->enabled || rr->forks != fp_forks)
        return 0;
    return owner_here(rp->owner_get, rp->owner, rp->reads_holder);
}

/* A RingWait for one transfer, or None (nothing raised) where the pure path must decide. */
static PyObject *
ringrun_transfer(RingRun *rr, PyObject *const *args, Py_ssize_t nargs, int write)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s(file, buf, offset) takes 3 arguments, not %zd",
                     write ? "pwrite" : "preadinto", nargs);
        return NULL;
    }
    /* Bound and in this process; whether the caller is the owner's loop is asked once, when
       the awaitable stages the op (ringwait_stage): asyncio's _get_running_loop makes a
       getpid() system call, and the twin raises WrongLoopError from there just as well. */
    RunPath *rp = rr->rp;
    if (!(write ? rr->writable : rr->readable) || !rr->enabled || rp == NULL || !rp->enabled ||
        rr->forks != fp_forks ||
        PyUnicode_Check(args[1]))
        Py_RETURN_NONE;
    PyObject *view = PyMemoryView_FromObject(args[1]);
    if (view == NULL) {
        PyErr_Clear(); /* the pure path words the error */
        Py_RETURN_NONE;
    }
    Py_buffer *b = PyMemoryView_GET_BUFFER(view);
    long long offset;
    int ok = b->len > 0 && (write || !b->readonly) && PyBuffer_IsContiguous(b, 'C') && b->ndim == 1 &&
             b->itemsize == 1 && (b->format == NULL || strcmp(b->format, "B") == 0) &&
             fastread_offset(args[2], b->len, &offset);
    if (ok && rr->align_offset > 0)
        ok = offset % rr->align_offset == 0 && b->len % rr->align_offset == 0 &&
             (rr->align_memory <= 0 || (uintptr_t)b->buf % (uintptr_t)rr->align_memory == 0);
    if (!ok) {
        Py_DECREF(view);
        Py_RETURN_NONE;
    }
    RingWait *w = PyObject_GC_New(RingWait, &RingWaitType);
    if (w == NULL) {
        Py_DECREF(view);
        return NULL;
    }
    w->rr = (RingRun *)Py_NewRef(rr);
    w->file = Py_NewRef(args[0]);
    w->keep = Py_NewRef(args[1]);
    w->view = view;
    w->offset = offset;
    w->write = write;
    w->bytes = 0;
    w->state = RW_NEW;
    w->op = w->fut = w->delegate = NULL;
    PyObject_GC_Track(w);
    return (PyObject *)w;
}

static PyObject *
ringrun_preadinto(RingRun *rr, PyObject *const *args, Py_ssize_t nargs)
{
    return ringrun_transfer(rr, args, nargs, 0);
}

/* pread(file, n, offset): a read into a new bytearray of n bytes (as the twin's buffer),
   whose first bytes the awaitable returns as bytes. Buffered files only: a direct one's
   buffer is the twin's (aligned, its length rounded). */
static PyObject *
ringrun_pread(RingRun *rr, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "pread(file, n, offset) takes 3 arguments, not %zd", nargs);
        return NULL;
    }
    if (rr->align_offset > 0 || rr->fd_direct != Py_False || !PyLong_CheckExact(args[1]))
        Py_RETURN_NONE;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (overflow || n < 1 || n > RUN_MAX_PREAD)
        Py_RETURN_NONE;
    PyObject *buf = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (buf == NULL)
        return NULL;
    PyObject *call[3] = {args[0], buf, args[2]};
    PyObject *w = ringrun_transfer(rr, call, 3, 0);
    Py_DECREF(buf);
    if (w != NULL && w != Py_None)
        ((RingWait *)w)->bytes = 1;
    return w;
}

static PyObject *
ringrun_pwrite(RingRun *rr, PyObject *const *args, Py_ssize_t nargs)
{
    return ringrun_transfer(rr, args, nargs, 1);
}

/* The file closed (or detached): an awaitable made before and awaited after must not stage
   its op, whose fd may by then be another file's (the number reused); it declines instead,
   and the twin raises ClosedError, as the pure coroutine does when first sent to. */
static PyObject *
ringrun_disable(RingRun *rr, PyObject *Py_UNUSED(ignored))
{
    rr->enabled = 0;
    Py_RETURN_NONE;
}

static PyMethodDef ringrun_methods[] = {
    {"disable", (PyCFunction)ringrun_disable, METH_NOARGS,
     "disable(): the file closed; its calls, made or to come, take the pure path"},
    {"pread", (PyCFunction)(void (*)(void))ringrun_pread, METH_FASTCALL,
     "pread(file, n, offset) -> awaitable of the bytes, or None: take the pure path"},
    {"preadinto", (PyCFunction)(void (*)(void))ringrun_preadinto, METH_FASTCALL,
     "preadinto(file, buf, offset) -> awaitable of the count, or None: take the pure path"},
    {"pwrite", (PyCFunction)(void (*)(void))ringrun_pwrite, METH_FASTCALL,
     "pwrite(file, data, offset) -> awaitable of the count, or None: take the pure path"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingRunType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.RingRun",
    .tp_basicsize = sizeof(RingRun),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One file's ring path (RunPath.runner)",
    .tp_traverse = (traverseproc)ringrun_traverse,
    .tp_clear = (inquiry)ringrun_clear,
    .tp_dealloc = (destructor)ringrun_dealloc,
    .tp_methods = ringrun_methods,
};

static int
ringwait_traverse(RingWait *w, visitproc visit, void *arg)
{
    Py_VISIT(w->rr);
    Py_VISIT(w->file);
    Py_VISIT(w->keep);
    Py_VISIT(w->view);
    Py_VISIT(w->op);
    Py_VISIT(w->fut);
    Py_VISIT(w->delegate);
    return 0;
}

static int
ringwait_clear(RingWait *w)
{
    Py_CLEAR(w->rr);
    Py_CLEAR(w->file);
    Py_CLEAR(w->keep);
    Py_CLEAR(w->view);
    Py_CLEAR(w->op);
    Py_CLEAR(w->fut);
    Py_CLEAR(w->delegate);
    return 0;
}

/* The call ended: the file's _op_ended, which counts the op until it is reaped (one still
   staged or out when its call ends, an exception thrown in that is no cancellation, the
   call closed or collected, is counted to its CQE, so aclose keeps the fd open until then),
   then drops the count (waking aclose and closing a released fd at 0). */
static int
ringwait_op_ended(RingWait *w)
{
    PyObject *res = PyObject_CallMethodOneArg(w->file, S_op_ended, w->op);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* The op was reaped: the file's count dropped in place while others remain, else through
   the file's _op_ended (which wakes aclose and closes a released fd). */
static int
ringwait_op_reaped(RingWait *w)
{
    PyObject *v = PyObject_GetAttr(w->file, S_in_flight);
    if (v == NULL)
        return -1;
    long n = PyLong_AsLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n > 1) {
        PyObject *left = PyLong_FromLong(n - 1);
        int err = left == NULL ? -1 : PyObject_SetAttr(w->file, S_in_flight, left);
        Py_XDECREF(left);
        return err;
    }
    PyObject *res = PyObject_CallMethodOneArg(w->file, S_op_ended, w->op);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* Collected while the op is out (its task was destroyed): as the pure coroutine's finally,
   the call ends (the file counts the op until its CQE; the driver holds it to then). A finalizer (PEP
   442), not the body of dealloc: the GC calls it on every object of a cycle before it clears
   any (tp_clear would drop ``file`` first and the count with it), and from dealloc it runs
   on a live object, so the unraisable hook, which takes a reference to ``w``, cannot free
   it a second time. */
static void
ringwait_finalize(RingWait *w)
{
    if ((w->state != RW_WAITING && w->state != RW_PARKED) || w->file == NULL)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    w->state = RW_DONE;
    if (ringwait_op_ended(w) < 0)
        PyErr_WriteUnraisable((PyObject *)w);
    PyErr_Restore(type, value, tb);
}

static void
ringwait_dealloc(RingWait *w)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)w) < 0)
        return; /* resurrected by the finalizer's callees */
    PyObject_GC_UnTrack(w);
    ringwait_clear(w);
    PyObject_GC_Del(w);
}

static PyObject *
ringwait_await(RingWait *w)
{
    return Py_NewRef(w);
}

/* Delegate to ``coro`` from now on, sending it ``arg`` first. */
static PySendResult
ringwait_delegate(RingWait *w, PyObject *coro, PyObject *arg, PyObject **out)
{
    w->delegate = coro; /* steals */
    w->state = RW_DELEGATED;
    PySendResult r = PyIter_Send(coro, arg, out);
    if (r != PYGEN_NEXT)
        w->state = RW_DONE;
    return r;
}

/* The twin for an op C does not stage: the file's pure coroutine for the same call. */
static PySendResult
ringwait_decline(RingWait *w, PyObject **out)
{
    PyObject *off = PyLong_FromLongLong(w->offset);
    if (off == NULL)
        return PYGEN_ERROR;
    PyObject *first = w->bytes ? PyLong_FromSsize_t(PyByteArray_GET_SIZE(w->keep)) : Py_NewRef(w->keep);
    if (first == NULL) {
        Py_DECREF(off);
        return PYGEN_ERROR;
    }
    PyObject *twin = w->bytes ? S_pread_twin : w->write ? S_pwrite_twin : S_preadinto_twin;
    PyObject *coro = PyObject_CallMethodObjArgs(w->file, twin, first, off, NULL);
    Py_DECREF(first);
    Py_DECREF(off);
    if (coro == NULL) {
        w->state = RW_DONE;
        return PYGEN_ERROR;
    }
    return ringwait_delegate(w, coro, Py_None, out);
}

/* A new op for this call, from the Op template (no __init__ frame). ``rp`` is bound; what
   of it is used is held first, since an allocation may run the GC and a finalizer that
   unbinds it. */
static PyObject *
ringwait_make_op(RingWait *w, RunPath *rp)
{
    PyTypeObject *type = (PyTypeObject *)Py_NewRef(rp->op_type);
    PyObject *descrs = Py_NewRef(rp->descrs), *defaults = Py_NewRef(rp->defaults);
    PyObject *kind = Py_NewRef(w->write ? rp->k_write : rp->k_read), *tried = Py_XNewRef(rp->tried);
    PyObject *fd = NULL, *offset = NULL, *bufs = NULL, *rest = NULL;
    PyObject *op = type->tp_alloc(type, 0);
    if (op == NULL)
        goto done;
    fd = PyLong_FromLong(w->rr->fd);
    offset = PyLong_FromLongLong(w->offset);
    bufs = PyTuple_Pack(1, w->view);
    rest = PyList_New(1);
    if (fd == NULL || offset == NULL || bufs == NULL || rest == NULL)
        goto fail;
    PyList_SET_ITEM(rest, 0, Py_NewRef(w->view));
    PyObject *vals[RF_N] = {
        [RF_KIND] = kind,
        [RF_FD] = fd,
        [RF_OFFSET] = offset,
        [RF_BUFFERS] = bufs,
        [RF_PATH] = w->rr->path,
        [RF_KEEPALIVE] = w->keep,
        [RF_DIRECT] = w->rr->fd_direct,
        /* a buffered read the file's fast path found not cached: straight to the ring */
        [RF_DRIVER_DATA] = (!w->write && w->rr->fd_direct == Py_False) ? tried : Py_None,
        [RF_WAITER] = Py_None,
        [RF_REMAINING] = rest,
    };
    Py_ssize_t n = PyTuple_GET_SIZE(descrs);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(defaults, i);
        for (int f = 0; f < RF_N; f++)
            if (rp->field[f] == i)
                v = vals[f];
        PyObject *d = PyTuple_GET_ITEM(descrs, i);
        if (Py_TYPE(d)->tp_descr_set(d, op, v) < 0)
            goto fail;
    }
    goto done;
fail:
    Py_CLEAR(op);
done:
    Py_XDECREF(fd);
    Py_XDECREF(offset);
    Py_XDECREF(bufs);
    Py_XDECREF(rest);
    Py_DECREF(type);
    Py_DECREF(descrs);
    Py_DECREF(defaults);
    Py_DECREF(kind);
    Py_XDECREF(tried);
    return op;
}

/* The RunPath's bound objects, held for one staging: it calls into Python (attribute
   lookups on the context and the file, the loop's future factory, the glue's park and
   call_soon), where a finalizer may unbind the RunPath (runpath_unbind clears them). */
typedef struct {
    PyObject *ctx, *call_soon, *flush, *create_future, *park, *cancel;
} StageRefs;

static int ringwait_stage_held(RingWait *w, RunPath *rp, const StageRefs *h);

/* IOContext.run for an op that goes to the ring, up to its await: 1 when staged (the future
   in w->fut), 0 when the twin must run it (nothing changed), -1 on an exception. */
static int
ringwait_stage(RingWait *w)
{
    if (!ringrun_ready(w->rr)) /* may call into Python (the owner's loop, asked) */
        return 0;
    RunPath *rp = (RunPath *)Py_XNewRef(w->rr->rp);
    if (rp == NULL || !rp->enabled) { /* unbound meanwhile: the twin decides */
        Py_XDECREF(rp);
        return 0;
    }
    StageRefs h = {Py_NewRef(rp->ctx),            Py_NewRef(rp->call_soon), Py_NewRef(rp->flush),
                   Py_XNewRef(rp->create_future), Py_XNewRef(rp->park),     Py_XNewRef(rp->cancel)};
    int got = ringwait_stage_held(w, rp, &h);
    Py_DECREF(rp);
    Py_XDECREF(h.ctx);
    Py_XDECREF(h.call_soon);
    Py_XDECREF(h.flush);
    Py_XDECREF(h.create_future);
    Py_XDECREF(h.park);
    Py_XDECREF(h.cancel);
    return got;
}

/* ringwait_stage's body, with ``h`` held (rp's own fields may be cleared meanwhile). */
static int
ringwait_stage_held(RingWait *w, RunPath *rp, const StageRefs *h)
{
    PyObject *ctx = h->ctx;
    PyObject *v = PyObject_GetAttr(ctx, S_closed);
    if (v == NULL)
        return -1;
    int closed = v != Py_False;
    Py_DECREF(v);
    if ((v = PyObject_GetAttr(ctx, S_in_flight)) == NULL)
        return -1;
    Py_ssize_t in_flight = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (in_flight == -1 && PyErr_Occurred())
        return -1;
    if (closed || in_flight >= rp->max_in_flight || !rp->enabled)
        return 0; /* the twin raises, or waits for a slot (or the path was unbound meanwhile) */
    PyObject *op = ringwait_make_op(w, rp);
    if (op == NULL)
        return -1;
    PyObject *fut = NULL;
    if (h->create_future != Py_None) {
        fut = PyObject_CallNoArgs(h->create_future);
        if (fut == NULL || PyObject_SetAttr(op, S_waiter, fut) < 0) {
            Py_XDECREF(fut);
            Py_DECREF(op);
            return -1;
        }
    } else { /* the glue's wait(op, cancel) parks the task: made now, sent to once staged */
        w->delegate = PyObject_CallFunctionObjArgs(h->park, op, h->cancel, NULL);
        if (w->delegate == NULL) {
            Py_DECREF(op);
            return -1;
        }
    }
    w->op = op;
    w->fut = fut;
    /* The file counts it first (its _submit's ``_in_flight += 1``): whatever fails after
       this drops the count again (ringwait_send). */
    if ((v = PyObject_GetAttr(w->file, S_in_flight)) == NULL)
        return -1;
    long n = PyLong_AsLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *count = PyLong_FromLong(n + 1);
    int err = count == NULL || PyObject_SetAttr(w->file, S_in_flight, count) < 0;
    Py_XDECREF(count);
    if (err)
        return -1;
    w->state = fut != NULL ? RW_WAITING : RW_PARKED;
    /* From here on the op is the context's: as run's ``_in_flight += 1``, ``_staged.append``. */
    PyObject *staged = PyObject_GetAttr(ctx, S_staged);
    if (staged == NULL)
        return -1;
    if (!PyList_Check(staged) || PyList_Append(staged, op) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "the IOContext's _staged is not a list");
        Py_DECREF(staged);
        return -1;
    }
    Py_DECREF(staged);
    count = PyLong_FromSsize_t(in_flight + 1);
    err = count == NULL || PyObject_SetAttr(ctx, S_in_flight, count) < 0;
    Py_XDECREF(count);
    if (err)
        return -1;
    rp->runs++;
    if ((v = PyObject_GetAttr(ctx, S_flush_pending)) == NULL)
        return -1;
    int pending = v == Py_True;
    Py_DECREF(v);
    if (!pending) {
        if (PyObject_SetAttr(ctx, S_flush_pending, Py_True) < 0)
            return -1;
        PyObject *res = PyObject_CallOneArg(h->call_soon, h->flush);
        if (res == NULL)
            return -1;
        Py_DECREF(res);
    }
    return 1;
}

static PySendResult ringwait_finish(RingWait *w, PyObject **out);

/* The file stops counting the op, an exception being raised (kept as it is). */
static void
ringwait_op_ended_raising(RingWait *w)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (ringwait_op_ended(w) < 0)
        PyErr_WriteUnraisable((PyObject *)w);
    PyErr_Restore(type, value, tb);
}

/* What the glue's wait (PARKED) gave: yielded on, the op finished once it returns, the file's
   count dropped when it raises (a cancellation, after the op was reaped or dropped). */
static PySendResult
ringwait_parked(RingWait *w, PySendResult r, PyObject **out)
{
    if (r == PYGEN_NEXT)
        return r;
    if (r == PYGEN_RETURN) {
        Py_DECREF(*out);
        return ringwait_finish(w, out);
    }
    w->state = RW_DONE;
    ringwait_op_ended_raising(w);
    return r;
}

static PySendResult
ringwait_send(RingWait *w, PyObject *arg, PyObject **out)
{
    switch (w->state) {
    case RW_NEW: {
        int got = ringwait_stage(w);
        if (got == 0)
            return ringwait_decline(w, out);
        if (got < 0) {
            if (w->state == RW_WAITING || w->state == RW_PARKED) /* the file counted it */
                ringwait_op_ended_raising(w);
            w->state = RW_DONE;
            return PYGEN_ERROR;
        }
        if (w->state == RW_PARKED)
            return ringwait_parked(w, PyIter_Send(w->delegate, Py_None, out), out);
        break;
    }
    case RW_WAITING:
        break;
    case RW_PARKED:
        return ringwait_parked(w, PyIter_Send(w->delegate, arg, out), out);
    case RW_DELEGATED: {
        PySendResult r = PyIter_Send(w->delegate, arg, out);
        if (r != PYGEN_NEXT)
            w->state = RW_DONE;
        return r;
    }
    default:
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    /* Waiting: the future done means the op was reaped (its waker set it). */
    PyObject *state = PyObject_CallMethodNoArgs(w->fut, S_done_m);
    if (state == NULL)
        return PYGEN_ERROR;
    int done = state == Py_True;
    Py_DECREF(state);
    if (!done) { /* as a Future's __await__: yield it, marked blocking, for the Task */
        if (PyObject_SetAttr(w->fut, S_future_blocking, Py_True) < 0)
            return PYGEN_ERROR;
        *out = Py_NewRef(w->fut);
        return PYGEN_NEXT;
    }
    return ringwait_finish(w, out);
}

/* The op was reaped: the file's count dropped, then op.error raised or the result returned
   (IOContext.run's end, with _submit's finally). */
static PySendResult
ringwait_finish(RingWait *w, PyObject **out)
{
    PyObject *op = w->op;
    w->state = RW_DONE;
    Py_CLEAR(w->view); /* the op holds what the kernel used until it was reaped; now it is */
    if (ringwait_op_reaped(w) < 0)
        return PYGEN_ERROR;
    PyObject *error = PyObject_GetAttr(op, S_error);
    if (error == NULL)
        return PYGEN_ERROR;
    if (error != Py_None) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        return PYGEN_ERROR;
    }
    Py_DECREF(error);
    PyObject *result = PyObject_GetAttr(op, S_result);
    if (result == NULL)
        return PYGEN_ERROR;
    if (w->bytes) { /* as the twin's bytes(buf[:got]) */
        Py_ssize_t got = PyLong_AsSsize_t(result);
        Py_DECREF(result);
        if (got == -1 && PyErr_Occurred())
            return PYGEN_ERROR;
        if (got < 0 || got > PyByteArray_GET_SIZE(w->keep)) {
            PyErr_Format(PyExc_RuntimeError, "a read of %zd bytes returned %zd", PyByteArray_GET_SIZE(w->keep), got);
            return PYGEN_ERROR;
        }
        result = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(w->keep), got);
        if (result == NULL)
            return PYGEN_ERROR;
    }
    *out = result;
    return PYGEN_RETURN;
}

/* StopIteration(value) raised, for a value of any type (a tuple is not unpacked). */
static void
ringwait_stop(PyObject *value)
{
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
}

static PyObject *
ringwait_next(RingWait *w)
{
    PyObject *out;
    PySendResult r = ringwait_send(w, Py_None, &out);
    if (r == PYGEN_NEXT)
        return out;
    if (r == PYGEN_RETURN) {
        ringwait_stop(out);
        Py_DECREF(out);
    }
    return NULL;
}

static PyObject *
ringwait_send_method(RingWait *w, PyObject *value)
{
    PyObject *out;
    PySendResult r = ringwait_send(w, value, &out);
    if (r == PYGEN_NEXT)
        return out;
    if (r == PYGEN_RETURN) {
        ringwait_stop(out);
        Py_DECREF(out);
    }
    return NULL;
}

/* The result of a delegate's throw/close call, as this awaitable's. */
static PyObject *
ringwait_from_delegate(RingWait *w, PyObject *res)
{
    if (res == NULL)
        w->state = RW_DONE; /* it returned (StopIteration) or raised */
    return res;
}

static PyObject *
ringwait_throw(RingWait *w, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_ParseTuple(args, "O|OO:throw", &typ, &val, &tb))
        return NULL;
    if (w->state == RW_PARKED) { /* the glue's wait takes it; the op stays ours to finish */
        PyObject *throw = PyObject_GetAttr(w->delegate, S_throw);
        PyObject *res = throw == NULL ? NULL : PyObject_Call(throw, args, NULL);
        Py_XDECREF(throw);
        if (res != NULL)
            return res;
        PyObject *out = NULL;
        PySendResult r = PYGEN_ERROR;
        if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyErr_Clear();
            out = Py_NewRef(Py_None);
            r = PYGEN_RETURN;
        }
        r = ringwait_parked(w, r, &out);
        if (r == PYGEN_RETURN) {
            ringwait_stop(out);
            Py_DECREF(out);
        }
        return NULL;
    }
    if (w->state == RW_DELEGATED) {
        PyObject *throw = PyObject_GetAttr(w->delegate, S_throw);
        PyObject *res = throw == NULL ? NULL : PyObject_Call(throw, args, NULL);
        Py_XDECREF(throw);
        return ringwait_from_delegate(w, res);
    }
    PyObject *exc = thrown_exception(typ, val, tb);
    if (exc == NULL)
        return NULL;
    if (w->state != RW_WAITING) { /* not started (or over): raised as a coroutine raises it */
        w->state = RW_DONE;
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
        return NULL;
    }
    /* Thrown in while the op is out (a cancellation): the twin's coroutine from here on. */
    PyObject *coro = PyObject_CallMethodObjArgs(w->file, S_ring_thrown, w->op, exc, NULL);
    Py_DECREF(exc);
    if (coro == NULL) {
        w->state = RW_DONE;
        return NULL;
    }
    PyObject *out;
    PySendResult r = ringwait_delegate(w, coro, Py_None, &out);
    if (r == PYGEN_NEXT)
        return out;
    if (r == PYGEN_RETURN) {
        ringwait_stop(out);
        Py_DECREF(out);
    }
    return NULL;
}

static PyObject *
ringwait_close(RingWait *w, PyObject *Py_UNUSED(ignored))
{
    if (w->state == RW_DELEGATED) {
        w->state = RW_DONE;
        return PyObject_CallMethodNoArgs(w->delegate, S_close);
    }
    int waiting = w->state == RW_WAITING || w->state == RW_PARKED;
    PyObject *parked = w->state == RW_PARKED ? w->delegate : NULL;
    w->state = RW_DONE;
    if (parked != NULL) {
        PyObject *res = PyObject_CallMethodNoArgs(parked, S_close);
        if (res == NULL) {
            ringwait_op_ended_raising(w);
            return NULL;
        }
        Py_DECREF(res);
    }
    if (waiting && ringwait_op_ended(w) < 0) /* as the pure coroutine's finally */
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef ringwait_methods[] = {
    {"send", (PyCFunction)ringwait_send_method, METH_O, "send(value): as a coroutine's"},
    {"throw", (PyCFunction)ringwait_throw, METH_VARARGS, "throw(exc): as a coroutine's (see RingRun)"},
    {"close", (PyCFunction)ringwait_close, METH_NOARGS, "close(): as a coroutine's"},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods ringwait_as_async = {
    .am_await = (unaryfunc)ringwait_await,
    .am_send = (sendfunc)ringwait_send,
};

static PyTypeObject RingWaitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io.drivers._uring.RingWait",
    .tp_basicsize = sizeof(RingWait),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The awaitable of a file call on the ring (see RingRun).",
    .tp_traverse = (traverseproc)ringwait_traverse,
    .tp_clear = (inquiry)ringwait_clear,
    .tp_dealloc = (destructor)ringwait_dealloc,
    .tp_finalize = (destructor)ringwait_finalize,
    .tp_as_async = &ringwait_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ringwait_next,
    .tp_methods = ringwait_methods,
};

/* -- iovec ------------------------------------------------------------------------------- */

static PyObject *
make_iovec(PyObject *Py_UNUSED(module), PyObject *args)
{
    /* iovec(buffers, writable) -> bytes: the struct iovec array of a list of contiguous
       byte buffers (writable ones for a read). The pointers stay valid while the buffers'
       exporters are alive and exported: the caller keeps the memoryviews until the CQE. */
    PyObject *bufs;
    int writable;
    if (!PyArg_ParseTuple(args, "O!p", &PyList_Type, &bufs, &writable))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(bufs);
    if (n == 0 || n > IOV_MAX) {
        PyErr_Format(PyExc_ValueError, "%zd buffers: a vectored op takes 1 to %d", n, IOV_MAX);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(struct iovec));
    if (out == NULL)
        return NULL;
    struct iovec *iov = (struct iovec *)PyBytes_AS_STRING(out);
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(bufs, i), &view, flags) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        iov[i].iov_base = view.buf;
        iov[i].iov_len = (size_t)view.len;
        PyBuffer_Release(&view);
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"iovec", make_iovec, METH_VARARGS, "iovec(buffers, writable) -> bytes (struct iovec[])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aiopg_io.drivers._uring",
    .m_doc = "An io_uring ring on the raw system calls (see the io_uring_c driver).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__uring(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_kind, "kind");
    INTERN(S_direct, "direct");
    INTERN(S_state, "state");
    INTERN(S_remaining, "_remaining");
    INTERN(S_fd, "fd");
    INTERN(S_offset, "offset");
    INTERN(S_transferred, "transferred");
    INTERN(S_result, "result");
    INTERN(S_driver_data, "driver_data");
    INTERN(S_token, "token");
    INTERN(S_cancel_queued, "cancel_queued");
    INTERN(S_sync_token, "sync_token");
    INTERN(S_iovec, "iovec");
    INTERN(S_buffers, "buffers");
    INTERN(S_paths, "paths");
    INTERN(S_flags, "flags");
    INTERN(S_in_flight, "_in_flight");
    INTERN(S_closed, "closed");
    INTERN(S_flush_pending, "_flush_pending");
    INTERN(S_staged, "_staged");
    INTERN(S_op_ended, "_op_ended");
    INTERN(S_ring_thrown, "_ring_thrown");
    INTERN(S_preadinto_twin, "_preadinto");
    INTERN(S_pwrite_twin, "_pwrite");
    INTERN(S_pread_twin, "_pread");
    INTERN(S_future_blocking, "_asyncio_future_blocking");
    INTERN(S_error, "error");
    INTERN(S_throw, "throw");
    INTERN(S_close, "close");
    INTERN(S_done_m, "done");
    INTERN(S_waiter, "waiter");
#undef INTERN
    if ((S_zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    if ((S_empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    if (PyType_Ready(&RingType) < 0 || PyType_Ready(&DoneType) < 0 || PyType_Ready(&FastPathType) < 0 ||
        PyType_Ready(&FastReadType) < 0 || PyType_Ready(&RunPathType) < 0 || PyType_Ready(&RingRunType) < 0 ||
        PyType_Ready(&RingWaitType) < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, fp_after_fork_child) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0) {
        Py_DECREF(&RingType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "TICK_CONTINUED", TICK_CONTINUED) < 0 ||
        PyModule_AddIntConstant(m, "TICK_LEFT_OVER", TICK_LEFT_OVER) < 0 ||
        PyModule_AddIntConstant(m, "TICK_OVERFLOW", TICK_OVERFLOW) < 0 ||
        PyModule_AddIntConstant(m, "TICK_CLEARED", TICK_CLEARED) < 0 ||
        PyModule_AddIntConstant(m, "TICK_SIGNALLED", TICK_SIGNALLED) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_FTRUNCATE", OP_FTRUNCATE) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_FALLOCATE", OP_FALLOCATE) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_OPENAT", OP_OPENAT) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_CLOSE", OP_CLOSE) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_RENAMEAT", OP_RENAMEAT) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_UNLINKAT", OP_UNLINKAT) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_MKDIRAT", OP_MKDIRAT) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_STATX", OP_STATX) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_SYMLINKAT", OP_SYMLINKAT) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_LINKAT", OP_LINKAT) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_NOP", OP_NOP) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_READV", OP_READV) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_WRITEV", OP_WRITEV) < 0 ||
        PyModule_AddIntConstant(m, "IORING_OP_FSYNC", OP_FSYNC) < 0 ||
        PyModule_AddIntConstant(m, "IORING_FSYNC_DATASYNC", 1) < 0 ||
        PyModule_AddIntConstant(m, "IORING_ASYNC_CANCEL_ALL", 1 << 0) < 0 ||
        PyModule_AddIntConstant(m, "IORING_ASYNC_CANCEL_ANY", 1 << 2) < 0 ||
        PyModule_AddIntConstant(m, "YIELD_EVERY_OPS", YIELD_EVERY_OPS) < 0 ||
        PyModule_AddIntConstant(m, "YIELD_EVERY_BYTES", YIELD_EVERY_BYTES) < 0 ||
        PyModule_AddObjectRef(m, "FastPath", (PyObject *)&FastPathType) < 0 ||
        PyModule_AddObjectRef(m, "RunPath", (PyObject *)&RunPathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
