/* kv._speedups: the table's hot paths in C. Optional: kv/table.py and
 * kv/build.py hold the same algorithms in Python and use them when this module
 * is not built (no compiler) or when KV_PURE_PYTHON=1 is set.
 *
 * Lookup(buffer, home_slots, slots_offset, max_displacement, records_offset,
 *        records_size, slow, corrupt)
 * is a callable: lookup(key) -> value bytes | None. It handles every well-formed
 * key (36-char UUID in any letter case, 32 hex digits) itself and calls
 * slow(key) for anything else, which raises InvalidKey with the reason.
 * corrupt(offset) raises TableCorrupt. The algorithm and every bounds check
 * mirror Table._probe; docs/FORMAT.md describes the bytes.
 *
 * xxh3_64 is computed by a small XXH3 implementation below, limited to what
 * the format needs (seed 0, default secret); tests check it against the
 * xxhash package on every length from 0 to 4096 bytes and on random inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__ || !defined(__SIZEOF_INT128__)
#error "kv._speedups needs a little-endian host and a compiler with __int128 (GCC, Clang); kv falls back to Python"
#endif

/* ---- XXH3_64bits, seed 0, default secret (after the reference xxhash.h) ---- */

#define P32_1 0x9E3779B1U
#define P32_2 0x85EBCA77U
#define P32_3 0xC2B2AE3DU
#define P64_1 0x9E3779B185EBCA87ULL
#define P64_2 0xC2B2AE3D27D4EB4FULL
#define P64_3 0x165667B19E3779F9ULL
#define P64_4 0x85EBCA77C2B2AE63ULL
#define P64_5 0x27D4EB2F165667C5ULL
#define PRIME_MX1 0x165667919E3779F9ULL
#define PRIME_MX2 0x9FB21C651E98DF25ULL
#define SECRET_SIZE 192
#define STRIPE_LEN 64
#define SECRET_CONSUME_RATE 8
#define ACC_NB 8
#define MIDSIZE_MAX 240

static const uint8_t kSecret[SECRET_SIZE] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

static inline uint64_t r64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; } /* little-endian hosts */
static inline uint32_t r32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t swap64(uint64_t x) { return __builtin_bswap64(x); }
static inline uint32_t swap32(uint32_t x) { return __builtin_bswap32(x); }

static inline uint64_t mul128_fold64(uint64_t a, uint64_t b)
{
    __uint128_t p = (__uint128_t)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
}

static inline uint64_t xorshift64(uint64_t v, int s) { return v ^ (v >> s); }

static inline uint64_t avalanche(uint64_t h)
{
    h = xorshift64(h, 37);
    h *= PRIME_MX1;
    return xorshift64(h, 32);
}

static inline uint64_t rrmxmx(uint64_t h, uint64_t len)
{
    h ^= rotl64(h, 49) ^ rotl64(h, 24);
    h *= PRIME_MX2;
    h ^= (h >> 35) + len;
    h *= PRIME_MX2;
    return xorshift64(h, 28);
}

static inline uint64_t xxh64_avalanche(uint64_t h)
{
    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    h ^= h >> 32;
    return h;
}

static inline uint64_t mix16(const uint8_t *in, const uint8_t *sec)
{
    return mul128_fold64(r64(in) ^ r64(sec), r64(in + 8) ^ r64(sec + 8));
}

static uint64_t len_0to16(const uint8_t *in, size_t len)
{
    const uint8_t *s = kSecret;
    if (len > 8) {
        uint64_t lo = r64(in) ^ (r64(s + 24) ^ r64(s + 32));
        uint64_t hi = r64(in + len - 8) ^ (r64(s + 40) ^ r64(s + 48));
        uint64_t acc = len + swap64(lo) + hi + mul128_fold64(lo, hi);
        return avalanche(acc);
    }
    if (len >= 4) {
        uint32_t i1 = r32(in), i2 = r32(in + len - 4);
        uint64_t bitflip = r64(s + 8) ^ r64(s + 16);
        uint64_t i64 = i2 + (((uint64_t)i1) << 32);
        return rrmxmx(i64 ^ bitflip, len);
    }
    if (len > 0) {
        uint8_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
        uint32_t combined = ((uint32_t)c1 << 16) | ((uint32_t)c2 << 24) | ((uint32_t)c3 << 0) | ((uint32_t)len << 8);
        uint64_t bitflip = (uint64_t)(r32(s) ^ r32(s + 4));
        return xxh64_avalanche((uint64_t)combined ^ bitflip);
    }
    return xxh64_avalanche(r64(s + 56) ^ r64(s + 64));
}

