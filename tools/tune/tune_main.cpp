// normgen-tune: per-shape schedule search with a resumable SQLite trial log.
//
//   normgen-tune run   --db FILE (--workload D | --suite FILE)... [--budget N] [--threads T]
//                      [--seed S] [--rounds R] [--repeats K] [--resume] [--autoschedulers A,B,...]
//                      [--autoscheduler-timeout SECONDS] [--try KNOBS]...
//   normgen-tune time  <workload> [--threads T] [--rounds R] [--evict-mib M] [knobs...]
//                      time knob strings side by side (M: caches evicted before each run)
//   normgen-tune gpucheck (--workload D | --suite FILE)... [--target host-opencl] [--tolerance E]
//                      [--schedule KNOBS]  the GPU schedules on another GPU API vs the CPU ones
//   normgen-tune best  --db FILE                              the winners, one line each
//   normgen-tune report --db FILE                             default vs tuned vs autoschedulers
//   normgen-tune merge --db OUT IN...                         add IN's trials to OUT
//   normgen-tune export --db FILE --out LIST [--threads T] [--min-gain G]
//                      the winners as a tuned kernel table (schedules/tuned/)
//
// A workload is a benchmark descriptor, <op>:<dir>:<dtype>:<shape>[:<layout>]. The search
// JIT-compiles the generator with knob strings of the family's parameter struct (the
// same algorithm and schedule code as the AOT build): the `--try` candidates, then
// Latin-hypercube samples, then one-knob steps from the best so far. Each candidate runs against the default
// schedule (outputs must match it), interleaved with it (warm-up, rounds x repeats,
// medians), and is recorded as one committed row: an interrupted run loses no finished
// trial, and `--resume` replays the same (seeded) sequence, measuring only what is new.
#include "jit_run.h"
#include "trial_db.h"
#include "workload.h"

#include <limits>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <map>
#include <optional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace normgen::tune;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string machine_description() {
    std::ifstream in("/proc/cpuinfo");
    std::string line, model = "unknown cpu";
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            model = line.substr(line.find(':') + 2);
            break;
        }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    return model + " (" + std::to_string(std::thread::hardware_concurrency()) + " threads) on " + host;
}

std::string normgen_commit() {
    std::string cmd = std::string("git -C '") + NORMGEN_SOURCE_DIR + "' rev-parse --short HEAD 2>/dev/null";
    FILE *p = popen(cmd.c_str(), "r");
    if (!p) return "unknown";
    char buf[64] = "";
    if (!std::fgets(buf, sizeof buf, p)) buf[0] = 0;
    pclose(p);
    std::string s = buf;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s.empty() ? "unknown" : s;
}

std::string halide_version() {
    return std::to_string(HALIDE_VERSION_MAJOR) + "." + std::to_string(HALIDE_VERSION_MINOR) + "." +
           std::to_string(HALIDE_VERSION_PATCH);
}

// Largest output difference vs the default schedule still counted as a match: the
// reassociation of float32 reductions, plus one rounding of the storage type.
double tolerance(const std::string &dtype) {
    if (dtype == "bf16") return 1.6e-2;
    if (dtype == "f16") return 2e-3;
    return 2e-4;
}

struct Options {
    std::string db;
    std::vector<std::string> workloads;
    int budget = 24, threads = 1, rounds = 3, repeats = 5;
    unsigned seed = 1;
    bool resume = false;
    std::vector<std::string> autoschedulers;  // baselines timed after the search
    std::vector<std::string> tries;           // knob strings evaluated first (--try), within the budget
    double autoscheduler_timeout = 600;       // seconds per autoscheduler trial (own process)
};

// A trial's record before its outcome: what ran, where, with which versions.
Trial new_trial(const Options &o, const std::string &workload, const std::string &target, const std::string &knobs,
                const std::string &machine, const std::string &commit) {
    Trial t{workload, target, knobs, o.threads};
    t.machine = machine;
    t.halide_version = halide_version();
    t.normgen_commit = commit;
    return t;
}

// One trial measured here: compile `knobs`, check its outputs against the default
// schedule's, time both interleaved. Failures become the trial's status, never fatal.
Trial measure_trial(const Options &o, const Workload &w, JitWorkload &jw, Instance &def, const std::string &knobs,
                    const std::string &target, const std::string &machine, const std::string &commit) {
    Trial t = new_trial(o, w.descriptor(), target, knobs, machine, commit);
    try {
        Instance inst = jw.instantiate(knobs);
        t.compile_s = inst.compile_seconds;
        try {
            inst.run();
            t.max_rel_diff = JitWorkload::max_rel_diff(inst, def);
            if (!(t.max_rel_diff <= tolerance(w.dtype))) {
                t.status = "mismatch";
                t.error = "outputs differ from the default schedule's by " + std::to_string(t.max_rel_diff);
            } else {
                std::vector<double> ms = time_interleaved({&inst, &def}, o.rounds, o.repeats);
                t.status = "ok";
                t.median_ms = ms[0] * 1e3;
                t.default_ms = ms[1] * 1e3;
            }
        } catch (const Halide::Error &e) {
            t.status = "run_error";
            t.error = e.what();
        } catch (const std::exception &e) {
            t.status = "run_error";
            t.error = e.what();
        }
    } catch (const Halide::Error &e) {  // Halide's errors are not std::exceptions
        t.status = "compile_error";
        t.error = e.what();
    } catch (const std::exception &e) {  // includes std::bad_alloc under the trial process's memory limit
        t.status = "compile_error";
        t.error = e.what();
    }
    return t;
}

