// Verilator bulk harness of the mailpulse_axi top: loads a configuration over AXI4-Lite, then
// streams samples at one per clock (with seeded random idle and back-pressure) and records every
// result beat.  Built by sim/bulk.py (verilator --cc --exe --build); the comparison with the
// reference model happens in Python.  No register offset is spelled here: the Python side passes
// every address it needs on the command line.
//
// usage: bulk WRITES SAMPLES TLAST N RESULTS RTLAST SEED IDLE_PERMILLE BP_PERMILLE
//             STATUS_ADDR BUSY_MASK SAMPLES_ADDR ANOMALIES_ADDR [TRACE.vcd TRACE_FROM]
//   WRITES   (addr u32, value u32) little-endian pairs, written in order (the last is CTRL.COMMIT)
//   SAMPLES  N x MP_SAMPLE_BYTES-byte s_axis beats;  TLAST N bytes (0/1)
//   RESULTS  N x MP_RESULT_BYTES-byte m_axis beats;  RTLAST N bytes
//   (the beat sizes of mailpulse/hdl/beats.py, passed by sim/bulk.py as -D definitions; a port is
//   copied byte for byte, whether Verilator makes it a QData or a VlWide)
//   TRACE    VCD written from the cycle sample TRACE_FROM is offered (the AXI4-Lite set-up too when 0);
//            only in the build with -DMP_TRACE (verilator --trace)
// stdout: one line "cycles C write_errors E samples S anomalies A comb_outputs K"
// exit status: 0 ok, 2 usage/file error, 3 timeout (no progress for 1M cycles)
//
// One eval per clock.  Verilator 5 fires `posedge aclk` when an eval sees aclk=1 and the trigger's
// previous value (__Vtrigprevexpr___TOP__aclk__0, set by every eval) is 0, so the usual
// "aclk=0; eval(); aclk=1; eval()" evaluates the model twice per cycle, and the aclk=0 eval only
// re-runs the input combinational logic (the "ico" region, which every eval runs anyway).  Here
// the stream phase clears the previous value and evaluates once with aclk=1: the input logic sees
// the new inputs with the old register values, then the edge updates the registers.  The outputs
// the handshake needs before the edge (s_axis.tready, m_axis.tvalid/tdata/tlast) are read from the
// previous eval; that is exact when they depend on registers only, which the harness checks: for
// the first CHECK_CYCLES stream cycles it does evaluate with the clock low and compares the
// outputs; if any of them changed (an input reaches an output combinationally) it stays on two
// evals per clock for the rest of the run and reports comb_outputs > 0.  While a VCD is written
// the clock is toggled with two evals, so the waveform shows it.
//
// Verilator escapes the "__" of Amaranth's port names as "___05F": s_axil__awaddr is
// top->s_axil___05Fawaddr.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"
#ifdef MP_TRACE
#include "verilated_vcd_c.h"
#endif

namespace {

constexpr uint64_t CHECK_CYCLES = 4096;
#ifndef MP_SAMPLE_BYTES
#error "MP_SAMPLE_BYTES (bytes per s_axis beat) must be defined"
#endif
#ifndef MP_RESULT_BYTES
#error "MP_RESULT_BYTES (bytes per m_axis beat) must be defined"
#endif
constexpr size_t SAMPLE_BYTES = MP_SAMPLE_BYTES, RESULT_BYTES = MP_RESULT_BYTES;

// Clears the clock trigger's previous value when this Verilator names it as 5.0xx does; returns
// false (and the harness evaluates twice per clock) when the model has no such member.
template <typename Root>
auto clear_clock_trigger(Root* r, int) -> decltype(r->__Vtrigprevexpr___TOP__aclk__0 = 0, bool()) {
    r->__Vtrigprevexpr___TOP__aclk__0 = 0;
    return true;
}
template <typename Root>
bool clear_clock_trigger(Root*, long) { return false; }

struct Sim {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vtop> top;
#ifdef MP_TRACE
    std::unique_ptr<VerilatedVcdC> tfp;
#endif
    uint64_t cycle = 0;
    bool dumping = false;