static uint64_t len_17to128(const uint8_t *in, size_t len)
{
    const uint8_t *s = kSecret;
    uint64_t acc = len * P64_1;
    if (len > 32) {
        if (len > 64) {
            if (len > 96) {
                acc += mix16(in + 48, s + 96);
                acc += mix16(in + len - 64, s + 112);
            }
            acc += mix16(in + 32, s + 64);
            acc += mix16(in + len - 48, s + 80);
        }
        acc += mix16(in + 16, s + 32);
        acc += mix16(in + len - 32, s + 48);
    }
    acc += mix16(in, s);
    acc += mix16(in + len - 16, s + 16);
    return avalanche(acc);
}

static uint64_t len_129to240(const uint8_t *in, size_t len)
{
    const uint8_t *s = kSecret;
    uint64_t acc = len * P64_1;
    int nb = (int)len / 16, i;
    for (i = 0; i < 8; i++)
        acc += mix16(in + 16 * i, s + 16 * i);
    acc = avalanche(acc);
    for (i = 8; i < nb; i++)
        acc += mix16(in + 16 * i, s + 16 * (i - 8) + 3);
    acc += mix16(in + len - 16, s + 136 - 17); /* XXH3_SECRET_SIZE_MIN - XXH3_MIDSIZE_LASTOFFSET */
    return avalanche(acc);
}

static inline void accumulate_512(uint64_t *acc, const uint8_t *in, const uint8_t *sec)
{
    for (int i = 0; i < ACC_NB; i++) {
        uint64_t dv = r64(in + 8 * i);
        uint64_t dk = dv ^ r64(sec + 8 * i);
        acc[i ^ 1] += dv;
        acc[i] += (uint64_t)(uint32_t)dk * (dk >> 32);
    }
}

static inline void scramble(uint64_t *acc, const uint8_t *sec)
{
    for (int i = 0; i < ACC_NB; i++) {
        uint64_t a = acc[i];
        a = xorshift64(a, 47);
        a ^= r64(sec + 8 * i);
        a *= P32_1;
        acc[i] = a;
    }
}

static uint64_t hash_long(const uint8_t *in, size_t len)
{
    uint64_t acc[ACC_NB] = {P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1};
    const size_t nb_stripes = (SECRET_SIZE - STRIPE_LEN) / SECRET_CONSUME_RATE;
    const size_t block_len = STRIPE_LEN * nb_stripes;
    const size_t nb_blocks = (len - 1) / block_len;
    size_t n, st;
    for (n = 0; n < nb_blocks; n++) {
        for (st = 0; st < nb_stripes; st++)
            accumulate_512(acc, in + n * block_len + st * STRIPE_LEN, kSecret + st * SECRET_CONSUME_RATE);
        scramble(acc, kSecret + SECRET_SIZE - STRIPE_LEN);
    }
    {
        const size_t last = ((len - 1) - (block_len * nb_blocks)) / STRIPE_LEN;
        for (st = 0; st < last; st++)
            accumulate_512(acc, in + nb_blocks * block_len + st * STRIPE_LEN, kSecret + st * SECRET_CONSUME_RATE);
        accumulate_512(acc, in + len - STRIPE_LEN, kSecret + SECRET_SIZE - STRIPE_LEN - 7);
    }
    {
        uint64_t r = len * P64_1;
        const uint8_t *s = kSecret + 11;
        for (int i = 0; i < 4; i++)
            r += mul128_fold64(acc[2 * i] ^ r64(s + 16 * i), acc[2 * i + 1] ^ r64(s + 16 * i + 8));
        return avalanche(r);
    }
}

static uint64_t xxh3_64(const uint8_t *in, size_t len)
{
    if (len <= 16)
        return len_0to16(in, len);
    if (len <= 128)
        return len_17to128(in, len);
    if (len <= MIDSIZE_MAX)
        return len_129to240(in, len);
    return hash_long(in, len);
}

/* ---- keys ------------------------------------------------------------------ */

static int8_t hexval[256];

/* Canonical lower-case 36-byte form of a 36- or 32-character key, or -1. */
static int canonicalise(const uint8_t *k, Py_ssize_t n, uint8_t *out)
{
    static const int groups[5][2] = {{0, 8}, {9, 13}, {14, 18}, {19, 23}, {24, 36}};
    if (n == 36) {
        for (int i = 0; i < 36; i++) {
            uint8_t c = k[i];
            if (i == 8 || i == 13 || i == 18 || i == 23) {
                if (c != '-')
                    return -1;
                out[i] = '-';
            } else {
                if (hexval[c] < 0)
                    return -1;
                out[i] = (c >= 'A' && c <= 'F') ? (uint8_t)(c + 32) : c;
            }
        }
        return 0;
    }
    if (n == 32) {
        int j = 0;
        for (int g = 0; g < 5; g++) {
            for (int i = groups[g][0]; i < groups[g][1]; i++) {
                uint8_t c = k[j++];
                if (hexval[c] < 0)
                    return -1;
                out[i] = (c >= 'A' && c <= 'F') ? (uint8_t)(c + 32) : c;
            }
            if (g < 4)
                out[groups[g][1]] = '-';
        }
        return 0;
    }
    return -1;
}