// An autoscheduler trial in its own process (`normgen-tune trial`), which logs it: an
// autoscheduler search can run for many minutes and many GiB on some pipelines (Adams2019
// on GroupNorm backward: > 16 GiB, > 5 min), and cannot be interrupted in-process. The
// child gets half the machine's memory and o.autoscheduler_timeout seconds; a child
// that is killed or dies is logged here as a compile_error naming the reason.
Trial isolated_trial(const Options &o, TrialDb &db, const std::string &wl, const std::string &knobs,
                     const std::string &target, const std::string &machine, const std::string &commit) {
    std::vector<std::string> args = {"/proc/self/exe", "trial", "--db", o.db, "--workload", wl,
                                     "--threads", std::to_string(o.threads), "--rounds", std::to_string(o.rounds),
                                     "--repeats", std::to_string(o.repeats), "--schedule", knobs};
    std::vector<char *> argv;
    for (std::string &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const rlim_t mem = static_cast<rlim_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<rlim_t>(sysconf(_SC_PAGE_SIZE)) / 2;
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {  // only async-signal-safe calls until exec
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the tuner
        struct rlimit rl = {mem, mem};
        setrlimit(RLIMIT_AS, &rl);
        execv(argv[0], argv.data());
        _exit(127);
    }
    const double deadline = now() + o.autoscheduler_timeout;
    int status = 0;
    std::string reason;
    for (;;) {
        const pid_t r = waitpid(pid, &status, WNOHANG);
        if (r < 0 && errno != EINTR) {
            reason = std::string("waitpid: ") + std::strerror(errno);
            break;
        }
        if (r == pid) {
            if (WIFSIGNALED(status))
                reason = "the trial process died of signal " + std::to_string(WTERMSIG(status)) +
                         " (its memory limit is " + std::to_string(mem >> 30) + " GiB: out of memory aborts)";
            else if (WEXITSTATUS(status) != 0) reason = "the trial process exited with " + std::to_string(WEXITSTATUS(status));
            break;
        }
        if (now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            char b[128];
            std::snprintf(b, sizeof b, "did not finish within %g s (--autoscheduler-timeout); killed", o.autoscheduler_timeout);
            reason = b;
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (std::optional<Trial> t = db.find(wl, target, o.threads, knobs, machine)) return *t;
    Trial t = new_trial(o, wl, target, knobs, machine, commit);
    t.status = "compile_error";
    t.error = reason.empty() ? "the trial process logged nothing" : reason;
    db.add(t);
    return t;
}

class Progress {
public:
    explicit Progress(int total) : total_(total), tty_(isatty(STDERR_FILENO)), t0_(now()) {}
    void update(int done, const std::string &what, const std::string &best) {
        const double el = now() - t0_, eta = done ? el / done * (total_ - done) : 0;
        char line[512];
        std::snprintf(line, sizeof line, "[%3d/%d] %s | best %s | ETA %.0fs", done, total_, what.c_str(),
                      best.c_str(), eta);
        if (tty_) std::fprintf(stderr, "\r\033[K%s", line);
        else std::fprintf(stderr, "%s\n", line);
        std::fflush(stderr);
    }
    void finish() {
        if (tty_) std::fprintf(stderr, "\n");
    }

private:
    int total_;
    bool tty_;
    double t0_;
};

// The knob indices of the random start: Latin-hypercube samples (each knob's values
// split into strata, one stratum per sample, shuffled per knob) in blocks of
// `kLhsBlock`, block b drawn from its own generator seeded by (seed, b), less the
// samples `rejected` turns down (they would never be compiled). The first n samples
// are then the same for every n, so a --resume with a larger budget replays the first
// run's random start from the log instead of drawing a different one. (Filtering after
// the cut instead made a budget-6 run on LayerNorm backward keep 1 of its 3 samples,
// and the rest of its budget went to timing-dependent one-knob steps.)
constexpr int kLhsBlock = 8, kLhsMaxBlocks = 64;
std::vector<std::vector<int>> latin_hypercube(const std::vector<KnobSpec> &space, int n, unsigned seed,
                                              const Halide::Target &target) {
    std::vector<std::vector<int>> pts;
    for (int b = 0; static_cast<int>(pts.size()) < n && b < kLhsMaxBlocks; b++) {
        std::seed_seq sq{seed, static_cast<unsigned>(b)};
        std::mt19937 rng(sq);
        std::vector<std::vector<int>> block(kLhsBlock, std::vector<int>(space.size()));
        for (size_t d = 0; d < space.size(); d++) {
            std::vector<int> perm(kLhsBlock);
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), rng);
            std::uniform_real_distribution<double> u(0, 1);
            const int k = static_cast<int>(space[d].values.size());
            for (int i = 0; i < kLhsBlock; i++)
                block[i][d] = std::min(k - 1, static_cast<int>((perm[i] + u(rng)) * k / kLhsBlock));
        }
        for (const std::vector<int> &p : block)
            if (rejected(space, p, target).empty()) pts.push_back(p);
    }
    if (static_cast<int>(pts.size()) > n) pts.resize(n);
    return pts;
}

int int_option(const std::string &option, const std::string &value, int min);

// A --try knob string as the search writes one (knobs in the space's order, defaults
// left out; a knob the workload's kernel does not read is an error), and its point in
// the space for the one-knob steps: per knob the index of the searched value nearest
// the given one, -1 where the knob is at its default.
struct TriedPoint {
    std::string knobs;
    std::vector<int> index;
};
TriedPoint tried_point(const std::vector<KnobSpec> &space, const std::string &text) {
    std::map<std::string, int> given;
    std::stringstream in(text);
    std::string kv;
    while (std::getline(in, kv, ',')) {
        if (kv.empty()) continue;
        const size_t colon = kv.find(':');
        const std::string name = kv.substr(0, colon);
        if (colon == std::string::npos ||
            std::none_of(space.begin(), space.end(), [&](const KnobSpec &k) { return k.name == name; }))
            throw std::invalid_argument("--try '" + text + "': '" + kv + "' is not a knob:value this workload's kernel reads");
        given[name] = int_option("--try " + name, kv.substr(colon + 1), std::numeric_limits<int>::min());
    }
    TriedPoint p{"", std::vector<int>(space.size(), -1)};
    for (size_t d = 0; d < space.size(); d++) {
        auto it = given.find(space[d].name);
        if (it == given.end() || it->second == space[d].default_value) continue;
        const int v = it->second;
        const std::vector<int> &vals = space[d].values;
        p.knobs += (p.knobs.empty() ? "" : ",") + space[d].name + ":" + std::to_string(v);
        p.index[d] = static_cast<int>(
            std::min_element(vals.begin(), vals.end(), [&](int a, int b) { return std::abs(a - v) < std::abs(b - v); }) -
            vals.begin());
    }
    return p;
}

int tune_workload(const Options &o, TrialDb &db, const std::string &descriptor, const Halide::Target &target,
                  const std::string &machine) {
    Workload w = Workload::parse(descriptor);
    const std::string wl = w.descriptor(), tgt = target.to_string(), commit = normgen_commit();
    std::vector<KnobSpec> space = w.knob_space(target);
    JitWorkload jw(w, target);
    Instance def = jw.instantiate("");
    def.run();
    const unsigned seed = o.seed ^ static_cast<unsigned>(std::hash<std::string>()(wl));
    std::mt19937 rng(seed);
    std::set<std::string> tried;
    std::string best_knobs = "";
    double best_ratio = 1.0;
    int reused = 0, measured = 0;
    auto evaluate = [&](const std::string &knobs) -> std::optional<Trial> {
        if (!tried.insert(knobs).second) return std::nullopt;
        if (std::optional<Trial> t = db.find(wl, tgt, o.threads, knobs, machine)) {
            reused++;
            return t;
        }
        measured++;
        if (knobs.rfind("autoscheduler:", 0) == 0) return isolated_trial(o, db, wl, knobs, tgt, machine, commit);
        Trial t = measure_trial(o, w, jw, def, knobs, tgt, machine, commit);
        db.add(t);
        return t;
    };
    auto consider = [&](const std::optional<Trial> &t) {
        // The default schedule is the reference (ratio 1 by definition; its timing
        // against itself only shows the noise), autoschedulers are baselines.
        if (t && t->status == "ok" && !t->schedule.empty() && t->schedule.rfind("autoscheduler:", 0) != 0 &&
            t->default_ms > 0 && t->median_ms / t->default_ms < best_ratio) {
            best_ratio = t->median_ms / t->default_ms;
            best_knobs = t->schedule;
        }
    };
    auto best_str = [&] {
        char b[256];
        std::snprintf(b, sizeof b, "%.3fx of default (%s)", best_ratio, best_knobs.empty() ? "defaults" : best_knobs.c_str());
        return std::string(b);
    };
    std::fprintf(stderr, "normgen-tune: %s on %s, %d thread(s), budget %d\n", wl.c_str(), tgt.c_str(), o.threads, o.budget);
    Progress progress(o.budget);
    consider(evaluate(""));  // the default schedule itself is a trial (ratio ~1)
    int done = 1, attempts = 0;
    std::map<std::string, std::vector<int>> index_of;  // knob string -> its point in the space
    index_of[""] = std::vector<int>(space.size(), -1);
    // One candidate of the budget: measured (or found in the log), then counted.
    auto step = [&](const std::string &knobs, const std::vector<int> &idx, const char *how) {
        index_of.emplace(knobs, idx);
        std::optional<Trial> t = evaluate(knobs);
        if (!t) return;
        consider(t);
        done++;
        progress.update(done, (knobs.empty() ? "defaults" : knobs) + how +
                                  (t->status == "ok" ? std::to_string(t->median_ms / t->default_ms).substr(0, 5) + "x"
                                                     : t->status),
                        best_str());
    };
    // Candidates the user names (--try: e.g. a hand-found schedule the random start
    // missed), as the search would write them, so the log and export treat them alike;
    // one-knob steps may then start from them (at the searched values nearest theirs).
    for (const std::string &k : o.tries) {
        if (done >= o.budget) break;
        const TriedPoint p = tried_point(space, k);
        step(p.knobs, p.index, " (--try) -> ");
    }
    const std::vector<std::vector<int>> lhs = latin_hypercube(space, std::max(1, o.budget / 2), seed, target);
    for (size_t i = 0; done < o.budget && attempts < 50 * o.budget; attempts++) {
        std::vector<int> idx;
        if (i < lhs.size()) {
            idx = lhs[i++];
        } else {  // a one-knob step from the best so far
            idx = index_of.at(best_knobs);
            std::uniform_int_distribution<size_t> pick(0, space.size() - 1);
            const size_t d = pick(rng);
            const int k = static_cast<int>(space[d].values.size());
            int cur = idx[d] < 0 ? -1 : idx[d];
            if (cur < 0) {  // from the default value: its nearest searched values
                std::uniform_int_distribution<int> any(0, k - 1);
                cur = any(rng);
            } else {
                cur = std::clamp(cur + (rng() % 2 ? 1 : -1), 0, k - 1);
            }
            idx[d] = cur;
        }
        if (!rejected(space, idx, target).empty()) continue;  // never compiled
        step(knob_string(space, idx), idx, " -> ");
    }
    progress.finish();
    // The winner of many noisy draws is biased towards luck: re-time it against the
    // default with three times the rounds; only confirmed winners are export candidates.
    if (!best_knobs.empty()) {
        std::optional<Trial> t = db.find(wl, tgt, o.threads, best_knobs, machine);
        if (t && !t->confirmed) {
            Instance inst = jw.instantiate(best_knobs);
            std::vector<double> ms = time_interleaved({&inst, &def}, 3 * o.rounds, o.repeats);
            db.confirm(*t, ms[0] * 1e3, ms[1] * 1e3);
            std::fprintf(stderr, "  confirmed: %.3fx of the default (search: %.3fx)\n", ms[0] / ms[1], best_ratio);
            best_ratio = ms[0] / ms[1];
        } else if (t) {
            best_ratio = t->median_ms / t->default_ms;
        }
        if (best_ratio > 1.0) {
            best_knobs = "";
            best_ratio = 1.0;
        }
    }
    // Halide's autoschedulers on the same workload, timed the same way (baselines).
    for (const std::string &as : o.autoschedulers) {
        std::optional<Trial> t = evaluate("autoscheduler:" + as);
        if (!t) continue;
        if (t->status == "ok")
            std::fprintf(stderr, "  %s: %.3fx of the default schedule\n", as.c_str(), t->median_ms / t->default_ms);
        else
            std::fprintf(stderr, "  %s: %s (%s)\n", as.c_str(), t->status.c_str(), t->error.substr(0, 200).c_str());
    }
    std::printf("%s\t%d threads\tbest %s\t(%d measured, %d from the log)\n", wl.c_str(), o.threads, best_str().c_str(),
                measured, reused);
    return 0;
}

// `value` parsed whole by `parse` (std::stoi, std::stod), or nothing.
template <typename T>
std::optional<T> parse_whole(const std::string &value, T (*parse)(const std::string &, size_t *)) {
    size_t used = 0;
    try {
        const T v = parse(value, &used);
        if (!value.empty() && used == value.size()) return v;
    } catch (const std::exception &) {
    }
    return std::nullopt;
}

// An option's value: an integer >= min, or positive seconds; an error naming the option otherwise.
int int_option(const std::string &option, const std::string &value, int min) {
    const std::optional<int> v = parse_whole<int>(value, [](const std::string &t, size_t *u) { return std::stoi(t, u); });
    if (!v || *v < min)
        throw std::invalid_argument(option + " expects an integer >= " + std::to_string(min) + ", got '" + value + "'");
    return *v;
}

double seconds_option(const std::string &option, const std::string &value) {
    const std::optional<double> v =
        parse_whole<double>(value, [](const std::string &t, size_t *u) { return std::stod(t, u); });
    if (!v || !(*v > 0))
        throw std::invalid_argument(option + " expects a positive number of seconds, got '" + value + "'");
    return *v;
}

// Calls on_option(name, next) for each option of argv; next() returns its value. The
// options run and trial share (--db, --threads, --rounds, --repeats) are stored in `o`
// without reaching on_option.
template <typename F>
void parse_options(int argc, char **argv, Options &o, F &&on_option) {
    for (int i = 0; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++i];
        };
        if (a == "--db") o.db = next();
        else if (a == "--threads") o.threads = int_option(a, next(), 1);
        else if (a == "--rounds") o.rounds = int_option(a, next(), 1);
        else if (a == "--repeats") o.repeats = int_option(a, next(), 1);
        else on_option(a, next);
    }
}