    explicit Sim(const char* trace) : ctx(new VerilatedContext), top(new Vtop{ctx.get()}) {
#ifdef MP_TRACE
        if (trace) {
            ctx->traceEverOn(true);
            tfp.reset(new VerilatedVcdC);
            top->trace(tfp.get(), 99);
            tfp->open(trace);
        }
#else
        (void)trace;
#endif
        top->aclk = 0;
        top->aresetn = 0;
        top->s_axis___05Ftvalid = 0;
        top->m_axis___05Ftready = 0;
        top->s_axil___05Fawvalid = 0;
        top->s_axil___05Fwvalid = 0;
        top->s_axil___05Fbready = 0;
        top->s_axil___05Farvalid = 0;
        top->s_axil___05Frready = 0;
        top->eval();
    }
    ~Sim() {
        top->final();
#ifdef MP_TRACE
        if (tfp) tfp->close();
#endif
    }
    // Inputs for the coming rising edge are set; settle them (clock low).
    void settle() {
        top->aclk = 0;
        top->eval();
#ifdef MP_TRACE
        if (dumping) tfp->dump(ctx->time());
#endif
        ctx->timeInc(5);
    }
    void rise() {
        top->aclk = 1;
        top->eval();
#ifdef MP_TRACE
        if (dumping) tfp->dump(ctx->time());
#endif
        ctx->timeInc(5);
        ++cycle;
    }
    void tick() { settle(); rise(); }
    // One rising edge with the inputs as they are, in a single eval (see the head comment).
    void edge() {
        if (!dumping && clear_clock_trigger(top->rootp, 0)) {
            top->aclk = 1;
            top->eval();
            ctx->timeInc(10);
            ++cycle;
        } else {
            tick();
        }
    }
};

struct StreamOutputs {
    uint8_t tdata[RESULT_BYTES];
    uint8_t tready, tvalid, tlast;
    explicit StreamOutputs(const Vtop* t)
        : tready(t->s_axis___05Ftready), tvalid(t->m_axis___05Ftvalid), tlast(t->m_axis___05Ftlast) {
        std::memcpy(tdata, &t->m_axis___05Ftdata, RESULT_BYTES);
    }
    bool operator==(const StreamOutputs& o) const {
        return tready == o.tready && tvalid == o.tvalid && tlast == o.tlast && std::memcmp(tdata, o.tdata, sizeof tdata) == 0;
    }
};

uint64_t rng_state;
inline uint32_t rnd() {  // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}

std::vector<uint8_t> slurp(const char* path) {
    std::vector<uint8_t> out;
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::fprintf(stderr, "bulk: cannot open %s\n", path); std::exit(2); }
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
    std::fclose(f);
    return out;
}

void spit(const char* path, const uint8_t* data, size_t n) {
    FILE* f = std::fopen(path, "wb");
    if (!f || std::fwrite(data, 1, n, f) != n) { std::fprintf(stderr, "bulk: cannot write %s\n", path); std::exit(2); }
    std::fclose(f);
}

uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

// One AXI4-Lite write; returns bresp.
uint32_t axil_write(Sim& s, uint32_t addr, uint32_t data) {
    Vtop* t = s.top.get();
    t->s_axil___05Fawaddr = addr;
    t->s_axil___05Fawvalid = 1;
    t->s_axil___05Fwdata = data;
    t->s_axil___05Fwstrb = 0xF;
    t->s_axil___05Fwvalid = 1;
    t->s_axil___05Fbready = 1;
    bool aw_done = false, w_done = false;
    for (int guard = 0; guard < 100000; ++guard) {
        s.settle();
        bool aw_fire = t->s_axil___05Fawvalid && t->s_axil___05Fawready;
        bool w_fire = t->s_axil___05Fwvalid && t->s_axil___05Fwready;
        uint32_t resp = t->s_axil___05Fbresp;
        bool b_now = t->s_axil___05Fbvalid && (aw_done && w_done);
        s.rise();
        if (aw_fire) { aw_done = true; t->s_axil___05Fawvalid = 0; }
        if (w_fire) { w_done = true; t->s_axil___05Fwvalid = 0; }
        if (b_now) { t->s_axil___05Fbready = 0; return resp; }
    }
    std::fprintf(stderr, "bulk: AXI4-Lite write to 0x%04x got no response\n", addr);
    std::exit(3);
}

uint32_t axil_read(Sim& s, uint32_t addr, uint32_t* resp_out) {
    Vtop* t = s.top.get();
    t->s_axil___05Faraddr = addr;
    t->s_axil___05Farvalid = 1;
    t->s_axil___05Frready = 1;
    bool ar_done = false;
    for (int guard = 0; guard < 100000; ++guard) {
        s.settle();
        bool ar_fire = t->s_axil___05Farvalid && t->s_axil___05Farready;
        bool r_now = ar_done && t->s_axil___05Frvalid;
        uint32_t data = t->s_axil___05Frdata, resp = t->s_axil___05Frresp;
        s.rise();
        if (ar_fire) { ar_done = true; t->s_axil___05Farvalid = 0; }
        if (r_now) { t->s_axil___05Frready = 0; if (resp_out) *resp_out = resp; return data; }
    }
    std::fprintf(stderr, "bulk: AXI4-Lite read of 0x%04x got no response\n", addr);
    std::exit(3);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 14 && argc != 16) {
        std::fprintf(stderr, "usage: bulk WRITES SAMPLES TLAST N RESULTS RTLAST SEED IDLE BP STATUS BUSY SAMPLES_ADDR ANOM_ADDR [TRACE FROM]\n");
        return 2;
    }
    const std::vector<uint8_t> writes = slurp(argv[1]);
    const std::vector<uint8_t> samples = slurp(argv[2]);
    const std::vector<uint8_t> tlast = slurp(argv[3]);
    const size_t n = std::strtoull(argv[4], nullptr, 0);
    rng_state = std::strtoull(argv[7], nullptr, 0) * 0x9E3779B97F4A7C15ULL + 1;
    const uint32_t idle = std::strtoul(argv[8], nullptr, 0), bp = std::strtoul(argv[9], nullptr, 0);
    const uint32_t status_addr = std::strtoul(argv[10], nullptr, 0), busy_mask = std::strtoul(argv[11], nullptr, 0);
    const uint32_t samples_addr = std::strtoul(argv[12], nullptr, 0), anom_addr = std::strtoul(argv[13], nullptr, 0);
    static_assert(sizeof(Vtop::s_axis___05Ftdata) >= SAMPLE_BYTES && sizeof(Vtop::m_axis___05Ftdata) >= RESULT_BYTES,
                  "the beat sizes do not match the model's ports");
    if (samples.size() != n * SAMPLE_BYTES || tlast.size() != n || writes.size() % 8) {
        std::fprintf(stderr, "bulk: input sizes do not match N=%zu\n", n);
        return 2;
    }
    Sim s(argc == 16 ? argv[14] : nullptr);
    const size_t trace_from = argc == 16 ? std::strtoull(argv[15], nullptr, 0) : 0;
#ifdef MP_TRACE
    s.dumping = s.tfp && trace_from == 0;
#else
    (void)trace_from;
#endif
    Vtop* t = s.top.get();
    for (int i = 0; i < 4; ++i) s.tick();
    t->aresetn = 1;
    s.tick();