/* ---- the Lookup type ----------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int have_view;
    uint64_t home_slots, slots_offset, max_displacement, rec_lo, rec_hi;
    int kind; /* KIND_UUID (format version 1) or KIND_STRING (version 2) */
    PyObject *slow;
    PyObject *corrupt;
    vectorcallfunc vectorcall;
} Lookup;

#define SLOT_SIZE 16
#define LEN_BITS 24
#define LEN_MASK ((1ULL << LEN_BITS) - 1)
#define KEY_LEN 36
#define VALUE_AT 37
#define KIND_UUID 0
#define KIND_STRING 2
#define MAX_STRING_KEY 1024

static PyObject *call1(PyObject *fn, PyObject *arg)
{
    return PyObject_CallOneArg(fn, arg);
}

static PyObject *raise_corrupt(Lookup *self, uint64_t off)
{
    PyObject *o = PyLong_FromUnsignedLongLong(off);
    if (o == NULL)
        return NULL;
    PyObject *r = call1(self->corrupt, o);
    Py_DECREF(o);
    Py_XDECREF(r);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "corrupt() returned instead of raising");
    return NULL;
}

/* The probe of both key kinds: the window of slots from the key's home slot,
 * in hash order, each slot with the key's 32-bit hash tried until the key is
 * found. `string` is a constant at each call, so the compiler makes two
 * loops of it.
 * - UUID keys (format version 1): records are the 16 key bytes, then the
 *   value (VALUE_AT). The checksum comes first, as _probe does: a damaged ref
 *   must be reported even when the bytes it points at hold some other key.
 * - String keys (format version 2): records are u16 key length, key, value. A
 *   record whose key length differs is another key (checked when it is ours);
 *   no canonical form lets a first match stand for all. */
static inline PyObject *probe_kind(Lookup *self, const uint8_t *kb, size_t n, int string)
{
    const uint8_t *base = (const uint8_t *)self->view.buf;
    uint64_t h32 = xxh3_64(kb, n) >> 32;
    uint64_t p = (h32 * self->home_slots) >> 32;
    const uint8_t *slot = base + self->slots_offset + p * SLOT_SIZE;
    const uint8_t *last = slot + self->max_displacement * SLOT_SIZE;
    const uint64_t min_len = string ? 2 : VALUE_AT;
    for (; slot <= last; slot += SLOT_SIZE) {
        uint32_t sh = r32(slot);
        if (sh > h32)
            return Py_NewRef(Py_None);
        uint64_t ref = r64(slot + 8);
        if (sh < h32 || ref == 0)
            continue;
        uint64_t off = ref >> LEN_BITS, end = off + (ref & LEN_MASK);
        if (off < self->rec_lo || end > self->rec_hi || end < off + min_len)
            return raise_corrupt(self, off);
        const uint8_t *rec = base + off;
        uint64_t key_at = 0, value_at = VALUE_AT;
        if (string) {
            uint64_t klen = (uint64_t)rec[0] | ((uint64_t)rec[1] << 8);
            if (klen != n)
                continue;
            if (off + 2 + klen > end)
                return raise_corrupt(self, off);
            key_at = 2;
            value_at = 2 + klen;
        }
        if ((uint32_t)xxh3_64(rec, end - off) != r32(slot + 4))
            return raise_corrupt(self, off);
        if (memcmp(rec + key_at, kb, n) != 0)
            continue; /* another key with the same 32-bit hash */
        return PyBytes_FromStringAndSize((const char *)rec + value_at, (Py_ssize_t)(end - off - value_at));
    }
    return Py_NewRef(Py_None);
}

static PyObject *probe(Lookup *self, const uint8_t *kb)
{
    return probe_kind(self, kb, KEY_LEN, 0);
}

static PyObject *probe_str(Lookup *self, const uint8_t *kb, Py_ssize_t n)
{
    return probe_kind(self, kb, (size_t)n, 1);
}

static PyObject *lookup_get_str(Lookup *self, PyObject *key)
{
    const char *k;
    Py_ssize_t n;
    int is_bytes = 0;
    if (PyUnicode_CheckExact(key)) {
        if (PyUnicode_IS_COMPACT_ASCII(key)) {
            k = (const char *)PyUnicode_DATA(key);
            n = PyUnicode_GET_LENGTH(key);
        } else if ((k = PyUnicode_AsUTF8AndSize(key, &n)) == NULL) {
            PyErr_Clear(); /* a lone surrogate: the slow path names it */
            return call1(self->slow, key);
        }
    } else if (PyBytes_CheckExact(key)) {
        k = PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
        is_bytes = 1;
    } else {
        return call1(self->slow, key);
    }
    if (n == 0 || n > MAX_STRING_KEY)
        return call1(self->slow, key); /* raises InvalidKey: empty or overlong */
    PyObject *r = probe_str(self, (const uint8_t *)k, n);
    if (r == Py_None && is_bytes) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if ((uint8_t)k[i] >= 0x80) { /* maybe not UTF-8: the slow path tells 400 from 404 */
                Py_DECREF(r);
                return call1(self->slow, key);
            }
        }
    }
    return r;
}