int cmd_run(int argc, char **argv) {
    Options o;
    parse_options(argc, argv, o, [&](const std::string &a, const auto &next) {
        if (a == "--workload") o.workloads.push_back(next());
        else if (a == "--suite") {
            for (const std::string &d : read_suite(next())) o.workloads.push_back(d);
        } else if (a == "--budget") o.budget = int_option(a, next(), 1);
        else if (a == "--seed") o.seed = static_cast<unsigned>(int_option(a, next(), 0));
        else if (a == "--resume") o.resume = true;
        else if (a == "--try") o.tries.push_back(next());
        else if (a == "--autoscheduler-timeout") o.autoscheduler_timeout = seconds_option(a, next());
        else if (a == "--autoschedulers") {
            std::stringstream in(next());
            std::string name;
            while (std::getline(in, name, ','))
                if (!name.empty()) o.autoschedulers.push_back(name);
        }
        else throw std::invalid_argument("unknown option " + a);
    });
    if (o.db.empty() || o.workloads.empty()) throw std::invalid_argument("run needs --db and at least one --workload or --suite");
    if (o.budget < 1 || o.threads < 1 || o.rounds < 1 || o.repeats < 1)
        throw std::invalid_argument("--budget, --threads, --rounds and --repeats must be positive");
    const Halide::Target target = Halide::get_jit_target_from_environment();
    // Every descriptor, and every --try against each workload's knobs, checked before
    // any work (and before the log is created).
    for (const std::string &d : o.workloads) {
        const std::vector<KnobSpec> space = Workload::parse(d).knob_space(target);
        for (const std::string &k : o.tries) tried_point(space, k);
    }
    setenv("HL_NUM_THREADS", std::to_string(o.threads).c_str(), 1);  // read at the JIT runtime's first use
    TrialDb db(o.db);
    const std::string machine = machine_description();
    if (!o.resume) {  // one read of the log: the workloads it already has on this machine
        std::set<std::string> logged;
        for (const Trial &t : db.all())
            if (t.target == target.to_string() && t.threads == o.threads && t.machine == machine) logged.insert(t.workload);
        for (const std::string &d : o.workloads) {
            const std::string wl = Workload::parse(d).descriptor();
            if (logged.count(wl))
                throw std::invalid_argument(o.db + " already has trials of " + wl +
                                            " on this machine: pass --resume to continue that search");
        }
    }
    // A workload whose default schedule cannot run is reported and skipped, not fatal.
    int failed = 0;
    for (const std::string &d : o.workloads) {
        std::string error;
        try {
            tune_workload(o, db, d, target, machine);
        } catch (const Halide::Error &e) {
            error = e.what();
        } catch (const DbError &) {
            throw;
        } catch (const std::exception &e) {
            error = e.what();
        }
        if (!error.empty()) {
            std::fprintf(stderr, "normgen-tune: %s skipped: %s\n", d.c_str(), error.c_str());
            failed++;
        }
    }
    return failed ? 1 : 0;
}

