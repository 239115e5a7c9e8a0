// Verilator bulk harness of the AXI tops (mailpulse_axi, mailpulse_axi_lut): loads a
// configuration over AXI4-Lite, optionally presets the SAMPLES/ANOMALIES counters, then streams
// samples at one per clock (with seeded random idle and back-pressure) and records every result
// beat.  Built by sim/verilated.py (verilator --cc --exe --build); the comparison with the
// reference model happens in Python.  No register offset or beat width is spelled here: they come
// from the generated mp_harness.h (hdl/regmap.py, hdl/beats.py).
//
// usage: bulk script OPS RESULTS SEED [TRACE.vcd]   (see run_script and sim/harness/bus.cpp)
// usage: bulk WRITES SAMPLES TLAST N RESULTS RTLAST SEED IDLE_PERMILLE BP_PERMILLE PRESET_SAMPLES
//             PRESET_ANOMALIES [TRACE.vcd TRACE_FROM]
//   WRITES   (addr u32, value u32) little-endian pairs, written in order (the last is CTRL.COMMIT)
//   SAMPLES  N x MP_SAMPLE_BYTES s_axis beats;  TLAST N bytes (0/1)
//   RESULTS  N x MP_RESULT_BYTES m_axis beats;  RTLAST N bytes
//   PRESET_* values written into the core's counter registers after the commit, before the
//            stream (the test of the 32-bit wrap; needs MP_SAMPLES_REG, see sim/verilated.py)
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
#include "common.h"
#include "mp_harness.h"
#include "verilated.h"
#ifdef MP_TRACE
#include "verilated_vcd_c.h"
#endif

namespace {

constexpr uint64_t CHECK_CYCLES = 4096;
// The model's stream ports hold exactly the beats of hdl/beats.py (a port rounds up to whole
// 8/16/32/64-bit words): a wider or narrower port than MP_*_BYTES is a stale header or top.
static_assert(sizeof(Vtop::s_axis___05Ftdata) >= MP_SAMPLE_BYTES && sizeof(Vtop::s_axis___05Ftdata) - MP_SAMPLE_BYTES < 4,
              "s_axis.tdata is not the MP_SAMPLE_BYTES sample beat");
static_assert(sizeof(Vtop::m_axis___05Ftdata) >= MP_RESULT_BYTES && sizeof(Vtop::m_axis___05Ftdata) - MP_RESULT_BYTES < 4,
              "m_axis.tdata is not the MP_RESULT_BYTES result beat");

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
    uint8_t tdata[MP_RESULT_BYTES];
    uint8_t tready, tvalid, tlast;
    explicit StreamOutputs(const Vtop* t)
        : tready(t->s_axis___05Ftready), tvalid(t->m_axis___05Ftvalid), tlast(t->m_axis___05Ftlast) {
        mp::get_port(t->m_axis___05Ftdata, tdata, MP_RESULT_BYTES);
    }
    bool operator==(const StreamOutputs& o) const {
        return tready == o.tready && tvalid == o.tvalid && tlast == o.tlast && std::memcmp(tdata, o.tdata, sizeof tdata) == 0;
    }
};

using mp::le32;
using mp::rnd;
using mp::slurp;
using mp::spit;

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

void preset_counters(Vtop* t, uint32_t samples, uint32_t anomalies) {
#ifdef MP_SAMPLES_REG
    t->rootp->MP_SAMPLES_REG = samples;
    t->rootp->MP_ANOMALIES_REG = anomalies;
#else
    (void)t;
    if (samples || anomalies) {
        std::fprintf(stderr, "bulk: this top has no counter registers to preset\n");
        std::exit(2);
    }
#endif
}

