#include "store/postgres/pg_db.h"

#include <libpq-fe.h>

#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <cstdio>
#include <cstdlib>

namespace gantry::store {
namespace {

constexpr auto kMaxBackoff = std::chrono::milliseconds(2000);
constexpr auto kFirstBackoff = std::chrono::milliseconds(50);

Error io_error(const PgOptions &o, const std::string &what) {
  std::string msg = what;
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
    msg.pop_back();
  return Error{ErrorCode::kIo, "PostgreSQL at " + redact_pg_url(o.url) + " is unreachable: " + msg,
               ""};
}

std::string trimmed(const char *s) {
  std::string m = s ? s : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' '))
    m.pop_back();
  return m;
}

} // namespace

std::string redact_pg_url(std::string_view url) {
  auto u = boost::urls::parse_uri(url);
  if (!u)
    return "(a PostgreSQL URL)";
  boost::urls::url copy(*u);
  if (copy.has_password())
    copy.set_password("***");
  return std::string(copy.buffer());
}

PgResult::PgResult(pg_result *r) : r_(r) {}
PgResult::PgResult(PgResult &&o) noexcept : r_(o.r_) { o.r_ = nullptr; }
PgResult &PgResult::operator=(PgResult &&o) noexcept {
  if (this != &o) {
    if (r_)
      PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}
PgResult::~PgResult() {
  if (r_)
    PQclear(r_);
}
int PgResult::rows() const { return r_ ? PQntuples(r_) : 0; }
int64_t PgResult::affected() const {
  if (!r_)
    return 0;
  const char *n = PQcmdTuples(r_);
  return n && *n ? std::atoll(n) : 0;
}
std::string PgResult::text(int row, int col) const {
  return std::string(PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col)));
}
int64_t PgResult::i64(int row, int col) const { return std::atoll(PQgetvalue(r_, row, col)); }
double PgResult::f64(int row, int col) const {
  return std::strtod(PQgetvalue(r_, row, col), nullptr);
}
bool PgResult::is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }

PgParams &PgParams::f64(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  values_.emplace_back(buf);
  return *this;
}

PgConn::~PgConn() {
  if (!c_)
    return;
  if (in_tx_ && !broken_) {
    PGresult *r = PQexec(c_, "ROLLBACK");
    broken_ = PQresultStatus(r) != PGRES_COMMAND_OK;
    PQclear(r);
  }
  pool_->give_back(c_, broken_ || PQstatus(c_) != CONNECTION_OK);
}

Result<PgResult> PgConn::exec(const std::string &sql, const PgParams &params, bool binary_result) {
  const auto &v = params.values();
  std::vector<const char *> ptrs;
  std::vector<int> lengths, formats(v.size(), 0);
  ptrs.reserve(v.size());
  lengths.reserve(v.size());
  for (const auto &s : v) {
    ptrs.push_back(s.c_str());
    lengths.push_back(static_cast<int>(s.size()));
  }
  for (size_t i = 0; i < params.formats().size(); ++i)
    formats[i] = params.formats()[i];
  // Without parameters PQexec, which also runs several statements (a migration) in one call.
  PGresult *raw =
      v.empty() && !binary_result
          ? PQexec(c_, sql.c_str())
          : PQexecParams(c_, sql.c_str(), static_cast<int>(v.size()), nullptr, ptrs.data(),
                         lengths.data(), formats.data(), binary_result ? 1 : 0);
  return check(raw);
}

Result<PgResult> PgConn::exec_prepared(const char *name, const char *sql, const PgParams &params) {
  if (prepared_ && prepared_->count(name) == 0) {
    GANTRY_TRY(check(PQprepare(c_, name, sql, 0, nullptr)));
    prepared_->insert(name);
  }
  const auto &v = params.values();
  std::vector<const char *> ptrs;
  std::vector<int> lengths, formats(v.size(), 0);
  ptrs.reserve(v.size());
  lengths.reserve(v.size());
  for (const auto &s : v) {
    ptrs.push_back(s.c_str());
    lengths.push_back(static_cast<int>(s.size()));
  }
  for (size_t i = 0; i < params.formats().size(); ++i)
    formats[i] = params.formats()[i];
  return check(PQexecPrepared(c_, name, static_cast<int>(v.size()), ptrs.data(), lengths.data(),
                              formats.data(), 0));
}