static PyObject *lookup_get(Lookup *self, PyObject *key)
{
    const uint8_t *k;
    Py_ssize_t n;
    uint8_t canon[KEY_LEN];
    if (!self->have_view) {
        PyErr_SetString(PyExc_ValueError, "table is closed");
        return NULL;
    }
    if (self->kind == KIND_STRING)
        return lookup_get_str(self, key);
    if (PyUnicode_CheckExact(key) && PyUnicode_IS_COMPACT_ASCII(key)) {
        k = (const uint8_t *)PyUnicode_DATA(key);
        n = PyUnicode_GET_LENGTH(key);
    } else if (PyBytes_CheckExact(key)) {
        k = (const uint8_t *)PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
    } else {
        return call1(self->slow, key);
    }
    if (canonicalise(k, n, canon) < 0)
        return call1(self->slow, key); /* raises InvalidKey naming the fault */
    return probe(self, canon);
}

static PyObject *Lookup_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "get() takes exactly one argument, the key");
        return NULL;
    }
    return lookup_get((Lookup *)callable, args[0]);
}

static PyObject *Lookup_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *key;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "get() takes exactly one argument, the key");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:get", &key))
        return NULL;
    return lookup_get((Lookup *)self, key);
}

static int Lookup_init(Lookup *self, PyObject *args, PyObject *kwds)
{
    PyObject *buf, *slow, *corrupt;
    unsigned long long home, slots_off, maxd, rec_off, rec_size;
    int kind = KIND_UUID;
    static char *kwlist[] = {"buffer", "home_slots", "slots_offset", "max_displacement", "records_offset",
                             "records_size", "slow", "corrupt", "kind", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKKKKOO|i:Lookup", kwlist, &buf, &home, &slots_off, &maxd, &rec_off,
                                     &rec_size, &slow, &corrupt, &kind))
        return -1;
    if (kind != KIND_UUID && kind != KIND_STRING) {
        PyErr_Format(PyExc_ValueError, "unknown key kind %d", kind);
        return -1;
    }
    if (self->have_view) {
        PyErr_SetString(PyExc_RuntimeError, "Lookup already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_SIMPLE) < 0)
        return -1;
    self->have_view = 1;
    /* The caller (Table) has checked the header; check again what C relies on. */
    uint64_t size = (uint64_t)self->view.len;
    if (home == 0 || home >= (1ULL << 32) || slots_off > size ||
        (home + maxd + 1) > (size - slots_off) / SLOT_SIZE || rec_off > size || rec_size > size - rec_off) {
        PyBuffer_Release(&self->view);
        self->have_view = 0;
        PyErr_SetString(PyExc_ValueError, "table regions lie outside the buffer");
        return -1;
    }
    self->kind = kind;
    self->home_slots = home;
    self->slots_offset = slots_off;
    self->max_displacement = maxd;
    self->rec_lo = rec_off;
    self->rec_hi = rec_off + rec_size;
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->corrupt, Py_NewRef(corrupt));
    self->vectorcall = Lookup_vectorcall;
    return 0;
}

static PyObject *Lookup_release(Lookup *self, PyObject *Py_UNUSED(unused))
{
    if (self->have_view) {
        PyBuffer_Release(&self->view);
        self->have_view = 0;
    }
    Py_RETURN_NONE;
}

static int Lookup_traverse(Lookup *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    Py_VISIT(self->corrupt);
    if (self->have_view)
        Py_VISIT(self->view.obj);
    return 0;
}

static int Lookup_clear(Lookup *self)
{
    Py_CLEAR(self->slow);
    Py_CLEAR(self->corrupt);
    if (self->have_view) {
        PyBuffer_Release(&self->view);
        self->have_view = 0;
    }
    return 0;
}