// `trial`: one trial measured and logged in this process (what isolated_trial runs).
int cmd_trial(int argc, char **argv) {
    Options o;
    std::string workload, knobs;
    bool have_schedule = false;
    parse_options(argc, argv, o, [&](const std::string &a, const auto &next) {
        if (a == "--workload") workload = next();
        else if (a == "--schedule") knobs = next(), have_schedule = true;
        else throw std::invalid_argument("unknown option " + a);
    });
    if (o.db.empty() || workload.empty() || !have_schedule)
        throw std::invalid_argument("trial needs --db, --workload and --schedule");
    setenv("HL_NUM_THREADS", std::to_string(o.threads).c_str(), 1);
    const Workload w = Workload::parse(workload);
    const Halide::Target target = Halide::get_jit_target_from_environment();
    JitWorkload jw(w, target);
    Instance def = jw.instantiate("");
    def.run();
    TrialDb db(o.db);
    Trial t = measure_trial(o, w, jw, def, knobs, target.to_string(), machine_description(), normgen_commit());
    db.add(t);
    return 0;
}

int cmd_time(int argc, char **argv) {
    if (argc < 1) throw std::invalid_argument("time needs a workload");
    Workload w = Workload::parse(argv[0]);
    int threads = 1, rounds = 7, repeats = 5, evict_mib = 0;
    std::vector<std::string> knobs;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = int_option(a, argv[++i], 1);
        else if (a == "--rounds" && i + 1 < argc) rounds = int_option(a, argv[++i], 1);
        else if (a == "--evict-mib" && i + 1 < argc) evict_mib = int_option(a, argv[++i], 0);
        else knobs.push_back(a);
    }
    if (knobs.empty()) knobs.push_back("");
    setenv("HL_NUM_THREADS", std::to_string(threads).c_str(), 1);
    JitWorkload jw(w, Halide::get_jit_target_from_environment());
    std::vector<Instance> inst;
    for (const std::string &k : knobs) inst.push_back(jw.instantiate(k));
    std::vector<Instance *> ptrs;
    for (Instance &i : inst) ptrs.push_back(&i);
    std::vector<double> t = time_interleaved(ptrs, rounds, repeats, 2, static_cast<size_t>(evict_mib) << 20);
    const double bytes = static_cast<double>(jw.bytes(inst[0]));
    std::printf("%s, %d thread(s), %.1f MB moved, %s\n", w.descriptor().c_str(), threads, bytes / 1e6,
                evict_mib ? ("caches evicted by " + std::to_string(evict_mib) + " MiB before each run").c_str()
                          : "data in cache");
    for (size_t i = 0; i < inst.size(); i++)
        std::printf("%-60s %8.3f ms  %6.1f GB/s  %.3fx of the first  (compile %.1fs)\n",
                    inst[i].knobs.empty() ? "(defaults)" : inst[i].knobs.c_str(), t[i] * 1e3, bytes / t[i] / 1e9,
                    t[i] / t[0], inst[i].compile_seconds);
    return 0;
}

