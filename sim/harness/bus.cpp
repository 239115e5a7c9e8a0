// Verilator harness of the register-bus tops (mailpulse_bus: the SPI top's register front end and
// folded core, mailpulse_bus_stream: the ECP5 SPI top's core), driven through the front end's
// register port (hdl/bus.py BusSignature) instead of SPI frames.  Built by sim/verilated.py; the
// comparison with the reference model happens in Python.  Addresses and masks come from the
// generated mp_harness.h (hdl/regmap.py).
//
// usage: bus bulk WRITES SAMPLES N RESULTS SEED IDLE_PERMILLE PRESET_SAMPLES PRESET_ANOMALIES [TRACE.vcd FROM]
//   WRITES   (addr u32, value u32) pairs, written in order (the last is CTRL.COMMIT), then STATUS
//            is polled until the commit is done; the counters are preset (test of the wrap)
//   SAMPLES  N x (MP_D + 1) u32: the FEATURE register values, then the TAG value, of each sample
//            (with routes, MP_ROUTES > 0, one more: the ROUTE value, written after TAG);
//            each is written (FEATURE[0..D-1], TAG, [ROUTE,] PUSH), `irq` (STATUS.RESULT_VALID) awaited,
//            then RESULT_SCORE, RESULT_TAG, RESULT_INFO read: RESULTS N x 3 u32.  With
//            IDLE_PERMILLE, idle clocks are put before accesses and before the result reads.
//   stdout: "cycles C write_errors E samples S anomalies A comb_outputs K"
// usage: bus script OPS RESULTS SEED [TRACE.vcd]
//   OPS      (op, a, b) u32 triples: 0 write a<-b, 1 read a, 2 idle a clocks, 3 wait for irq (at
//            most a clocks), 4 preset the counters to (a, b), 5 poll STATUS until not busy (at
//            most a reads); RESULTS one (value, flag) u32 pair per op: write (0, resp_err), read
//            (data, resp_err), wait for irq (clocks waited, timed out), poll (last STATUS, timed out)
//   stdout: "cycles C comb_outputs K"
// exit status: 0 ok, 2 usage/file error, 3 an access got no response in 100k clocks
//
// One eval per clock, as in bulk.cpp: the outputs the handshake needs before an edge (req_ready,
// resp_*, irq) are read from the previous eval, exact when they depend on registers only; the
// first CHECK_CYCLES clocks evaluate with the clock low too and compare, and any difference keeps
// two evals per clock for the rest of the run (comb_outputs > 0).  Verilator escapes the "__" of
// Amaranth's port names as "___05F": bus__req_valid is top->bus___05Freq_valid.
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
constexpr uint64_t ACCESS_LIMIT = 100000;

template <typename Root>
auto clear_clock_trigger(Root* r, int) -> decltype(r->__Vtrigprevexpr___TOP__clk__0 = 0, bool()) {
    r->__Vtrigprevexpr___TOP__clk__0 = 0;
    return true;
}
template <typename Root>
bool clear_clock_trigger(Root*, long) { return false; }

struct Outputs {
    uint8_t req_ready, resp_valid, resp_err, irq;
    uint32_t resp_data;
    explicit Outputs(const Vtop* t)
        : req_ready(t->bus___05Freq_ready), resp_valid(t->bus___05Fresp_valid), resp_err(t->bus___05Fresp_err),
          irq(t->irq), resp_data(t->bus___05Fresp_data) {}
    bool operator==(const Outputs& o) const {
        return req_ready == o.req_ready && resp_valid == o.resp_valid && resp_err == o.resp_err && irq == o.irq &&
               resp_data == o.resp_data;
    }
};

struct Sim {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vtop> top;
#ifdef MP_TRACE
    std::unique_ptr<VerilatedVcdC> tfp;
#endif
    uint64_t cycle = 0;
    uint32_t comb_outputs = 0;
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
        top->clk = 0;
        top->rst = 1;
        top->bus___05Freq_valid = 0;
        top->bus___05Freq_write = 0;
        top->bus___05Freq_addr = 0;
        top->bus___05Freq_data = 0;
        top->bus___05Ferr_set = 0;
        top->eval();
    }
    ~Sim() {
        top->final();
#ifdef MP_TRACE
        if (tfp) tfp->close();
#endif
    }
    bool two_evals() const { return dumping || comb_outputs || cycle < CHECK_CYCLES; }
    void settle() {
        top->clk = 0;
        top->eval();
#ifdef MP_TRACE
        if (dumping) tfp->dump(ctx->time());
#endif
    }
    // The outputs in this clock, before its edge, with the inputs as they are now.
    Outputs now() {
        if (!two_evals()) return Outputs(top.get());
        const Outputs before(top.get());
        settle();
        const Outputs after(top.get());
        comb_outputs += !(after == before) && !dumping;
        return after;
    }
    void edge() {
        if (!two_evals() && clear_clock_trigger(top->rootp, 0)) {
            top->clk = 1;
            top->eval();
        } else {
            settle();
            ctx->timeInc(5);
            top->clk = 1;
            top->eval();
#ifdef MP_TRACE
            if (dumping) tfp->dump(ctx->time());
#endif
            ctx->timeInc(5);
            return void(++cycle);
        }
        ctx->timeInc(10);
        ++cycle;
    }
    void idle(uint64_t n) {
        for (uint64_t i = 0; i < n; ++i) edge();
    }
};

