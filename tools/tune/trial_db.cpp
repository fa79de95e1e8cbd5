#include "trial_db.h"

#include <ctime>

namespace normgen::tune {

namespace {

const char *kSchema = R"sql(
CREATE TABLE IF NOT EXISTS trials (
    id             INTEGER PRIMARY KEY,
    workload       TEXT NOT NULL,   -- <op>:<dir>:<dtype>:<shape>:<layout>
    target         TEXT NOT NULL,   -- Halide target string
    threads        INTEGER NOT NULL,
    schedule       TEXT NOT NULL,   -- knob string; '' = the family's defaults
    status         TEXT NOT NULL CHECK (status IN ('ok', 'compile_error', 'mismatch', 'run_error')),
    median_ms      REAL,
    default_ms     REAL,            -- the default schedule, timed interleaved with this one
    max_rel_diff   REAL,            -- vs the default schedule's outputs
    compile_s      REAL,            -- JIT compile time
    confirmed      INTEGER NOT NULL DEFAULT 0,  -- 1: times re-measured as the search's winner
    error          TEXT,
    machine        TEXT NOT NULL,
    halide_version TEXT NOT NULL,
    normgen_commit TEXT NOT NULL,
    created        TEXT NOT NULL,
    UNIQUE (workload, target, threads, schedule, machine)
);
)sql";

const char *kColumns =
    "workload, target, threads, schedule, status, median_ms, default_ms, max_rel_diff, compile_s, error, machine, "
    "halide_version, normgen_commit, confirmed";

std::string now_utc() {
    char buf[32];
    std::time_t t = std::time(nullptr);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

std::string text(sqlite3_stmt *st, int i) {
    const unsigned char *p = sqlite3_column_text(st, i);
    return p ? reinterpret_cast<const char *>(p) : "";
}

}  // namespace

TrialDb::TrialDb(const std::string &path) : path_(path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
        fail("cannot open");
    sqlite3_busy_timeout(db_, 30000);  // other tuning processes writing the same file
    // A corrupt or non-SQLite file fails here (SQLITE_NOTADB / SQLITE_CORRUPT).
    int app = 0, version = 0;
    sqlite3_stmt *st = nullptr;
    if (sqlite3_prepare_v2(db_, "PRAGMA application_id", -1, &st, nullptr) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        fail("is not a readable SQLite database");
    }
    app = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &st, nullptr) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        fail("is not a readable SQLite database");
    }
    version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    int tables = 0;
    if (sqlite3_prepare_v2(db_, "SELECT count(*) FROM sqlite_master", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        tables = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (app == 0 && tables == 0) {  // a new (empty) database: ours from now on
        exec("PRAGMA journal_mode=WAL");
        exec("BEGIN IMMEDIATE");
        exec(kSchema);
        exec("PRAGMA application_id=" + std::to_string(kApplicationId));
        exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
        exec("COMMIT");
        return;
    }
    if (app != kApplicationId)
        throw DbError("normgen-tune: " + path + " is an SQLite database of another application (application_id " +
                      std::to_string(app) + "), not a normgen trial log");
    if (version != kSchemaVersion)
        throw DbError("normgen-tune: " + path + " has trial-log schema version " + std::to_string(version) +
                      "; this normgen-tune reads version " + std::to_string(kSchemaVersion));
    if (sqlite3_prepare_v2(db_, "PRAGMA quick_check", -1, &st, nullptr) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW ||
        text(st, 0) != "ok") {
        sqlite3_finalize(st);
        fail("failed SQLite's integrity check");
    }
    sqlite3_finalize(st);
}

TrialDb::~TrialDb() { sqlite3_close(db_); }

void TrialDb::fail(const std::string &what) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    throw DbError("normgen-tune: " + path_ + " " + what + " (" + msg + ")");
}

void TrialDb::exec(const std::string &sql) {
    char *err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string e = err ? err : "";
        sqlite3_free(err);
        throw DbError("normgen-tune: " + path_ + ": " + e + " (in: " + sql.substr(0, 60) + ")");
    }
}

void TrialDb::add(const Trial &t) {
    sqlite3_stmt *st = nullptr;
    const std::string sql = std::string("INSERT OR IGNORE INTO trials (") + kColumns +
                            ", created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) fail("cannot prepare an insert");
    const std::string created = now_utc();
    sqlite3_bind_text(st, 1, t.workload.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, t.target.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, t.threads);
    sqlite3_bind_text(st, 4, t.schedule.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, t.status.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 6, t.median_ms);
    sqlite3_bind_double(st, 7, t.default_ms);
    sqlite3_bind_double(st, 8, t.max_rel_diff);
    sqlite3_bind_double(st, 9, t.compile_s);
    sqlite3_bind_text(st, 10, t.error.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 11, t.machine.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 12, t.halide_version.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 13, t.normgen_commit.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 14, t.confirmed ? 1 : 0);
    sqlite3_bind_text(st, 15, created.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(st);  // autocommit: one transaction per trial
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) fail("cannot record a trial");
}