// `gpucheck`: the GPU schedules (schedules/cuda/, chosen for any GPU target) run on
// another GPU API and compared with the CPU schedules' results on the same inputs. With
// --target host-opencl on an OpenCL CPU device (pocl) this checks, without a GPU, that
// the CUDA schedules compute what the CPU ones do: bounds, tails, shared memory,
// barriers, the two-phase reductions. Exit status 1 if any workload differs by more
// than --tolerance (relative to the output's magnitude), 2 if it fails to run.
int cmd_gpucheck(int argc, char **argv) {
    std::string target_str = "host-opencl", suite, knobs;
    std::vector<std::string> workloads;
    double tolerance = 1e-4;
    for (int i = 0; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++i];
        };
        if (a == "--target") target_str = next();
        else if (a == "--suite") suite = next();
        else if (a == "--workload") workloads.push_back(next());
        else if (a == "--tolerance") tolerance = std::stod(next());
        else if (a == "--schedule") knobs = next();
        else throw std::invalid_argument("unknown option " + a);
    }
    if (!suite.empty())
        for (const std::string &d : read_suite(suite)) workloads.push_back(d);
    if (workloads.empty()) throw std::invalid_argument("gpucheck needs --workload or --suite");
    const Halide::Target gpu_target(target_str);
    if (!gpu_target.has_gpu_feature()) throw std::invalid_argument("--target " + target_str + " names no GPU API");
    const Halide::Target cpu_target = Halide::get_host_target();
    int worst = 0;
    for (const std::string &d : workloads) {
        const Workload w = Workload::parse(d);
        try {
            JitWorkload cpu(w, cpu_target), gpu(w, gpu_target);
            Instance ref = cpu.instantiate(""), got = gpu.instantiate(knobs);
            ref.run();
            got.run();
            const double diff = JitWorkload::max_rel_diff(got, ref);
            const bool ok = diff <= tolerance;
            std::printf("%-56s %s  max relative difference %.2e%s\n", w.descriptor().c_str(), ok ? "ok  " : "DIFF", diff,
                        ok ? "" : ("; first: " + JitWorkload::first_difference(got, ref, tolerance)).c_str());
            if (!ok) worst = std::max(worst, 1);
        } catch (const Halide::Error &e) {
            std::printf("%-56s FAIL %s\n", w.descriptor().c_str(), e.what());
            worst = 2;
        } catch (const std::exception &e) {
            std::printf("%-56s FAIL %s\n", w.descriptor().c_str(), e.what());
            worst = 2;
        }
        std::fflush(stdout);
    }
    return worst;
}