// One register access: request, acceptance, response; returns in the clock of the response (the
// next access's request is accepted at that clock's edge, so back-to-back accesses take 4 clocks).
uint32_t access(Sim& s, bool write, uint32_t addr, uint32_t data, uint32_t* err) {
    Vtop* t = s.top.get();
    t->bus___05Freq_valid = 1;
    t->bus___05Freq_write = write;
    t->bus___05Freq_addr = addr;
    t->bus___05Freq_data = data;
    const uint64_t start = s.cycle;
    while (!s.now().req_ready) {
        s.edge();
        if (s.cycle - start > ACCESS_LIMIT) goto hang;
    }
    s.edge();
    t->bus___05Freq_valid = 0;
    for (;;) {
        const Outputs o = s.now();
        if (o.resp_valid) {
            if (err) *err = o.resp_err;
            return o.resp_data;
        }
        s.edge();
        if (s.cycle - start > ACCESS_LIMIT) goto hang;
    }
hang:
    std::fprintf(stderr, "bus: %s of 0x%04x got no response in %llu clocks\n", write ? "write" : "read", addr,
                 (unsigned long long)ACCESS_LIMIT);
    std::exit(3);
}

uint32_t wr(Sim& s, uint32_t addr, uint32_t data) {
    uint32_t err = 0;
    access(s, true, addr, data, &err);
    return err;
}
uint32_t rd(Sim& s, uint32_t addr, uint32_t* err = nullptr) { return access(s, false, addr, 0, err); }

// Polls STATUS until no commit, push or pipeline activity; returns the last value (flag: timed out).
uint32_t wait_quiet(Sim& s, uint32_t limit, bool* timed_out) {
    uint32_t st = 0;
    for (uint32_t i = 0; i < limit; ++i) {
        st = rd(s, MP_ADDR_STATUS);
        if (!(st & MP_STATUS_BUSY_MASK)) { *timed_out = false; return st; }
    }
    *timed_out = true;
    return st;
}

uint64_t wait_irq(Sim& s, uint64_t limit, bool* timed_out) {
    uint64_t n = 0;
    while (!s.now().irq && n < limit) { s.edge(); ++n; }
    *timed_out = !s.now().irq;
    return n;
}

void preset_counters(Sim& s, uint32_t samples, uint32_t anomalies) {
#ifdef MP_SAMPLES_REG
    s.top->rootp->MP_SAMPLES_REG = samples;
    s.top->rootp->MP_ANOMALIES_REG = anomalies;
#else
    (void)s;
    if (samples || anomalies) { std::fprintf(stderr, "bus: this top has no counter registers to preset\n"); std::exit(2); }
#endif
}

void reset(Sim& s) {
    s.idle(4);
    s.top->rst = 0;
    s.edge();
}