static void Lookup_dealloc(Lookup *self)
{
    PyObject_GC_UnTrack(self);
    Lookup_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Lookup_methods[] = {
    {"release", (PyCFunction)Lookup_release, METH_NOARGS, "Release the buffer (the table is closing)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LookupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kv._speedups.Lookup",
    .tp_basicsize = sizeof(Lookup),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "lookup(key) -> value bytes or None, over a mapped table",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lookup_init,
    .tp_dealloc = (destructor)Lookup_dealloc,
    .tp_traverse = (traverseproc)Lookup_traverse,
    .tp_clear = (inquiry)Lookup_clear,
    .tp_call = Lookup_call,
    .tp_vectorcall_offset = offsetof(Lookup, vectorcall),
    .tp_methods = Lookup_methods,
};

/* ---- module functions ------------------------------------------------------------ */

static PyObject *mod_xxh3_64(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t h = xxh3_64((const uint8_t *)b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}

/* unquote(bytes) -> bytes: percent-decoding (RFC 3986) of a raw path segment,
 * as urllib.parse.unquote_to_bytes does it: "%XX" with two hex digits becomes
 * that byte, anything else (a lone "%", "%zz", "+") stays as it is. The
 * string-key hit paths decode every "%"-bearing key with it (Python's takes
 * about 2 us a key, this about 0.05). */
static PyObject *mod_unquote(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "unquote() takes bytes");
        return NULL;
    }
    const uint8_t *s = (const uint8_t *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    uint8_t *d = (uint8_t *)PyBytes_AS_STRING(out);
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval[s[i + 1]] >= 0 && hexval[s[i + 2]] >= 0) {
            d[j++] = (uint8_t)(hexval[s[i + 1]] << 4 | hexval[s[i + 2]]);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    if (j != n && _PyBytes_Resize(&out, j) < 0)
        return NULL;
    return out;
}

/* hash_spans(buffer, starts, ends, out): out[i] = xxh3_64(buffer[starts[i]:ends[i]]).
 * starts and ends are int64 arrays, out a uint64 array, all of one length; the
 * builder hashes a block of keys (or records) in one call, without the GIL. */
/* A C-contiguous array of `itemsize`-byte integers (numpy's int64, uint64,
 * uint32 ...), writable if asked; else TypeError naming the argument. */
static int get_ints(PyObject *o, Py_buffer *b, Py_ssize_t itemsize, int writable, const char *name)
{
    if (PyObject_GetBuffer(o, b, (writable ? PyBUF_WRITABLE : 0) | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (b->itemsize != itemsize || b->format == NULL || strchr("BHILQbhilqk", b->format[strlen(b->format) - 1]) == NULL) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous%s array of %zd-byte integers", name,
                     writable ? " writable" : "", itemsize);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static PyObject *mod_hash_spans(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *o_buf, *o_starts, *o_ends, *o_out;
    Py_buffer buf, st, en, out;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOO:hash_spans", &o_buf, &o_starts, &o_ends, &o_out))
        return NULL;
    if (PyObject_GetBuffer(o_buf, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (get_ints(o_starts, &st, 8, 0, "starts") < 0)
        goto release_buf;
    if (get_ints(o_ends, &en, 8, 0, "ends") < 0)
        goto release_st;
    if (get_ints(o_out, &out, 8, 1, "out") < 0)
        goto release_en;
    Py_ssize_t n = st.len / 8;
    if (en.len / 8 != n || out.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "starts, ends and out must have the same length");
        goto release_out;
    }
    const int64_t *s = (const int64_t *)st.buf, *e = (const int64_t *)en.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 0 || e[i] < s[i] || e[i] > buf.len) {
            PyErr_Format(PyExc_ValueError, "span %zd [%lld, %lld) lies outside the buffer", i, (long long)s[i], (long long)e[i]);
            goto release_out;
        }
    }
    {
        const uint8_t *base = (const uint8_t *)buf.buf;
        uint64_t *h = (uint64_t *)out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++)
            h[i] = xxh3_64(base + s[i], (size_t)(e[i] - s[i]));
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
release_out:
    PyBuffer_Release(&out);
release_en:
    PyBuffer_Release(&en);
release_st:
    PyBuffer_Release(&st);
release_buf:
    PyBuffer_Release(&buf);
    return result;
}

/* sort_records(h64, refs, checks): sorts the three arrays together, in place,
 * by (h64, ref). A ref grows with the record's position in the input, so this
 * is the order np.argsort(h64, kind="stable") gives (the Python path), and it
 * needs no index array: the builder's peak memory stays at the three arrays.
 * Linear time for hashes: an in-place distribution on the top bits (at most
 * 1024 buckets), then each bucket, copied to a small scratch area, distributed
 * back by its next bits into sub-buckets of about 8, finished by insertion
 * sort. A crowded bucket (many copies of one key, or crafted keys) is
 * heap-sorted in place instead: O(m log m) and no memory, never quadratic. */
#define REC_LESS(k1, r1, k2, r2) ((k1) < (k2) || ((k1) == (k2) && (r1) < (r2)))
#define REC_SWAP(k, r, c, i, j)                                                                                        \
    do {                                                                                                               \
        uint64_t tk_ = k[i], tr_ = r[i];                                                                               \
        uint32_t tc_ = c[i];                                                                                           \
        k[i] = k[j], r[i] = r[j], c[i] = c[j];                                                                         \
        k[j] = tk_, r[j] = tr_, c[j] = tc_;                                                                            \
    } while (0)

static void sift_down(uint64_t *k, uint64_t *r, uint32_t *c, Py_ssize_t root, Py_ssize_t n)
{
    for (;;) {
        Py_ssize_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && REC_LESS(k[child], r[child], k[child + 1], r[child + 1]))
            child++;
        if (!REC_LESS(k[root], r[root], k[child], r[child]))
            return;
        REC_SWAP(k, r, c, root, child);
        root = child;
    }
}

static void heap_sort(uint64_t *k, uint64_t *r, uint32_t *c, Py_ssize_t n)
{
    for (Py_ssize_t i = n / 2 - 1; i >= 0; i--)
        sift_down(k, r, c, i, n);
    for (Py_ssize_t end = n - 1; end > 0; end--) {
        REC_SWAP(k, r, c, 0, end);
        sift_down(k, r, c, 0, end);
    }
}

static void small_sort(uint64_t *k, uint64_t *r, uint32_t *c, Py_ssize_t n)
{
    if (n > 48) { /* a crowded sub-bucket */
        heap_sort(k, r, c, n);
        return;
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t kk = k[i], rr = r[i];
        uint32_t cc = c[i];
        Py_ssize_t j = i;
        while (j > 0 && REC_LESS(kk, rr, k[j - 1], r[j - 1])) {
            k[j] = k[j - 1];
            r[j] = r[j - 1];
            c[j] = c[j - 1];
            j--;
        }
        k[j] = kk;
        r[j] = rr;
        c[j] = cc;
    }
}

static int bits_for(Py_ssize_t n, int cap) /* buckets of about 8 */
{
    int bits = 0;
    while (bits < cap && ((Py_ssize_t)8 << bits) < n)
        bits++;
    return bits;
}

static PyObject *mod_sort_records(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *o_k, *o_r, *o_c;
    Py_buffer bk, br, bc;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOO:sort_records", &o_k, &o_r, &o_c))
        return NULL;
    if (get_ints(o_k, &bk, 8, 1, "h64") < 0)
        return NULL;
    if (get_ints(o_r, &br, 8, 1, "refs") < 0)
        goto release_k;
    if (get_ints(o_c, &bc, 4, 1, "checks") < 0)
        goto release_r;
    Py_ssize_t n = bk.len / 8;
    if (br.len / 8 != n || bc.len / 4 != n) {
        PyErr_SetString(PyExc_ValueError, "h64, refs and checks must have the same length");
        goto release_c;
    }
    {
        uint64_t *k = bk.buf, *r = br.buf;
        uint32_t *c = bc.buf;
        int bits1 = bits_for(n, 10), shift1 = 64 - bits1;
        size_t nb1 = (size_t)1 << bits1;
        int64_t *end1 = PyMem_RawCalloc(nb1 + 1, sizeof(int64_t));
        int64_t *next = PyMem_RawMalloc((nb1 + 1) * sizeof(int64_t));
        int failed = end1 == NULL || next == NULL;
        Py_BEGIN_ALLOW_THREADS
        if (!failed) {
#define B1(x) (bits1 ? (size_t)((x) >> shift1) : 0)
            for (Py_ssize_t i = 0; i < n; i++)
                end1[B1(k[i]) + 1]++;
            Py_ssize_t biggest = 0;
            for (size_t b = 0; b < nb1; b++) {
                if (end1[b + 1] > biggest)
                    biggest = end1[b + 1];
                end1[b + 1] += end1[b];
                next[b] = end1[b]; /* start of bucket b */
            }
            /* In place: swap each element into its bucket (cycle following). */
            for (size_t b = 0; b < nb1; b++) {
                while (next[b] < end1[b + 1]) {
                    int64_t i = next[b];
                    size_t d = B1(k[i]);
                    if (d == b) {
                        next[b]++;
                        continue;
                    }
                    int64_t j = next[d]++;
                    REC_SWAP(k, r, c, i, j);
                }
            }
#undef B1
            /* Scratch for buckets up to 4x the expected size; a bigger one is crowded. */
            Py_ssize_t cap = 4 * (n >> bits1) + 4096;
            if (biggest < cap)
                cap = biggest;
            int bits2 = bits_for(cap, 16);
            size_t sz = (size_t)(cap ? cap : 1);
            uint64_t *tk = PyMem_RawMalloc(sz * 8), *tr = PyMem_RawMalloc(sz * 8);
            uint32_t *tc = PyMem_RawMalloc(sz * 4);
            int64_t *count = PyMem_RawMalloc((((size_t)1 << bits2) + 1) * sizeof(int64_t));
            if (!tk || !tr || !tc || !count) {
                failed = 1;
            } else {
                int shift2 = shift1 - bits2 < 0 ? 0 : shift1 - bits2;
                uint64_t mask2 = ((uint64_t)1 << bits2) - 1;
                for (size_t b = 0; b < nb1; b++) {
                    int64_t lo = end1[b];
                    Py_ssize_t m = end1[b + 1] - lo;
                    if (m <= 48 || bits2 == 0) {
                        small_sort(k + lo, r + lo, c + lo, m);
                        continue;
                    }
                    if (m > cap) {
                        heap_sort(k + lo, r + lo, c + lo, m);
                        continue;
                    }
                    memcpy(tk, k + lo, (size_t)m * 8);
                    memcpy(tr, r + lo, (size_t)m * 8);
                    memcpy(tc, c + lo, (size_t)m * 4);
                    size_t nb2 = (size_t)1 << bits2;
                    memset(count, 0, (nb2 + 1) * sizeof(int64_t));
                    for (Py_ssize_t i = 0; i < m; i++)
                        count[((tk[i] >> shift2) & mask2) + 1]++;
                    for (size_t q = 0; q < nb2; q++)
                        count[q + 1] += count[q];
                    for (Py_ssize_t i = 0; i < m; i++) {
                        int64_t at = lo + count[(tk[i] >> shift2) & mask2]++;
                        k[at] = tk[i], r[at] = tr[i], c[at] = tc[i];
                    }
                    int64_t lo2 = lo; /* count[q] is now where sub-bucket q ends, relative to lo */
                    for (size_t q = 0; q < nb2; q++) {
                        small_sort(k + lo2, r + lo2, c + lo2, lo + count[q] - lo2);
                        lo2 = lo + count[q];
                    }
                }
            }
            PyMem_RawFree(tk);
            PyMem_RawFree(tr);
            PyMem_RawFree(tc);
            PyMem_RawFree(count);
        }
        Py_END_ALLOW_THREADS
        PyMem_RawFree(end1);
        PyMem_RawFree(next);
        if (failed) {
            PyErr_NoMemory();
            goto release_c;
        }
    }
    result = Py_NewRef(Py_None);
release_c:
    PyBuffer_Release(&bc);
release_r:
    PyBuffer_Release(&br);
release_k:
    PyBuffer_Release(&bk);
    return result;
}

/* tsv_records(buffer, cr_mode, starts, klens, vlens, h64, checks) -> (bytes, lines, cr_stripped) | None:
 * one block of tsv lines (`key<TAB>value\n`, whole lines, the last ending in
 * LF) turned into version-2 records (u16 key length, key, value, back to back)
 * with each record's start, key length, value length, the key's xxh3_64 and
 * the record's check (low 32 bits of xxh3_64 of the record), as the numpy path
 * of kv/strlines.py TsvReader computes them. cr_mode: 0 = a line ending in CR
 * is refused, 1 = the CR is stripped, 2 = it is the value's last byte. The
 * arrays (int64, int64, int64, uint64, uint32) hold at least one entry a line
 * (len(buffer) // 3 + 1 always do: the shortest line is `k<TAB>\n`).
 * Returns None, having written nothing that counts, when any line is not a
 * valid record (no TAB, key empty, over 1,024 bytes or not UTF-8, record too
 * long, a CR under cr_mode 0): the caller then takes the numpy path, which
 * names the problem. One pass, without the GIL. */
#define MAX_STRING_RECORD LEN_MASK

/* Strict UTF-8 (what bytes.decode("utf-8") accepts: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i + 8 <= n) { /* ASCII, eight bytes at a time */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return 0;
        if (i + need >= n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= need; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF)
                return 0;
        i += need + 1;
    }
    return 1;
}