int cmd_best(int argc, char **argv) {
    if (argc != 2 || std::string(argv[0]) != "--db") throw std::invalid_argument("usage: best --db FILE");
    TrialDb db(argv[1]);
    for (const Trial &t : db.best())
        std::printf("%s\t%s\t%d\t%s\t%.4f ms\t%.3fx of default\n", t.workload.c_str(), t.target.c_str(), t.threads,
                    t.schedule.empty() ? "(defaults)" : t.schedule.c_str(), t.median_ms, t.median_ms / t.default_ms);
    return 0;
}

int cmd_merge(int argc, char **argv) {
    if (argc < 3 || std::string(argv[0]) != "--db") throw std::invalid_argument("usage: merge --db OUT IN...");
    TrialDb out(argv[1]);
    for (int i = 2; i < argc; i++) {
        const int64_t added = out.merge_from(argv[i]);
        std::printf("%s: %lld new trial(s) from %s\n", argv[1], static_cast<long long>(added), argv[i]);
    }
    return 0;
}

// Per workload: the default schedule, the tuned winner and each autoscheduler, as
// times relative to the default measured alongside each (markdown).
int cmd_report(int argc, char **argv) {
    if (argc != 2 || std::string(argv[0]) != "--db") throw std::invalid_argument("usage: report --db FILE");
    TrialDb db(argv[1]);
    std::map<std::string, std::map<std::string, double>> ratio;  // row -> column -> best ratio
    std::map<std::string, double> default_ms;
    std::set<std::string> columns;
    std::set<std::string> attempted;  // "row|autoscheduler" with a trial of any status
    for (const Trial &t : db.all()) {
        if (t.schedule.rfind("autoscheduler:", 0) == 0)
            attempted.insert(t.workload + " | " + std::to_string(t.threads) + "|" + t.schedule.substr(14));
        if (t.status != "ok" || t.default_ms <= 0) continue;
        // The tuned column: confirmed winners (or the default), as export sees them.
        if (t.schedule.rfind("autoscheduler:", 0) != 0 && !t.schedule.empty() && !t.confirmed) continue;
        const std::string row = t.workload + " | " + std::to_string(t.threads);
        std::string col = "tuned";
        if (t.schedule.rfind("autoscheduler:", 0) == 0) col = t.schedule.substr(14);
        else if (t.schedule.empty()) default_ms[row] = t.default_ms;
        columns.insert(col);
        auto it = ratio[row].find(col);
        const double r = t.schedule.empty() ? 1.0 : t.median_ms / t.default_ms;  // the default vs itself: 1
        if (it == ratio[row].end() || r < it->second) ratio[row][col] = r;
    }
    columns.erase("tuned");
    std::printf("| workload | thr | default ms | tuned |");
    for (const std::string &c : columns) std::printf(" %s |", c.c_str());
    std::printf(" tuned vs best autoscheduler |\n|---|---|---|---|");
    for (size_t i = 0; i <= columns.size(); i++) std::printf("---|");
    std::printf("\n");
    for (const auto &[row, cols] : ratio) {
        const auto dm = default_ms.find(row);
        std::printf("| %s | %s | %s |", row.c_str(), dm == default_ms.end() ? "n/a" : std::to_string(dm->second).substr(0, 6).c_str(),
                    cols.count("tuned") ? (std::to_string(cols.at("tuned")).substr(0, 5) + "x").c_str() : "n/a");
        double best_as = 0;
        for (const std::string &c : columns) {
            if (cols.count(c)) {
                std::printf(" %.3fx |", cols.at(c));
                best_as = best_as == 0 ? cols.at(c) : std::min(best_as, cols.at(c));
            } else {
                std::printf(attempted.count(row + "|" + c) ? " failed |" : " not run |");
            }
        }
        if (best_as > 0 && cols.count("tuned")) std::printf(" %.2fx |\n", best_as / cols.at("tuned"));
        else std::printf(" n/a |\n");
    }
    std::printf("\nTimes relative to the default schedule timed interleaved with each (< 1: faster); the last "
                "column: the best autoscheduler's time / the tuned time. failed: the autoscheduler's trial did not "
                "compile or run (see `normgen-tune best`/the log's error column); not run: no trial.\n");
    return 0;
}

