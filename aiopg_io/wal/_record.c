/* aiopg_io.wal._record: a WAL record laid into the WAL buffers in one C call.
 *
 * The Python twin is aiopg_io.wal._format.write_record (write_record_header, then the
 * payload copied after it); both write the same bytes, which tests/wal/test_format.py
 * checks. The layout is _format's module docstring: a 24-byte header, little-endian
 * ``tot_len u32, epoch u32, prev u64, info u8, pad[3], crc u32``, then the payload; the CRC
 * is zlib's CRC-32 over the payload, then over the 20 header bytes before ``crc``
 * (``zlib.crc32(prefix, zlib.crc32(payload))``: the same zlib, so the same value).
 *
 * Why C: an append runs this once per record, and in Python it is a frame, a bytes object
 * for the prefix, two crc32 calls, a pack_into and a sliced copy (docs/benchmarks.md, "WAL
 * group commit", has what it saved per commit).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define RECORD_HEADER_SIZE 24
#define CRC_COVERED 20

static void
put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void
put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static PyObject *
write_record(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "write_record takes 5 arguments (buf, offset, payload, epoch, prev), got %zd",
                     nargs);
        return NULL;
    }
    /* The checks and words are the pure twin's (write_record_py), in its order. */
    PyObject *offset_int = PyNumber_Index(args[1]);
    if (offset_int == NULL)
        return NULL;
    Py_ssize_t offset = PyNumber_AsSsize_t(offset_int, NULL); /* clamped: the fit check refuses it */
    if (offset == -1 && PyErr_Occurred()) {
        Py_DECREF(offset_int);
        return NULL;
    }
    unsigned long epoch = PyLong_AsUnsignedLong(args[3]);
    if ((epoch == (unsigned long)-1 && PyErr_Occurred()) || epoch > 0xFFFFFFFFUL) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_OverflowError)) {
            Py_DECREF(offset_int);
            return NULL;
        }
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "epoch %R does not fit the record header's u32", args[3]);
        Py_DECREF(offset_int);
        return NULL;
    }
    unsigned long long prev = PyLong_AsUnsignedLongLong(args[4]);
    if (prev == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "prev %R does not fit the record header's u64", args[4]);
        }
        Py_DECREF(offset_int);
        return NULL;
    }
    Py_buffer buf, payload;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_WRITABLE) < 0) {
        Py_DECREF(offset_int);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &payload, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        Py_DECREF(offset_int);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = payload.len;
    if ((unsigned long long)n > 0xFFFFFFFFULL - RECORD_HEADER_SIZE) {
        PyErr_Format(PyExc_OverflowError, "a record of %lld bytes does not fit the header's u32 length",
                     (long long)n + RECORD_HEADER_SIZE);
        goto done;
    }
    if (offset < 0 || offset > buf.len || buf.len - offset < RECORD_HEADER_SIZE + n) {
        PyErr_Format(PyExc_ValueError, "a record of %zd bytes at offset %S does not fit a buffer of %zd bytes",
                     RECORD_HEADER_SIZE + n, offset_int, buf.len);
        goto done;
    }
    unsigned char *p = (unsigned char *)buf.buf + offset;
    unsigned char header[RECORD_HEADER_SIZE];
    put_u32(header, (uint32_t)(RECORD_HEADER_SIZE + n));
    put_u32(header + 4, (uint32_t)epoch);
    put_u64(header + 8, (uint64_t)prev);
    memset(header + 16, 0, 4); /* info u8, pad[3] */
    /* zlib's crc32 takes a uInt length: feed a large payload in pieces. */
    uLong crc = crc32(0L, Z_NULL, 0);
    const unsigned char *src = (const unsigned char *)payload.buf;
    Py_ssize_t left = n;
    while (left > 0) {
        uInt take = left > (Py_ssize_t)0x40000000 ? 0x40000000u : (uInt)left;
        crc = crc32(crc, src + (n - left), take);
        left -= take;
    }
    crc = crc32(crc, header, CRC_COVERED);
    put_u32(header + CRC_COVERED, (uint32_t)crc);
    memmove(p + RECORD_HEADER_SIZE, payload.buf, (size_t)n); /* payload first: it may overlap the header's place */
    memcpy(p, header, RECORD_HEADER_SIZE);
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&payload);
    PyBuffer_Release(&buf);
    Py_DECREF(offset_int);
    return result;
}

static PyMethodDef methods[] = {
    {"write_record", (PyCFunction)(void (*)(void))write_record, METH_FASTCALL,
     "write_record(buf, offset, payload, epoch, prev): the record header and payload into buf at offset."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aiopg_io.wal._record",
    .m_doc = "A WAL record laid into the WAL buffers in one C call (see aiopg_io/wal/_format.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__record(void)
{
    return PyModule_Create(&module);
}