/* 1: every line became a record (*out_len bytes of records, *lines lines,
 * *crs CRs stripped); 0: some line is not a valid record; -1: more lines than
 * cap. */
static int tsv_pass(const uint8_t *in, Py_ssize_t len, int cr_mode, uint8_t *out, Py_ssize_t cap, int64_t *st, int64_t *kl,
                    int64_t *vl, uint64_t *h, uint32_t *ck, Py_ssize_t *out_len, Py_ssize_t *lines, Py_ssize_t *crs)
{
    const uint8_t *p = in, *end = in + len;
    uint8_t *o = out;
    Py_ssize_t i = 0, stripped = 0;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return 0;
        if (i >= cap)
            return -1;
        size_t n = (size_t)(nl - p);
        if (n > 0 && p[n - 1] == '\r') {
            if (cr_mode == 0)
                return 0;
            if (cr_mode == 1) {
                n--;
                stripped++;
            }
        }
        const uint8_t *tab = memchr(p, '\t', n);
        if (tab == NULL)
            return 0;
        size_t k = (size_t)(tab - p), v = n - k - 1;
        if (k < 1 || k > MAX_STRING_KEY || k + v + 2 > MAX_STRING_RECORD || !utf8_valid(p, k))
            return 0;
        o[0] = (uint8_t)(k & 0xFF);
        o[1] = (uint8_t)(k >> 8);
        memcpy(o + 2, p, k);
        memcpy(o + 2 + k, tab + 1, v);
        st[i] = (int64_t)(o - out);
        kl[i] = (int64_t)k;
        vl[i] = (int64_t)v;
        h[i] = xxh3_64(o + 2, k);
        ck[i] = (uint32_t)xxh3_64(o, k + v + 2);
        o += k + v + 2;
        i++;
        p = nl + 1;
    }
    *out_len = (Py_ssize_t)(o - out);
    *lines = i;
    *crs = stripped;
    return 1;
}