    uint32_t errors = 0;
    for (size_t i = 0; i < writes.size(); i += 8) errors += axil_write(s, le32(&writes[i]), le32(&writes[i + 4])) != 0;
    for (int guard = 0;; ++guard) {
        if (!(axil_read(s, status_addr, nullptr) & busy_mask)) break;
        if (guard > 100000) { std::fprintf(stderr, "bulk: STATUS stays busy after the commit\n"); return 3; }
    }

    std::vector<uint8_t> results(n * RESULT_BYTES), rtlast(n);
    size_t in = 0, out = 0;
    uint64_t last_progress = s.cycle;
    const uint64_t stream_start = s.cycle;
    uint32_t comb_outputs = 0;
    bool valid = false;
    while (out < n) {
        // input beat for this cycle (a beat offered stays offered until accepted: AXI rule)
        if (!valid && in < n && (idle == 0 || rnd() % 1000 >= idle)) {
            std::memcpy(&t->s_axis___05Ftdata, &samples[in * SAMPLE_BYTES], SAMPLE_BYTES);
            t->s_axis___05Ftlast = tlast[in];
            valid = true;
        }
        t->s_axis___05Ftvalid = valid;
        t->m_axis___05Ftready = bp == 0 || rnd() % 1000 >= bp;
#ifdef MP_TRACE
        if (s.tfp && !s.dumping && in >= trace_from) s.dumping = true;
#endif
        // two evals per clock while checking that the outputs do not depend on the inputs
        const bool two_evals = comb_outputs || s.cycle - stream_start < CHECK_CYCLES;
        if (two_evals) {
            const StreamOutputs before(t);
            s.settle();
            comb_outputs += !(StreamOutputs(t) == before);
        }
        const bool in_fire = valid && t->s_axis___05Ftready;
        if (t->m_axis___05Ftvalid && t->m_axis___05Ftready) {
            std::memcpy(&results[out * RESULT_BYTES], &t->m_axis___05Ftdata, RESULT_BYTES);
            rtlast[out] = t->m_axis___05Ftlast;
            ++out;
            last_progress = s.cycle;
        }
        if (two_evals) s.rise(); else s.edge();
        if (in_fire) { ++in; valid = false; last_progress = s.cycle; }
        if (s.cycle - last_progress > 1000000) {
            std::fprintf(stderr, "bulk: no progress for 1M cycles (%zu in, %zu out of %zu)\n", in, out, n);
            spit(argv[5], results.data(), out * RESULT_BYTES);
            spit(argv[6], rtlast.data(), out);
            return 3;
        }
    }
    t->s_axis___05Ftvalid = 0;
    t->m_axis___05Ftready = 1;
    for (int i = 0; i < 64; ++i) s.tick();
    uint32_t r1 = 0, r2 = 0;
    const uint32_t nsamp = axil_read(s, samples_addr, &r1), nanom = axil_read(s, anom_addr, &r2);
    spit(argv[5], results.data(), n * RESULT_BYTES);
    spit(argv[6], rtlast.data(), n);
    std::printf("cycles %llu write_errors %u samples %u anomalies %u comb_outputs %u\n", (unsigned long long)s.cycle,
                errors + (r1 != 0) + (r2 != 0), nsamp, nanom, comb_outputs);
    return 0;
}