// Script mode (the register-level scenarios of sim/scenarios.py, as bus.cpp runs them): the same
// (op, a, b) triples and (value, flag) records; the AXI top has no irq pin, so "wait for irq"
// polls STATUS.RESULT_VALID (clocks waited, timed out).  m_axis.tready stays high, no stream.
int run_script(int argc, char** argv) {
    if (argc != 5 && argc != 6) {
        std::fprintf(stderr, "usage: bulk script OPS RESULTS SEED [TRACE]\n");
        return 2;
    }
    const std::vector<uint8_t> ops = slurp(argv[2]);
    mp::seed(std::strtoull(argv[4], nullptr, 0));
    if (ops.size() % 12) { std::fprintf(stderr, "bulk: the script is not whole (op, a, b) triples\n"); return 2; }
    Sim s(argc == 6 ? argv[5] : nullptr);
#ifdef MP_TRACE
    s.dumping = static_cast<bool>(s.tfp);
#endif
    Vtop* t = s.top.get();
    for (int i = 0; i < 4; ++i) s.tick();
    t->aresetn = 1;
    t->m_axis___05Ftready = 1;
    s.tick();
    std::vector<uint32_t> out;
    for (size_t i = 0; i < ops.size(); i += 12) {
        const uint32_t op = le32(&ops[i]), a = le32(&ops[i + 4]), b = le32(&ops[i + 8]);
        uint32_t v = 0, flag = 0;
        switch (op) {
            case 0: flag = axil_write(s, a, b); break;
            case 1: v = axil_read(s, a, &flag); break;
            case 2: for (uint32_t k = 0; k < a; ++k) s.tick(); break;
            case 3: {
                const uint64_t start = s.cycle;
                flag = 1;
                while (s.cycle - start < a) {
                    if (axil_read(s, MP_ADDR_STATUS, nullptr) & MP_STATUS_RESULT_VALID) { flag = 0; break; }
                }
                v = (uint32_t)(s.cycle - start);
                break;
            }
            case 4: preset_counters(t, a, b); break;
            case 5:
                flag = 1;
                for (uint32_t k = 0; k < a; ++k) {
                    v = axil_read(s, MP_ADDR_STATUS, nullptr);
                    if (!(v & MP_STATUS_BUSY_MASK)) { flag = 0; break; }
                }
                break;
            default: std::fprintf(stderr, "bulk: unknown script op %u\n", op); return 2;
        }
        out.push_back(v);
        out.push_back(flag);
    }
    spit(argv[3], out.data(), out.size() * 4);
    std::printf("cycles %llu comb_outputs 0\n", (unsigned long long)s.cycle);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && !std::strcmp(argv[1], "script")) return run_script(argc, argv);
    if (argc != 12 && argc != 14) {
        std::fprintf(stderr, "usage: bulk WRITES SAMPLES TLAST N RESULTS RTLAST SEED IDLE BP PRESET_SAMPLES "
                             "PRESET_ANOMALIES [TRACE FROM]\n");
        return 2;
    }
    const std::vector<uint8_t> writes = slurp(argv[1]);
    const std::vector<uint8_t> samples = slurp(argv[2]);
    const std::vector<uint8_t> tlast = slurp(argv[3]);
    const size_t n = std::strtoull(argv[4], nullptr, 0);
    mp::seed(std::strtoull(argv[7], nullptr, 0));
    const uint32_t idle = std::strtoul(argv[8], nullptr, 0), bp = std::strtoul(argv[9], nullptr, 0);
    const uint32_t preset_samples = std::strtoul(argv[10], nullptr, 0), preset_anom = std::strtoul(argv[11], nullptr, 0);
    if (samples.size() != n * MP_SAMPLE_BYTES || tlast.size() != n || writes.size() % 8) {
        std::fprintf(stderr, "bulk: input sizes do not match N=%zu\n", n);
        return 2;
    }
    Sim s(argc == 14 ? argv[12] : nullptr);
    const size_t trace_from = argc == 14 ? std::strtoull(argv[13], nullptr, 0) : 0;
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
        if (!(axil_read(s, MP_ADDR_STATUS, nullptr) & MP_STATUS_BUSY_MASK)) break;
        if (guard > 100000) { std::fprintf(stderr, "bulk: STATUS stays busy after the commit\n"); return 3; }
    }
    preset_counters(t, preset_samples, preset_anom);

    std::vector<uint8_t> results(n * MP_RESULT_BYTES), rtlast(n);
    size_t in = 0, out = 0;
    uint64_t last_progress = s.cycle;
    const uint64_t stream_start = s.cycle;
    uint32_t comb_outputs = 0;
    bool valid = false;
    while (out < n) {
        // input beat for this cycle (a beat offered stays offered until accepted: AXI rule)
        if (!valid && in < n && (idle == 0 || rnd() % 1000 >= idle)) {
            mp::put_port(t->s_axis___05Ftdata, &samples[in * MP_SAMPLE_BYTES], MP_SAMPLE_BYTES);
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
            mp::get_port(t->m_axis___05Ftdata, &results[out * MP_RESULT_BYTES], MP_RESULT_BYTES);
            rtlast[out] = t->m_axis___05Ftlast;
            ++out;
            last_progress = s.cycle;
        }
        if (two_evals) s.rise(); else s.edge();
        if (in_fire) { ++in; valid = false; last_progress = s.cycle; }
        if (s.cycle - last_progress > 1000000) {
            std::fprintf(stderr, "bulk: no progress for 1M cycles (%zu in, %zu out of %zu)\n", in, out, n);
            spit(argv[5], results.data(), out * MP_RESULT_BYTES);
            spit(argv[6], rtlast.data(), out);
            return 3;
        }
    }
    t->s_axis___05Ftvalid = 0;
    t->m_axis___05Ftready = 1;
    for (int i = 0; i < 64; ++i) s.tick();
    uint32_t r1 = 0, r2 = 0;
    const uint32_t nsamp = axil_read(s, MP_ADDR_SAMPLES, &r1), nanom = axil_read(s, MP_ADDR_ANOMALIES, &r2);
    spit(argv[5], results.data(), n * MP_RESULT_BYTES);
    spit(argv[6], rtlast.data(), n);
    std::printf("cycles %llu write_errors %u samples %u anomalies %u comb_outputs %u\n", (unsigned long long)s.cycle,
                errors + (r1 != 0) + (r2 != 0), nsamp, nanom, comb_outputs);
    return 0;
}