static PyObject *mod_tsv_records(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *o_buf, *o_arr[5];
    int cr_mode;
    Py_buffer buf, arr[5];
    static const Py_ssize_t sizes[5] = {8, 8, 8, 8, 4};
    static const char *names[5] = {"starts", "klens", "vlens", "h64", "checks"};
    PyObject *result = NULL, *out = NULL;
    int got = 0;
    if (!PyArg_ParseTuple(args, "OiOOOOO:tsv_records", &o_buf, &cr_mode, &o_arr[0], &o_arr[1], &o_arr[2], &o_arr[3], &o_arr[4]))
        return NULL;
    if (cr_mode < 0 || cr_mode > 2) {
        PyErr_SetString(PyExc_ValueError, "cr_mode must be 0 (refuse), 1 (strip) or 2 (keep)");
        return NULL;
    }
    if (PyObject_GetBuffer(o_buf, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    for (; got < 5; got++)
        if (get_ints(o_arr[got], &arr[got], sizes[got], 1, names[got]) < 0)
            goto release;
    Py_ssize_t cap = arr[0].len / 8;
    for (int j = 1; j < 5; j++)
        if (arr[j].len / sizes[j] < cap)
            cap = arr[j].len / sizes[j];
    /* A record is never longer than its line: 2 length bytes for the TAB and LF. */
    out = PyBytes_FromStringAndSize(NULL, buf.len);
    if (out == NULL)
        goto release;
    Py_ssize_t out_len = 0, lines = 0, crs = 0;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = tsv_pass((const uint8_t *)buf.buf, buf.len, cr_mode, (uint8_t *)PyBytes_AS_STRING(out), cap, (int64_t *)arr[0].buf,
                  (int64_t *)arr[1].buf, (int64_t *)arr[2].buf, (uint64_t *)arr[3].buf, (uint32_t *)arr[4].buf, &out_len, &lines, &crs);
    Py_END_ALLOW_THREADS
    if (ok < 0) {
        PyErr_SetString(PyExc_ValueError, "the arrays hold fewer entries than the buffer has lines");
        goto release;
    }
    if (ok == 0) {
        result = Py_NewRef(Py_None);
        goto release;
    }
    if (_PyBytes_Resize(&out, out_len) < 0)
        goto release; /* out is NULL now */
    result = Py_BuildValue("(Onn)", out, lines, crs);
release:
    Py_XDECREF(out);
    for (int j = 0; j < got; j++)
        PyBuffer_Release(&arr[j]);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef module_methods[] = {
    {"hash_spans", mod_hash_spans, METH_VARARGS, "hash_spans(buffer, starts, ends, out): xxh3_64 of each span into out"},
    {"sort_records", mod_sort_records, METH_VARARGS, "sort_records(h64, refs, checks): sort the three in place by (h64, ref)"},
    {"tsv_records", mod_tsv_records, METH_VARARGS,
     "tsv_records(buffer, cr_mode, starts, klens, vlens, h64, checks) -> (records, lines, cr_stripped) | None: tsv lines as records"},
    {"unquote", mod_unquote, METH_O, "unquote(bytes) -> bytes: percent-decoding, as urllib.parse.unquote_to_bytes"},
    {"xxh3_64", mod_xxh3_64, METH_O, "xxh3_64(buffer) -> int, seed 0 (checked against the xxhash package in tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "kv._speedups", "The table's hot paths in C.", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    for (int c = 0; c < 256; c++)
        hexval[c] = -1;
    for (int c = 0; c < 10; c++)
        hexval['0' + c] = (int8_t)c;
    for (int c = 0; c < 6; c++) {
        hexval['a' + c] = (int8_t)(10 + c);
        hexval['A' + c] = (int8_t)(10 + c);
    }
    if (PyType_Ready(&LookupType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lookup", (PyObject *)&LookupType) < 0 ||
        PyModule_AddIntConstant(m, "KIND_STRING", KIND_STRING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
