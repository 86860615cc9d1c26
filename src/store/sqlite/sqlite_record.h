// One description per record type: each column's name (and SELECT expression when it is not
// the plain column), how its member is bound and how it is read back. The SELECT lists, the
// INSERT column lists with their placeholders, the UPDATE assignments, the binds and the reads
// of the SQLite adapters all come from it, so they cannot drift apart; before, each adapter kept a
// column-list string and a reader with numeric indices that had to agree by hand.
//
//   const Columns<Delivery> kDelivery{col<&Delivery::id>("id"), col<&Delivery::url>("url"), ...};
//   db.query(("SELECT " + kDelivery.select_list() + " FROM job_deliveries").c_str());
//   Delivery d = kDelivery.read(q);
//
// The generated SQL must outlive its cached statement: keep it in a function-local static.
#pragma once

#include "control/store.h"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "store/sqlite/sqlite_db.h"

namespace gantry::control {

// Every Columns::bind is followed by run() in the same expression, on a record the caller holds.
inline void bind_value(Query &q, const std::string &v) { q.text_ref(v); }
inline void bind_value(Query &q, int64_t v) { q.i64(v); }
inline void bind_value(Query &q, int v) { q.i64(v); }
inline void bind_value(Query &q, double v) { q.f64(v); }
inline void bind_value(Query &q, bool v) { q.i64(v ? 1 : 0); }
inline void read_value(const Query &q, int i, std::string &v) { v = q.col_text(i); }
inline void read_value(const Query &q, int i, int64_t &v) { v = q.col_i64(i); }
inline void read_value(const Query &q, int i, int &v) { v = static_cast<int>(q.col_i64(i)); }
inline void read_value(const Query &q, int i, double &v) { v = q.col_f64(i); }
inline void read_value(const Query &q, int i, bool &v) { v = q.col_i64(i) != 0; }

// Lists stored as one text column: "a,b,c" with `sep` between the items (empty = none).

template <typename T> class Columns {
public:
  struct Column {
    const char *name;
    void (*bind)(Query &, const T &);
    void (*read)(const Query &, int, T &);
    const char *select = nullptr; // the SELECT expression, when not the column itself
  };

  Columns(std::initializer_list<Column> columns) : columns_(columns) {}

  size_t size() const { return columns_.size(); }

  // "a, b, c" from column `from` on: an INSERT's column list.
  std::string names(size_t from = 0) const {
    return join(from, [](const Column &c) { return std::string(c.name); });
  }
  // The SELECT list; `blank` names a column read as '' instead (a listing that must not load
  // a large value, audit M3).
  std::string select_list(std::string_view blank = {}) const {
    return join(0, [&](const Column &c) {
      if (!blank.empty() && blank == c.name)
        return std::string("''");
      return std::string(c.select ? c.select : c.name);
    });
  }
  // "?, ?, ?" for columns from `from` on.
  std::string placeholders(size_t from = 0) const {
    return join(from, [](const Column &) { return std::string("?"); });
  }
  // "b = ?, c = ?" for columns from `from` on; `column` is assigned `expression` instead of "?"
  // (which must still take exactly one bound value).
  std::string assignments(size_t from, std::string_view column = {},
                          std::string_view expression = {}) const {
    return join(from, [&](const Column &c) {
      return std::string(c.name) + " = " +
             (column == c.name ? std::string(expression) : std::string("?"));
    });
  }

  // Binds the columns from `from` on, in order.
  Query &bind(Query &q, const T &record, size_t from = 0) const {
    for (size_t i = from; i < columns_.size(); ++i)
      columns_[i].bind(q, record);
    return q;
  }
  // Reads a row whose first `size()` result columns (from `first`) are select_list()'s.
  T read(const Query &q, int first = 0) const {
    T record;
    for (size_t i = 0; i < columns_.size(); ++i)
      columns_[i].read(q, first + static_cast<int>(i), record);
    return record;
  }

private:
  template <typename F> std::string join(size_t from, F text) const {
    std::string out;
    for (size_t i = from; i < columns_.size(); ++i)
      out += (out.empty() ? "" : ", ") + text(columns_[i]);
    return out;
  }
  std::vector<Column> columns_;
};

template <typename> struct MemberOf;
template <typename C, typename V> struct MemberOf<V C::*> { using Class = C; };

// A column that maps straight to a member: col<&Batch::total>("total").
template <auto Member>
typename Columns<typename MemberOf<decltype(Member)>::Class>::Column col(const char *name) {
  using C = typename MemberOf<decltype(Member)>::Class;
  return {name, [](Query &q, const C &r) { bind_value(q, r.*Member); },
          [](const Query &q, int i, C &r) { read_value(q, i, r.*Member); }};
}

} // namespace gantry::control
