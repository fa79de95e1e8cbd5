// The tuner's trial log: an SQLite database (schema versioned by PRAGMA user_version,
// marked ours by PRAGMA application_id). Every trial is one committed row, so an
// interrupted run loses no finished trial; WAL mode and a busy timeout let several
// tuning processes share one file; `merge` combines databases from several machines.
#pragma once

#include <sqlite3.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace normgen::tune {

// A database that cannot be used (corrupt, foreign, newer schema, I/O): the message
// names the file and the reason.
struct DbError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Trial {
    std::string workload, target, schedule;  // schedule: a knob string ("" = the defaults)
    int threads = 1;
    std::string status;     // ok | compile_error | mismatch | run_error
    double median_ms = 0;   // this schedule's median time
    double default_ms = 0;  // the default schedule's, interleaved with it in the same run
    double max_rel_diff = 0;
    double compile_s = 0;   // JIT compile time of this schedule
    bool confirmed = false; // re-timed with more rounds as the search's winner
    std::string error;
    std::string machine, halide_version, normgen_commit;
};

class TrialDb {
public:
    static constexpr int kSchemaVersion = 2;
    static constexpr int kApplicationId = 0x4e474e54;  // "NGNT"

    explicit TrialDb(const std::string &path);  // creates the file and schema if absent
    ~TrialDb();
    TrialDb(const TrialDb &) = delete;
    TrialDb &operator=(const TrialDb &) = delete;

    // Insert (or, for the same workload/target/threads/schedule/machine, keep the
    // existing) trial, in its own transaction.
    void add(const Trial &t);
    // Replace a trial's times with a longer confirmation measurement (the search's
    // winner, re-timed against the default to undo the selection's luck).
    void confirm(const Trial &t, double median_ms, double default_ms);
    // A finished trial of this schedule on this machine, if any.
    std::optional<Trial> find(const std::string &workload, const std::string &target, int threads,
                              const std::string &schedule, const std::string &machine);
    // The fastest confirmed knob-string trial (or the default schedule) per (workload,
    // target, threads), by median_ms / default_ms (robust to machine drift between
    // runs); autoscheduler baselines and unconfirmed lucky draws are not candidates.
    std::vector<Trial> best();
    std::vector<Trial> all();
    int64_t count();
    // Copy every trial of `other` that this database lacks.
    int64_t merge_from(const std::string &other);

    const std::string &path() const { return path_; }

private:
    void exec(const std::string &sql);
    std::vector<Trial> query(const std::string &sql, const std::vector<std::string> &binds = {});
    [[noreturn]] void fail(const std::string &what);
    std::string path_;
    sqlite3 *db_ = nullptr;
};

}  // namespace normgen::tune
