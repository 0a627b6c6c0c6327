// csim_io.h: raw little-endian I/O for the C-simulation drivers (test code, not kernel code).
// Inputs come on stdin in the order the Python test writes them; outputs go to the file argv[2].
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace csim {

inline FILE *&out_file() {
    static FILE *f = nullptr;
    return f;
}

inline void fail(const char *msg) {
    std::fprintf(stderr, "csim driver error: %s\n", msg);
    std::exit(2);
}

template <typename T>
void read(T *p, size_t n) {
    if (n && std::fread(p, sizeof(T), n, stdin) != n) fail("short read on stdin");
}

template <typename T>
T read1() {
    T v;
    read(&v, 1);
    return v;
}

inline int read_int() { return (int)read1<int32_t>(); }
inline float read_float() { return read1<float>(); }

template <typename T>
std::vector<T> read_vec(size_t n) {
    std::vector<T> v(n);
    read(v.data(), n);
    return v;
}

// n_words 64-byte little-endian words (byte b = bits [8b+7 : 8b]) into dst, for any word type with
// range(hi, lo), e.g. flexllm::wide_word_t = ap_uint<512>.
template <typename WORD>
void read_words(WORD *dst, size_t n_words) {
    std::vector<uint8_t> bytes = read_vec<uint8_t>(n_words * 64);
    for (size_t i = 0; i < n_words; ++i)
        for (int b = 0; b < 64; ++b) dst[i].range(8 * b + 7, 8 * b) = bytes[i * 64 + b];
}

// rows x cols values into dst[r][c] of a row-major array with row stride W.
template <typename T, int W>
void read_rows(T dst[][W], int rows, int cols) {
    if (cols > W) fail("row longer than the buffer");
    for (int r = 0; r < rows; ++r) read(dst[r], (size_t)cols);
}

template <typename T>
void write(const T *p, size_t n) {
    if (n && std::fwrite(p, sizeof(T), n, out_file()) != n) fail("short write");
}

template <typename T>
void write1(T v) {
    write(&v, 1);
}

template <typename T, int W>
void write_rows(const T src[][W], int rows, int cols) {
    for (int r = 0; r < rows; ++r) write(src[r], (size_t)cols);
}

inline void open_output(int argc, char **argv) {
    if (argc < 3) fail("usage: driver <op> <output file> < input");
    out_file() = std::fopen(argv[2], "wb");
    if (!out_file()) fail("cannot open the output file");
}

inline void require(bool cond, const char *msg) {
    if (!cond) fail(msg);
}

}  // namespace csim
