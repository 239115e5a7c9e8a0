// Helpers shared by the Verilator harnesses (bulk.cpp, bus.cpp): file I/O, the seeded random
// source, and copies between byte buffers and Verilator ports of any width (CData..QData or
// VlWide<N>), so that no harness spells a beat's width: the sizes come from the generated
// mp_harness.h (sim/verilated.py, from hdl/beats.py).
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "verilated.h"

namespace mp {

inline uint64_t rng_state = 1;
inline void seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ULL + 1; }
inline uint32_t rnd() {  // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}
// true with probability permille / 1000
inline bool chance(uint32_t permille) { return permille != 0 && rnd() % 1000 < permille; }

inline std::vector<uint8_t> slurp(const char* path) {
    std::vector<uint8_t> out;
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::fprintf(stderr, "harness: cannot open %s\n", path); std::exit(2); }
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
    std::fclose(f);
    return out;
}

inline void spit(const char* path, const void* data, size_t n) {
    FILE* f = std::fopen(path, "wb");
    if (!f || std::fwrite(data, 1, n, f) != n) { std::fprintf(stderr, "harness: cannot write %s\n", path); std::exit(2); }
    std::fclose(f);
}

inline uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

// Port <- nbytes little-endian bytes (the rest of the port 0).  Integral ports (CData..QData) and
// VlWide<N> (32-bit words, least significant first) both hold the beat in host byte order.
template <typename T>
inline void put_port(T& port, const uint8_t* src, size_t nbytes) {
    if constexpr (std::is_integral_v<T>) {
        T v = 0;
        std::memcpy(&v, src, nbytes < sizeof v ? nbytes : sizeof v);
        port = v;
    } else {
        std::memset(port.data(), 0, sizeof(port.m_storage));
        std::memcpy(port.data(), src, nbytes < sizeof(port.m_storage) ? nbytes : sizeof(port.m_storage));
    }
}

// nbytes little-endian bytes <- port.
template <typename T>
inline void get_port(const T& port, uint8_t* dst, size_t nbytes) {
    std::memset(dst, 0, nbytes);
    if constexpr (std::is_integral_v<T>) {
        std::memcpy(dst, &port, nbytes < sizeof port ? nbytes : sizeof port);
    } else {
        std::memcpy(dst, port.data(), nbytes < sizeof(port.m_storage) ? nbytes : sizeof(port.m_storage));
    }
}

}  // namespace mp