int run_bulk(int argc, char** argv) {
    if (argc != 10 && argc != 12) {
        std::fprintf(stderr, "usage: bus bulk WRITES SAMPLES N RESULTS SEED IDLE PRESET_SAMPLES PRESET_ANOMALIES "
                             "[TRACE FROM]\n");
        return 2;
    }
    const std::vector<uint8_t> writes = mp::slurp(argv[2]);
    const std::vector<uint8_t> samples = mp::slurp(argv[3]);
    const size_t n = std::strtoull(argv[4], nullptr, 0);
    mp::seed(std::strtoull(argv[6], nullptr, 0));
    const uint32_t idle = std::strtoul(argv[7], nullptr, 0);
    const uint32_t preset_s = std::strtoul(argv[8], nullptr, 0), preset_a = std::strtoul(argv[9], nullptr, 0);
    constexpr size_t words = MP_D + 1 + (MP_ROUTES ? 1 : 0);
    if (samples.size() != n * words * 4 || writes.size() % 8) {
        std::fprintf(stderr, "bus: input sizes do not match N=%zu\n", n);
        return 2;
    }
    Sim s(argc == 12 ? argv[10] : nullptr);
    const size_t trace_from = argc == 12 ? std::strtoull(argv[11], nullptr, 0) : 0;
#ifdef MP_TRACE
    s.dumping = s.tfp && trace_from == 0;
#else
    (void)trace_from;
#endif
    reset(s);
    uint32_t errors = 0;
    for (size_t i = 0; i < writes.size(); i += 8) errors += wr(s, mp::le32(&writes[i]), mp::le32(&writes[i + 4]));
    bool timed_out = false;
    wait_quiet(s, 100000, &timed_out);
    if (timed_out) { std::fprintf(stderr, "bus: STATUS stays busy after the commit\n"); return 3; }
    preset_counters(s, preset_s, preset_a);

    std::vector<uint32_t> results(n * 3);
    const uint32_t* in = reinterpret_cast<const uint32_t*>(samples.data());
    for (size_t i = 0; i < n; ++i, in += words) {
#ifdef MP_TRACE
        if (s.tfp && !s.dumping && i >= trace_from) s.dumping = true;
#endif
        for (uint32_t d = 0; d < MP_D; ++d) {
            while (mp::chance(idle)) s.edge();
            errors += wr(s, MP_ADDR_FEATURE[d], in[d]);
        }
        errors += wr(s, MP_ADDR_TAG, in[MP_D]);
#if MP_ROUTES
        errors += wr(s, MP_ADDR_ROUTE, in[MP_D + 1]);
#endif
        errors += wr(s, MP_ADDR_PUSH, 1);
        wait_irq(s, 100000, &timed_out);
        if (timed_out) {
            std::fprintf(stderr, "bus: no result for sample %zu\n", i);
            mp::spit(argv[5], results.data(), i * 12);
            return 3;
        }
        while (mp::chance(idle)) s.edge();
        uint32_t e1 = 0, e2 = 0, e3 = 0;
        results[i * 3] = rd(s, MP_ADDR_RESULT_SCORE, &e1);
        results[i * 3 + 1] = rd(s, MP_ADDR_RESULT_TAG, &e2);
        results[i * 3 + 2] = rd(s, MP_ADDR_RESULT_INFO, &e3);
        errors += e1 + e2 + e3;
    }
    uint32_t r1 = 0, r2 = 0;
    const uint32_t nsamp = rd(s, MP_ADDR_SAMPLES, &r1), nanom = rd(s, MP_ADDR_ANOMALIES, &r2);
    mp::spit(argv[5], results.data(), n * 12);
    std::printf("cycles %llu write_errors %u samples %u anomalies %u comb_outputs %u\n", (unsigned long long)s.cycle,
                errors + r1 + r2, nsamp, nanom, s.comb_outputs);
    return 0;
}

int run_script(int argc, char** argv) {
    if (argc != 5 && argc != 6) {
        std::fprintf(stderr, "usage: bus script OPS RESULTS SEED [TRACE]\n");
        return 2;
    }
    const std::vector<uint8_t> ops = mp::slurp(argv[2]);
    mp::seed(std::strtoull(argv[4], nullptr, 0));
    if (ops.size() % 12) { std::fprintf(stderr, "bus: the script is not whole (op, a, b) triples\n"); return 2; }
    Sim s(argc == 6 ? argv[5] : nullptr);
#ifdef MP_TRACE
    s.dumping = static_cast<bool>(s.tfp);
#endif
    reset(s);
    std::vector<uint32_t> out;
    for (size_t i = 0; i < ops.size(); i += 12) {
        const uint32_t op = mp::le32(&ops[i]), a = mp::le32(&ops[i + 4]), b = mp::le32(&ops[i + 8]);
        uint32_t v = 0, flag = 0;
        bool timed_out = false;
        switch (op) {
            case 0: flag = wr(s, a, b); break;
            case 1: v = rd(s, a, &flag); break;
            case 2: s.idle(a); break;
            case 3: v = (uint32_t)wait_irq(s, a, &timed_out); flag = timed_out; break;
            case 4: preset_counters(s, a, b); break;
            case 5: v = wait_quiet(s, a, &timed_out); flag = timed_out; break;
            default: std::fprintf(stderr, "bus: unknown script op %u\n", op); return 2;
        }
        out.push_back(v);
        out.push_back(flag);
    }
    mp::spit(argv[3], out.data(), out.size() * 4);
    std::printf("cycles %llu comb_outputs %u\n", (unsigned long long)s.cycle, s.comb_outputs);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && !std::strcmp(argv[1], "bulk")) return run_bulk(argc, argv);
    if (argc >= 2 && !std::strcmp(argv[1], "script")) return run_script(argc, argv);
    std::fprintf(stderr, "usage: bus bulk ... | bus script ...\n");
    return 2;
}