// A tuned line's ` cpu=<feature>`: the most specific x86 instruction-set feature of the
// target the trial ran on (the runtime dispatches the kernel only on CPUs that have it);
// "" for targets without one.
std::string cpu_key(const Halide::Target &t) {
    using F = Halide::Target::Feature;
    const std::pair<F, const char *> specific_first[] = {
        {F::AVX512_SapphireRapids, "avx512_sapphirerapids"}, {F::AVX512_Zen4, "avx512_zen4"},
        {F::AVX512_Cannonlake, "avx512_cannonlake"}, {F::AVX512_Skylake, "avx512_skylake"}, {F::AVX512, "avx512"},
        {F::AVX2, "avx2"}, {F::AVX, "avx"}, {F::SSE41, "sse41"}};
    if (t.arch != Halide::Target::X86) return "";
    for (const auto &[f, name] : specific_first)
        if (t.has_feature(f)) return std::string(" cpu=") + name;
    return "";
}

// The winners that beat the default schedule by more than `min_gain`, as a tuned table
// in the kernel-list grammar (one line per workload, its shape baked in as shape=).
int cmd_export(int argc, char **argv) {
    std::string db_path, out_path, target = Halide::get_jit_target_from_environment().to_string();
    std::string threads_arg = "1";
    std::set<int> threads;  // thread counts exported; each line says its own (threads=)
    double min_gain = 0.03;
    for (int i = 0; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        if (a == "--db") db_path = argv[++i];
        else if (a == "--out") out_path = argv[++i];
        else if (a == "--threads") threads_arg = argv[++i];
        else if (a == "--min-gain") min_gain = std::stod(argv[++i]);
        else if (a == "--target") target = argv[++i];
        else throw std::invalid_argument("unknown option " + a);
    }
    if (db_path.empty() || out_path.empty()) throw std::invalid_argument("usage: export --db FILE --out LIST");
    {
        std::stringstream in(threads_arg);
        std::string t;
        while (std::getline(in, t, ','))
            if (!t.empty()) threads.insert(int_option("--threads", t, 1));
        if (threads.empty() || *threads.begin() < 1)
            throw std::invalid_argument("--threads expects thread counts like 1 or 1,2, got '" + threads_arg + "'");
    }
    TrialDb db(db_path);
    // One line per kernel: workloads that build the same kernel (instance_norm and
    // group_norm share group_norm's kernels) keep the larger gain.
    std::map<std::string, std::pair<double, std::string>> lines;  // kernel -> (ratio, text)
    int kept_default = 0, merged = 0;
    for (const Trial &t : db.best()) {
        if (t.target != target || !threads.count(t.threads)) continue;
        const double ratio = t.median_ms / t.default_ms;
        const Workload w = Workload::parse(t.workload);
        const std::string knobs = canonical_knobs(w.knob_space(Halide::Target(t.target)), t.schedule);
        if (knobs.empty() || ratio > 1.0 - min_gain) {  // (a default-equivalent "winner" only timed noise)
            kept_default++;
            continue;
        }
        char note[256];
        std::snprintf(note, sizeof note, "# %s: %.4f ms, %.3fx of the default schedule (%s)\n", t.workload.c_str(),
                      t.median_ms, ratio, t.machine.c_str());
        const std::string where = " threads=" + std::to_string(t.threads) + cpu_key(Halide::Target(t.target));
        const std::string kernel = w.kernel_list_line("") + where;
        auto it = lines.find(kernel);
        if (it != lines.end()) merged++;
        if (it == lines.end() || ratio < it->second.first)
            lines[kernel] = {ratio, note + w.kernel_list_line(knobs) + where + "\n"};
    }
    std::string body;
    for (const auto &[kernel, line] : lines) body += line.second;
    const int rows = static_cast<int>(lines.size());
    kept_default += merged;
    std::ofstream out(out_path);
    if (!out) throw std::invalid_argument("cannot write " + out_path);
    out << "# normgen tuned kernels for " << target << ", tuned at " << threads_arg
        << " thread(s); a kernel is used only on the thread count of its line, on CPUs with its cpu= feature.\n"
        << "# GENERATED by normgen-tune export; do not edit. Regenerate with:\n"
        << "#   build/normgen-tune export --db " << db_path << " --out " << out_path << " --threads " << threads_arg
        << " --min-gain " << min_gain << "\n"
        << "# " << rows << " tuned kernel(s); " << kept_default
        << " workload(s) kept the default schedule (within the gain threshold).\n"
        << body;
    std::printf("%s: %d tuned kernel(s), %d workload(s) kept the default schedule\n", out_path.c_str(), rows,
                kept_default);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    const char *usage =
        "usage: normgen-tune run --db FILE (--workload D | --suite FILE)... [--budget N] [--threads T] [--seed S]\n"
        "                        [--rounds R] [--repeats K] [--resume] [--autoschedulers Adams2019,Mullapudi2016,Li2018]\n"
        "                        [--autoscheduler-timeout SECONDS (600)] [--try KNOBS]...\n"
        "       normgen-tune time <workload> [--threads T] [--rounds R] [--evict-mib M] [knobs...]\n"
        "       normgen-tune gpucheck (--workload D | --suite FILE)... [--target host-opencl] [--tolerance E]\n"
        "                        [--schedule KNOBS]\n"
        "       normgen-tune best --db FILE\n"
        "       normgen-tune merge --db OUT IN...\n"
        "       normgen-tune export --db FILE --out LIST [--threads T] [--min-gain G] [--target T]\n"
        "       normgen-tune report --db FILE\n"
        "a workload: <op>:<dir>:<dtype>:<shape>[:<layout>], e.g. layer_norm:fwd:f32:8192x1024\n";
    if (argc < 2) {
        std::fputs(usage, stderr);
        return 2;
    }
    const std::string cmd = argv[1];
    try {
        if (cmd == "run") return cmd_run(argc - 2, argv + 2);
        if (cmd == "time") return cmd_time(argc - 2, argv + 2);
        if (cmd == "gpucheck") return cmd_gpucheck(argc - 2, argv + 2);
        if (cmd == "trial") return cmd_trial(argc - 2, argv + 2);
        if (cmd == "best") return cmd_best(argc - 2, argv + 2);
        if (cmd == "merge") return cmd_merge(argc - 2, argv + 2);
        if (cmd == "export") return cmd_export(argc - 2, argv + 2);
        if (cmd == "report") return cmd_report(argc - 2, argv + 2);
        std::fputs(usage, stderr);
        return 2;
    } catch (const DbError &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    } catch (const std::invalid_argument &e) {
        std::fprintf(stderr, "normgen-tune: %s\n", e.what());
        return 2;
    } catch (const Halide::Error &e) {
        std::fprintf(stderr, "normgen-tune: %s\n", e.what());
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "normgen-tune: %s\n", e.what());
        return 1;
    }
}