void TrialDb::confirm(const Trial &t, double median_ms, double default_ms) {
    sqlite3_stmt *st = nullptr;
    const char *sql = "UPDATE trials SET median_ms = ?, default_ms = ?, confirmed = 1 WHERE workload = ? AND target = ? "
                      "AND threads = ? AND schedule = ? AND machine = ?";
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) fail("cannot prepare an update");
    sqlite3_bind_double(st, 1, median_ms);
    sqlite3_bind_double(st, 2, default_ms);
    sqlite3_bind_text(st, 3, t.workload.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, t.target.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 5, t.threads);
    sqlite3_bind_text(st, 6, t.schedule.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, t.machine.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) fail("cannot confirm a trial");
}

std::vector<Trial> TrialDb::query(const std::string &sql, const std::vector<std::string> &binds) {
    sqlite3_stmt *st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) fail("cannot prepare a query");
    for (size_t i = 0; i < binds.size(); i++) sqlite3_bind_text(st, static_cast<int>(i + 1), binds[i].c_str(), -1, SQLITE_TRANSIENT);
    std::vector<Trial> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        Trial t;
        t.workload = text(st, 0);
        t.target = text(st, 1);
        t.threads = sqlite3_column_int(st, 2);
        t.schedule = text(st, 3);
        t.status = text(st, 4);
        t.median_ms = sqlite3_column_double(st, 5);
        t.default_ms = sqlite3_column_double(st, 6);
        t.max_rel_diff = sqlite3_column_double(st, 7);
        t.compile_s = sqlite3_column_double(st, 8);
        t.error = text(st, 9);
        t.machine = text(st, 10);
        t.halide_version = text(st, 11);
        t.normgen_commit = text(st, 12);
        t.confirmed = sqlite3_column_int(st, 13) != 0;
        out.push_back(t);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) fail("cannot read trials");
    return out;
}

std::optional<Trial> TrialDb::find(const std::string &workload, const std::string &target, int threads,
                                   const std::string &schedule, const std::string &machine) {
    std::vector<Trial> v = query(std::string("SELECT ") + kColumns +
                                     " FROM trials WHERE workload = ? AND target = ? AND threads = ? AND schedule = ? "
                                     "AND machine = ?",
                                 {workload, target, std::to_string(threads), schedule, machine});
    if (v.empty()) return std::nullopt;
    return v[0];
}

std::vector<Trial> TrialDb::best() {
    // Per (workload, target, threads): the lowest time relative to the default schedule
    // measured alongside it.
    return query(std::string("SELECT ") + kColumns +
                 " FROM (SELECT *, row_number() OVER (PARTITION BY workload, target, threads "
                 "ORDER BY median_ms / default_ms, median_ms) AS rk FROM trials WHERE status = 'ok' AND default_ms > 0 "
                 "AND schedule NOT LIKE 'autoscheduler:%' AND (confirmed = 1 OR schedule = '')) "
                 "WHERE rk = 1 ORDER BY workload, target, threads");
}

std::vector<Trial> TrialDb::all() { return query(std::string("SELECT ") + kColumns + " FROM trials ORDER BY id"); }

int64_t TrialDb::count() {
    sqlite3_stmt *st = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT count(*) FROM trials", -1, &st, nullptr) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        fail("cannot count trials");
    }
    const int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

int64_t TrialDb::merge_from(const std::string &other) {
    { TrialDb check(other); }  // the same checks (ours, schema version, integrity) as opening it
    const int64_t before = count();
    sqlite3_stmt *st = nullptr;
    if (sqlite3_prepare_v2(db_, "ATTACH DATABASE ? AS other", -1, &st, nullptr) != SQLITE_OK) fail("cannot attach");
    sqlite3_bind_text(st, 1, other.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) fail("cannot attach " + other);
    try {
        exec("BEGIN IMMEDIATE");
        exec(std::string("INSERT OR IGNORE INTO trials (") + kColumns + ", created) SELECT " + kColumns +
             ", created FROM other.trials ORDER BY id");
        exec("COMMIT");
    } catch (...) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        sqlite3_exec(db_, "DETACH DATABASE other", nullptr, nullptr, nullptr);
        throw;
    }
    exec("DETACH DATABASE other");
    return count() - before;
}

}  // namespace normgen::tune