Result<PgResult> PgConn::check(pg_result *raw) {
  PgResult res(raw);
  const auto status = raw ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
    return res;
  if (PQstatus(c_) != CONNECTION_OK || !raw) {
    broken_ = true;
    return Err(io_error(pool_->options(), PQerrorMessage(c_)));
  }
  const char *state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  const std::string code = state ? state : "";
  const std::string msg = "PostgreSQL: " + trimmed(PQresultErrorMessage(raw));
  if (code == "23505")
    return Err(ErrorCode::kConflict, msg);
  // Class 08 (connection exception) and 57P (operator intervention: shutdown) are outages.
  if (code.rfind("08", 0) == 0 || code.rfind("57P", 0) == 0) {
    broken_ = true;
    return Err(ErrorCode::kIo, msg);
  }
  return Err(ErrorCode::kInternal, msg);
}

Status PgConn::begin() {
  GANTRY_TRY(exec("BEGIN"));
  in_tx_ = true;
  return Ok();
}

Status PgConn::commit() {
  in_tx_ = false;
  GANTRY_TRY(exec("COMMIT"));
  return Ok();
}

Result<std::shared_ptr<PgPool>> PgPool::connect(PgOptions options, const Clock &clock) {
  std::shared_ptr<PgPool> p(new PgPool(std::move(options), clock));
  GANTRY_ASSIGN_OR_RETURN(pg_conn * first, p->open_connection());
  p->open_ = 1;
  p->prepared_[first] = std::make_unique<std::unordered_set<std::string>>();
  p->give_back(first, false);
  return p;
}

PgPool::~PgPool() {
  for (pg_conn *c : idle_)
    PQfinish(c);
}

Result<pg_conn *> PgPool::open_connection() {
  // libpq takes the URL as its conninfo; the timeouts ride along as keywords.
  const char *keys[] = {"dbname", "connect_timeout", "options", "application_name", nullptr};
  const std::string timeout =
      std::to_string(std::max<int64_t>(1, options_.connect_timeout.count() / 1000));
  const std::string opts =
      "-c statement_timeout=" + std::to_string(options_.statement_timeout.count());
  const char *vals[] = {options_.url.c_str(), timeout.c_str(), opts.c_str(), "gantry", nullptr};
  pg_conn *c = PQconnectdbParams(keys, vals, 1);
  if (!c)
    return Err(io_error(options_, "out of memory"));
  if (PQstatus(c) != CONNECTION_OK) {
    std::string why = trimmed(PQerrorMessage(c));
    PQfinish(c);
    // Authentication and missing databases are configuration errors, not outages.
    const bool config = why.find("password") != std::string::npos ||
                        why.find("does not exist") != std::string::npos ||
                        why.find("authentication") != std::string::npos;
    if (config)
      return Err(ErrorCode::kInvalidArgument, "PostgreSQL at " + redact_pg_url(options_.url) +
                                                  " refused the connection: " + why);
    return Err(io_error(options_, why));
  }
  // Server notices ("relation already exists, skipping") are not errors; keep them off stderr.
  PQsetNoticeProcessor(
      c, [](void *, const char *) {}, nullptr);
  return c;
}

Result<pg_conn *> PgPool::open_dedicated() { return open_connection(); }

Result<PgConn> PgPool::acquire() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    if (!idle_.empty()) {
      pg_conn *c = idle_.back();
      idle_.pop_back();
      return PgConn(this, c, prepared_[c].get());
    }
    if (open_ < options_.pool_size)
      break;
    if (!cv_.wait_for(lk, options_.statement_timeout, [&] { return !idle_.empty(); }))
      return Err(io_error(options_, "every pooled connection stayed busy"));
  }
  if (backoff_.count() > 0 && clock_.now() < retry_at_)
    return Err(io_error(options_, "reconnecting (back-off after a failed attempt)"));
  ++open_;
  lk.unlock();
  auto c = open_connection();
  lk.lock();
  if (!c) {
    --open_;
    backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
    retry_at_ = clock_.now() + backoff_;
    return Err(c.take_error());
  }
  backoff_ = std::chrono::milliseconds(0);
  auto &names = prepared_[*c];
  names = std::make_unique<std::unordered_set<std::string>>();
  return PgConn(this, *c, names.get());
}

void PgPool::give_back(pg_conn *c, bool broken) {
  std::lock_guard<std::mutex> lk(mu_);
  if (broken) {
    prepared_.erase(c);
    PQfinish(c);
    --open_;
  } else {
    idle_.push_back(c);
  }
  cv_.notify_one();
}

Result<PgResult> PgPool::exec(const std::string &sql, const PgParams &params, bool binary_result) {
  GANTRY_ASSIGN_OR_RETURN(PgConn c, acquire());
  return c.exec(sql, params, binary_result);
}

Status PgPool::transaction(const std::function<Status(PgConn &)> &work) {
  GANTRY_ASSIGN_OR_RETURN(PgConn c, acquire());
  GANTRY_TRY(c.begin());
  GANTRY_TRY(work(c)); // ~PgConn rolls back
  return c.commit();
}

} // namespace gantry::store
